"""What the HTTP server serves: the narrow interface between the ``Simulator`` and its handlers.

``Simulator`` builds one :class:`ServedService` and hands it to ``SimulatorHTTPServer``; the server
knows nothing else of the simulator (``server.py`` does not import ``simulator.py``). The parts that
change while serving (the fault settings, the address once bound) are callables, read per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from avepoint_simulator.faults import FaultInjector, Faults
from avepoint_simulator.identity import Identity
from avepoint_simulator.stats import Stats
from avepoint_simulator.times import ServiceClock
from avepoint_simulator.world import World

__all__ = ["ServedService"]


@dataclass(frozen=True)
class ServedService:
    """Exactly what the request handlers read or change.

    Attributes:
        identity: App registrations, token issuing, bearer checks, discovery and JWKS.
        world: The job history the jobs API answers from and the controls change.
        stats: The request counters (the ``stats`` / ``reset_stats`` controls read and zero them).
        injector: Decides the faults of each request (drops, 429s, 5xx, truncation).
        clock: The service's clock (``Date`` headers, rate limits).
        faults: The current fault settings.
        set_faults: Changes fault settings (the ``faults`` control), e.g. ``set_faults(error_rate=0.1)``.
        token_url: The token endpoint's public URL, the ``aud`` client assertions may name.
        connection_info: What a client needs (the ``info`` control).
    """

    identity: Identity
    world: World
    stats: Stats
    injector: FaultInjector
    clock: ServiceClock
    faults: Callable[[], Faults]
    set_faults: Callable[..., Faults]
    token_url: Callable[[], str]
    connection_info: Callable[[], dict[str, Any]]
