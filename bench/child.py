"""One contender in this process: the child side of the harness (``python -m bench --child SPEC``).

The parent (``bench.harness.run_child``) writes a spec file and starts this process in an empty working
directory; the contender runs, the memory sampler watches it, and the result goes to the spec's
``result_path`` as JSON, errors included.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.contenders import run_naive, run_ours, run_plain, run_rest_api
from bench.limits import (
    run_dlt_merge,
    run_load_limit,
    run_prepare_arrow,
    run_transport,
    run_transport_one_by_one,
)
from bench.memory import PrivatePeak, peak_rss_mb

#: What a child can run: the contenders, plus the untimed preparations of the limits.
CHILD_RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "ours": run_ours,
    "ours_incremental": run_ours,  # same pipeline, same DuckDB file, second run
    "plain": run_plain,
    "rest_api": run_rest_api,
    "naive": run_naive,
    "transport": run_transport,
    "transport_c1": run_transport_one_by_one,
    "load_limit": run_load_limit,
    "incremental_limit": run_dlt_merge,
    "seed_incremental_limit": run_dlt_merge,
    "prepare_arrow": run_prepare_arrow,
}


def child_main(spec_path: str) -> int:
    """Run one contender as described by the spec file; write its result next to it."""
    spec = json.loads(Path(spec_path).read_text())
    result: dict[str, Any] = {"contender": spec["contender"]}
    private = PrivatePeak()
    try:
        runner = CHILD_RUNNERS[spec["contender"]]
        result.update(runner(spec))
    except BaseException as exc:  # report, then fail
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
        result["peak_rss_self_mb"] = peak_rss_mb()
        result["peak_private_mb"] = private.stop()
        Path(spec["result_path"]).write_text(json.dumps(result, default=str))
        traceback.print_exc()
        return 1
    result["peak_rss_self_mb"] = peak_rss_mb()
    result["peak_private_mb"] = private.stop()
    # Which copy of the code ran: the snapshot, or the working tree with --no-snapshot.
    for name in ("avepoint_dynamics", "avepoint_simulator"):
        if name in sys.modules:
            result[f"{name}_file"] = getattr(sys.modules[name], "__file__", None)
    Path(spec["result_path"]).write_text(json.dumps(result, default=str))
    return 0
