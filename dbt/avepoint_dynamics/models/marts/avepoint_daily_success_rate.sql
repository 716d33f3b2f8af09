{# Per UTC day, tenant, organization and job type: how many jobs finished, failed, ... and the success
   rate, finished / completed (the job_outcomes_daily view's rule: finished with exception is no success). #}
select
    start_day as day,
    tenant,
    organization_id,
    max(organization_name) as organization_name,
    type_code,
    max(type_name) as type_name,
    count(*) as total,
    sum(case when status_code = 3 then 1 else 0 end) as finished,
    sum(case when status_code = 4 then 1 else 0 end) as failed,
    sum(case when status_code = 7 then 1 else 0 end) as finished_with_exception,
    sum(case when status_code = 2 then 1 else 0 end) as in_progress,
    sum(case when is_completed then 1 else 0 end) as completed,
    cast(sum(case when status_code = 3 then 1 else 0 end) as {{ dbt.type_float() }})
        / nullif(sum(case when is_completed then 1 else 0 end), 0) as success_rate
from {{ ref('stg_avepoint_dynamics__jobs') }}
group by start_day, tenant, organization_id, type_code
