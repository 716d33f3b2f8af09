{# Does the jobs table have a tenant column (several tenants loaded into one dataset)? Read from the
   warehouse when models run; while dbt only parses, no table is read and the answer is false. #}
{% macro avepoint_dynamics_has_tenant() %}
  {% if not execute %}
    {{ return(false) }}
  {% endif %}
  {% set relation = adapter.get_relation(
      database=source('avepoint_dynamics', 'jobs').database,
      schema=source('avepoint_dynamics', 'jobs').schema,
      identifier=source('avepoint_dynamics', 'jobs').identifier) %}
  {% if relation is none %}
    {{ return(false) }}
  {% endif %}
  {% set names = adapter.get_columns_in_relation(relation) | map(attribute='name') | map('lower') | list %}
  {{ return('tenant' in names) }}
{% endmacro %}

{# A UTC calendar day of a timestamp with time zone, whatever the session's time zone. #}
{% macro avepoint_dynamics_utc_day(column) -%}
  cast(({{ column }}) at time zone 'UTC' as date)
{%- endmacro %}

{# Hours from a timestamp with time zone to now. #}
{% macro avepoint_dynamics_hours_since(column) -%}
  cast(extract(epoch from now()) - extract(epoch from {{ column }}) as double precision) / 3600
{%- endmacro %}
