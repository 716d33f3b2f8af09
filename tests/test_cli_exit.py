"""The console script freezes the heap before the interpreter's teardown; a call with arguments does not."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest
from avepoint_pipelines.cli import main
from avepoint_pipelines.failures import EXIT_CONFIG

pytestmark = pytest.mark.unit


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_the_command_freezes_the_heap_on_its_way_out(
    unfrozen: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["avepoint-dynamics", "load", "--log-level", "LOUD"])
    assert main() == EXIT_CONFIG
    assert gc.get_freeze_count() > 0


def test_a_call_with_arguments_leaves_the_collector_alone(unfrozen: None) -> None:
    assert main(["load", "--log-level", "LOUD"]) == EXIT_CONFIG
    assert gc.get_freeze_count() == 0
