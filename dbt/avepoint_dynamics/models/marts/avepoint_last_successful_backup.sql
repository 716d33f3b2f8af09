{# Per tenant and organization: the newest successful backup (type 1, finished or finished with
   exception) and whether it is stale, by the rule of `avepoint-dynamics alert` and the backup_freshness
   view. Every organization with any job is listed: one that never backed up is stale with null times. #}
with per_organization as (
    select
        tenant,
        organization_id,
        max(organization_name) as organization_name,
        max(case when is_successful_backup then finish_time end) as last_successful_backup_at,
        max(case when type_code = 1 and status_code = 3 then finish_time end) as last_clean_backup_at,
        max(case when type_code = 1 then start_time end) as last_backup_started_at
    from {{ ref('stg_avepoint_dynamics__jobs') }}
    group by tenant, organization_id
)

select
    coalesce(tenant, '') || '/' || organization_id as organization_key,
    tenant,
    organization_id,
    organization_name,
    last_successful_backup_at,
    last_clean_backup_at,
    last_backup_started_at,
    {{ avepoint_dynamics_hours_since('last_successful_backup_at') }} as hours_since_success,
    cast({{ var('avepoint_dynamics_stale_after_hours', 26) }} as {{ dbt.type_float() }}) as stale_after_hours,
    coalesce(
        {{ avepoint_dynamics_hours_since('last_successful_backup_at') }}
            > {{ var('avepoint_dynamics_stale_after_hours', 26) }},
        true
    ) as is_stale
from per_organization
