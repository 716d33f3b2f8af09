"""Unit tier: the CLI's options for the source come from the source itself, so none can be forgotten."""

from __future__ import annotations

import inspect

import pytest
from avepoint_dynamics import avepoint_dynamics
from avepoint_pipelines.cli import build_parser
from avepoint_pipelines.cli.source_options import API, FIRST_LOAD, READING, parameter_help

pytestmark = pytest.mark.unit

#: Not options: credentials are secrets (dlt config only), on_page and on_run are Python's, end_time is backfill's --to,
#: allow_external_schedulers is the scheduler's (dlt config, or dlt's DLT_ALLOW_EXTERNAL_SCHEDULERS).
NOT_OPTIONS = {"credentials", "on_page", "on_run", "end_time", "allow_external_schedulers"}


def test_every_parameter_of_the_source_is_an_option_of_load() -> None:
    parameters = set(inspect.signature(avepoint_dynamics).parameters) - NOT_OPTIONS

    assert parameters == {*API, *READING, *FIRST_LOAD}
    load = build_parser()._subparsers._group_actions[0].choices["load"]
    flags = {option for action in load._actions for option in action.option_strings}
    assert {"--" + name.replace("_", "-") for name in parameters} <= flags


def test_each_option_says_what_the_sources_docstring_says() -> None:
    described = parameter_help()
    check = build_parser()._subparsers._group_actions[0].choices["check"]
    helps = {action.dest: action.help or "" for action in check._actions}

    for name in API:
        assert helps[name].startswith(described[name].rstrip(".")), name
        assert "(default: dlt config, else " in helps[name]
