"""Benchmark of the AvePoint jobs connector against dlt's ``rest_api``, a naive loop and the limits.

Run (from the repository root)::

    scripts/bench            # full: {0, 50} ms x {100,000, 1,000,000} jobs, page size 100
    scripts/bench --quick    # smoke: 20,000 jobs, same latencies

``scripts/bench`` runs ``python -m bench`` with ``.venv-bench``, the base install a user has (no dev
extras: the dev venv's dagster brings sqlalchemy, which dlt imports when it finds it, +11 MB per process).

For every scenario (jobs x latency) a fresh simulator runs as a separate process (``avepoint-simulator``),
and every contender runs in a subprocess of its own, into a fresh DuckDB file and dlt ``pipelines_dir``:

1. ``ours``: ``avepoint_dynamics(..., max_concurrency=8)`` through ``run_load`` (parquet loader files);
2. ``rest_api``: dlt's declarative ``rest_api`` source, configured for the same endpoint as a dlt user would
   (``page_number`` paginator on ``pageInfo.currentPage``, OAuth2 client credentials, merge on ``jobId``,
   default loader format);
3. ``naive``: a ``requests`` loop, page after page, then ``pipeline.run(list_of_dicts)`` with dlt defaults;
4. ``transport``: fetch and JSON-parse every page at the same concurrency as ours, nothing else (no dlt);
5. ``load_limit``: the same rows as one Arrow table (built before timing) loaded through dlt as parquet;
6. ``incremental_limit``: the least any dlt pipeline run costs for an incremental load of this size: 1% of
   the rows as one Arrow table (read before timing), merged on ``jobId`` (declared deduplicated, as ours
   does) into a table that already holds all of them, in a fresh process; no HTTP, no token. An untimed
   child first loads every row into that table the same way;
7. ``ours_incremental``: after ``ours``, 1% new jobs arrive and the running jobs finish; ours runs again on
   the same pipeline and DuckDB file.

Measured per contender: wall time of the work (imports excluded), rows loaded (``count(*)`` in the DuckDB file
afterwards), rows/s, peak RSS and peak private memory of its process, and the jobs requests the simulator
counted. Prints a table per scenario and the issue's targets (PASS/FAIL); writes ``bench/results/bench.json``
and ``bench/results/bench.md``.

One module per role:

- ``cli``: the command, its options, ``--render``, ``--child``;
- ``scenarios``: one scenario: a simulator, every contender in turn, repeats, row checks;
- ``harness``: child processes (environment, ``wait4``, timeouts, killing);
- ``simulator_process``: the simulator in its own process, driven through its control endpoints;
- ``snapshot``: the copy of the code the children import, the git commit, the install;
- ``child``: the child side: one contender in this process, its memory sampled;
- ``contenders``: who is measured, and ours, ``rest_api`` and the naive loop;
- ``limits``: the transport, load and incremental limits;
- ``paging``: a plain client of the jobs API (token, pages, N in flight);
- ``memory``: ``VmHWM`` and the ``RssAnon`` peak sampler;
- ``duckdb_checks``: what a contender left in its DuckDB file;
- ``targets``: the issue's targets, evaluated;
- ``render``: progress lines, console tables, ``bench.md`` and ``bench.json``.

``open_jobs`` (``scripts/bench-open-jobs``) and ``simulator_bench`` are two further benchmarks.
"""
