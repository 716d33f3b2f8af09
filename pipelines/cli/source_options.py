"""The CLI's options for the source's parameters, derived from ``avepoint_dynamics``' signature and docstring.

A parameter of the source is an option of the commands that use it (``base_url`` is ``--base-url``), its
help is the parameter's own line in the source's docstring, and a value given on the command line is
passed as that argument (dlt config fills in the rest). A parameter added to the source needs only a line
in one of the groups below to reach the CLI.
"""

from __future__ import annotations

import argparse
import inspect
import re
from functools import cache
from typing import Any

from avepoint_dynamics import avepoint_dynamics

#: What to ask which API (every command that talks to it).
API = (
    "region",
    "base_url",
    "api_version",
    "job_type",
    "status",
    "organization_id",
    "object_type",
    "ca_bundle",
)
#: How to read it (the commands that load).
READING = (
    "page_size",
    "max_concurrency",
    "lookback_minutes",
    "open_job_max_age_days",
    "max_attempts",
    "tenant",
)
#: Where the very first load starts (``load`` only; a backfill has ``--from``).
FIRST_LOAD = ("initial_start_time",)

#: What "unset" means for parameters whose signature default is None.
_UNSET = {
    "region": "none: set it or --base-url",
    "base_url": "the region's",
    "job_type": "all",
    "status": "all",
    "organization_id": "all",
    "object_type": "all",
    "ca_bundle": "the system's",
    "tenant": "none: no tenant column",
    "initial_start_time": "all history",
}
_METAVARS = {"base_url": "URL", "organization_id": "GUID", "ca_bundle": "FILE", "tenant": "NAME"}
_CHOICES = {"api_version": ["v1", "v2"]}
#: Where the CLI does more with a parameter than the source does (the source's line says the rest).
_CLI_HELP = {
    "tenant": "One tenant by name: reads [sources.avepoint_dynamics_<name>], which must exist (a key "
    "missing there: [sources.avepoint_dynamics]), adds a tenant column, loads through the pipeline "
    "<pipeline-name>_<name>.",
}


def add_source_options(command: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    """Add ``--<name>`` for each source parameter in ``names``, with the source's help and default."""
    signature = inspect.signature(avepoint_dynamics)
    described = parameter_help()
    for name in names:
        default = signature.parameters[name].default
        shown = _UNSET.get(name, "none") if default is None else str(default)
        metavar = _METAVARS.get(name) or (
            "N" if isinstance(default, int) else name.split("_")[-1].upper()
        )
        if name == "initial_start_time":
            metavar = "DATE"
        command.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            metavar=None if name in _CHOICES else metavar,
            choices=_CHOICES.get(name),
            help=f"{_CLI_HELP.get(name, described[name]).rstrip('.')} (default: dlt config, else {shown})",
        )


def source_args(args: argparse.Namespace) -> dict[str, Any]:
    """The source's arguments given on the command line (plus a backfill's range); dlt config fills in the rest."""
    names = [*API, *READING, *FIRST_LOAD, "end_time"]
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


@cache
def parameter_help() -> dict[str, str]:
    """Each parameter's description from the source's Google-style ``Args:`` section, as one line.

    Example:
        >>> parameter_help()["page_size"]
        'Jobs per request, 1..100.'
    """
    doc = inspect.getdoc(avepoint_dynamics) or ""
    args = doc.split("Args:", 1)[1].split("\n\n", 1)[0]
    described: dict[str, str] = {}
    name = None
    for line in args.splitlines():
        match = re.match(r"^\s{4}(\w+): (.*)$", line)
        if match:
            name, text = match.groups()
            described[name] = text.strip()
        elif name is not None and line.strip():
            described[name] += " " + line.strip()
    return {key: " ".join(value.replace("``", "").split()) for key, value in described.items()}
