{# One row per failed (4) or finished-with-exception (7) job, with what went wrong how often. #}
select
    job_key,
    tenant,
    job_id,
    start_day as day,
    start_time,
    finish_time,
    duration_hours,
    organization_id,
    organization_name,
    module,
    type_code,
    type_name,
    status_code,
    status_name,
    failed_entity,
    warning_entity,
    skipped_entity,
    total_entity,
    failed_record,
    warning_record,
    skipped_record,
    total_record
from {{ ref('stg_avepoint_dynamics__jobs') }}
where status_code in (4, 7)
