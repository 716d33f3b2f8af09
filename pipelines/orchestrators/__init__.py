"""Dagster definitions and the Airflow DAG around the load (nothing from the command line)."""
