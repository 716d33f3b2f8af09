{# One row per tenant and job, typed and labelled. Tenants: the var avepoint_dynamics_tenants narrows a
   dataset several tenants share; without a tenant column, tenant is null and job_key is the job id. #}
{%- set has_tenant = avepoint_dynamics_has_tenant() -%}
{%- set tenants = var('avepoint_dynamics_tenants', []) -%}

with jobs as (
    select * from {{ source('avepoint_dynamics', 'jobs') }}
    {%- if has_tenant and tenants %}
    where tenant in ({% for name in tenants %}'{{ name | replace("'", "''") }}'{{ ", " if not loop.last }}{% endfor %})
    {%- endif %}
)

select
    {% if has_tenant -%}
    tenant,
    tenant || '/' || job_id as job_key,
    {%- else -%}
    cast(null as {{ dbt.type_string() }}) as tenant,
    job_id as job_key,
    {%- endif %}
    job_id,
    organization_id,
    organization_name,
    module,
    cast(object_type as {{ dbt.type_int() }}) as object_type,
    cast(type as {{ dbt.type_int() }}) as type_code,
    type_name,
    cast(status as {{ dbt.type_int() }}) as status_code,
    status_name,
    coalesce(status in (3, 4, 7), false) as is_completed,
    -- A backup succeeded when it wrote a restore point: finished, or finished with exception (the rule
    -- of the backup_freshness view and of avepoint-dynamics alert).
    coalesce(type = 1 and status in (3, 7), false) as is_successful_backup,
    start_time,
    finish_time,
    {{ avepoint_dynamics_utc_day('start_time') }} as start_day,
    cast(duration_hours as {{ dbt.type_float() }}) as duration_hours,
    cast(backup_size as {{ dbt.type_bigint() }}) as backup_size_bytes,
    successful_entity,
    failed_entity,
    skipped_entity,
    warning_entity,
    total_entity,
    successful_record,
    failed_record,
    skipped_record,
    warning_record,
    total_record
from jobs
