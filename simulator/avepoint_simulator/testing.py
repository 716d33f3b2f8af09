"""pytest fixtures, opt-in: ``pytest_plugins = ["avepoint_simulator.testing"]`` in your top conftest.py.

Installing the simulator does not register them (no ``pytest11`` entry point), so they appear only in
the pytest sessions that ask for them.

``avepoint_simulator``: a running simulator with 2,000 jobs, fresh for each test.
``avepoint_simulator_factory``: call it with :class:`Simulator` keywords to start more; all
are stopped when the test ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from avepoint_simulator.simulator import Simulator

__all__ = ["avepoint_simulator", "avepoint_simulator_factory"]


@pytest.fixture
def avepoint_simulator_factory() -> Iterator[Callable[..., Simulator]]:
    """A factory: ``avepoint_simulator_factory(jobs=100, latency_ms=50)`` -> a started Simulator."""
    started: list[Simulator] = []

    def start(**kwargs: Any) -> Simulator:
        kwargs.setdefault("jobs", 2_000)
        sim = Simulator(**kwargs).start()
        started.append(sim)
        return sim

    yield start
    for sim in reversed(started):
        sim.stop()


@pytest.fixture
def avepoint_simulator(avepoint_simulator_factory: Callable[..., Simulator]) -> Simulator:
    """A started simulator with 2,000 jobs (seed 0), stopped after the test."""
    return avepoint_simulator_factory()
