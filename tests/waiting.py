"""Waiting on a condition, never on the clock: tests poll what they wait for, within a deadline.

A fixed ``time.sleep(n)`` either waits too long or, on a loaded machine, not long enough. The deadline
here only bounds a wait that should end on its own; nothing is asserted about how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], what: str, timeout_s: float = 60.0, interval_s: float = 0.02
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Args:
        condition: What to wait for; called until truthy.
        what: The condition in words, for the failure message.
        timeout_s: Give up (fail the test) after this long: a bound on a hang, not a measurement.
        interval_s: Pause between polls.

    Raises:
        AssertionError: the condition stayed false until the deadline.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
