{# Per UTC day, tenant, organization and job type, over completed jobs: how long they took and how much
   they wrote, for trend charts ("is this backup getting slower, or bigger?"). #}
select
    start_day as day,
    tenant,
    organization_id,
    max(organization_name) as organization_name,
    type_code,
    max(type_name) as type_name,
    count(*) as completed_jobs,
    avg(duration_hours) as avg_duration_hours,
    max(duration_hours) as max_duration_hours,
    sum(duration_hours) as total_duration_hours,
    sum(backup_size_bytes) as total_backup_size_bytes,
    avg(backup_size_bytes) as avg_backup_size_bytes,
    max(backup_size_bytes) as max_backup_size_bytes
from {{ ref('stg_avepoint_dynamics__jobs') }}
where is_completed
group by start_day, tenant, organization_id, type_code
