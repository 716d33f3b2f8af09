"""The load: a pipeline for a target, the shared dataset, the writer lease and lock, tenants and their runs, the run log."""
