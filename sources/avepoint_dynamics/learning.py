"""How a run knows the service's reading of its window: the stored findings, or learnt side by side.

The findings (``service``) are kept in the source's state, by API version and host. A run that has
none, or whose findings are unknown (the probe could not tell) or were contradicted by the answers of
an earlier run, learns them again: about 15 probe requests, one after another. It does so side by side
with its own reading (issue 23: learning must not cost the first load its speed), and that reading goes
the safe way meanwhile (``plan``: by start time, plus every running job read without a window), which is
exact whatever the probe then finds. What it finds is stored at the end of the run, for the next one.

The cost, against learning first and reading after: on a first load over the whole history, nothing
unless the probe finds the window leaves running jobs out (by finish, or unknown: then their pages, one
request per page size of them; ``run``); on the other runs that learn, the running jobs' pages. Learning
first cost the first load ~15 round trips of wall time (0.8 s at 50 ms a request).
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from concurrent.futures import Executor, Future
from typing import Any

from .errors import ApiError, AuthError
from .model import PageSource
from .query import JobsQuery
from .service import ServiceFindings, probe_service

logger = logging.getLogger("avepoint_dynamics")


class ServiceLearning:
    """The findings a run plans with, and the probe it runs side by side when it has none to trust.

    Args:
        query: The run's settings (its API version and base URL key the findings).
        service_state: Where the findings are kept (the source's state: they outlive a reset).
    """

    def __init__(self, query: JobsQuery, service_state: MutableMapping[str, Any]) -> None:
        self.query = query
        self.service_state = service_state
        self.key = f"{query.api_version} {query.base_url}"
        stored = ServiceFindings.from_dict(service_state.get(self.key))
        #: What an earlier run learnt (None: nothing), trusted or not.
        self.stored = stored
        #: The findings the run plans with; None while they are being learnt.
        self.findings: ServiceFindings | None = (
            stored
            if stored is not None and not stored.stale and stored.window_selects is not None
            else None
        )
        #: What this run learnt (None until :meth:`finish`, or when it learnt nothing).
        self.learnt: ServiceFindings | None = None
        #: The run said once that it reads the safe way because the reading is unknown.
        self.said_safe_way = False
        self._probe: Future[ServiceFindings] | None = None

    @property
    def must_learn(self) -> bool:
        """Nothing to trust: this run learns (side by side) and reads the safe way."""
        return self.findings is None

    @property
    def alongside(self) -> bool:
        """This run learns side by side with its reading (until :meth:`finish`)."""
        return self._probe is not None

    @property
    def selects(self) -> str:
        """How the plan reads the window: the findings' reading, or ``unknown`` while learning."""
        return "unknown" if self.findings is None else self.findings.window_selects or "unknown"

    @property
    def start_exclusive(self) -> bool:
        """The service leaves a job that starts exactly on a window's start out of it."""
        return self.findings is not None and self.findings.start_bound == "exclusive"

    def begin(self, client: PageSource, side: Executor, alongside: bool = True) -> None:
        """Learn when the run must: on ``side``, its requests sharing the run's pool, or first.

        Args:
            client: Asks the jobs API.
            side: Runs the probe side by side with the reading.
            alongside: False: learn before anything is read, and plan with what was learnt (a
                backfill, or a history from ``initial_start_time``: the safe way's read of every
                running job would return running jobs outside their range). A probe the service
                fails then fails the run, as any of its requests.
        """
        if not self.must_learn:
            return
        if not alongside:
            logger.info("learning how the jobs API at %s reads its requests", self.query.base_url)
            self._keep(probe_service(client))
            return
        logger.info(
            "learning how the jobs API at %s reads its requests, side by side with this run's "
            "reading, which goes the safe way meanwhile (exact whatever the window selects)",
            self.query.base_url,
        )
        self._probe = side.submit(probe_service, client)

    def finish(self) -> ServiceFindings | None:
        """Wait for a probe side by side and store what it found; what this run learnt, or None.

        A probe the service failed while the reading went through is a warning: this run read the
        safe way, and the next run learns again. Called again, it returns the same.
        """
        if self._probe is None:
            return self.learnt
        probe, self._probe = self._probe, None
        try:
            findings = probe.result()
        except (ApiError, AuthError) as error:
            logger.warning(
                "could not learn how the jobs API reads its requests (%s); this run read the safe "
                "way, and the next run tries again (or run avepoint-dynamics check --deep)",
                error,
            )
            return None
        self._keep(findings)
        return findings

    def _keep(self, findings: ServiceFindings) -> None:
        self.learnt = self.findings = findings
        self.service_state[self.key] = findings.as_dict()
        for line in findings.lines(safe_way=False):
            logger.info("  %s", line)

    def say_safe_way(self, findings: ServiceFindings) -> None:
        """Once a run: the reading is unknown, what the run does instead and what that costs."""
        self.said_safe_way = True
        logger.warning(
            "how this service's time window selects jobs is unknown (checked %s: %s); %s",
            findings.checked_at,
            "; ".join(note for note in findings.notes if note.startswith("time window"))
            or "could not tell",
            findings.safe_way(self.query.page_size),
        )

    def contradicted(self, what: str) -> None:
        """The service's answers contradict the findings: say so, and learn again next run."""
        findings = self.findings
        if findings is None:  # learning now: nothing was found yet that this could contradict
            logger.warning("%s (how this service reads its window is being learnt now)", what)
            return
        checked = findings.checked_at
        logger.warning(
            "%s: that contradicts how this service was found to read its window (checked %s); the "
            "next run checks again, or run avepoint-dynamics check --deep",
            what,
            checked,
        )
        findings.stale = True
        self.service_state[self.key] = findings.as_dict()
