"""A faithful local simulator of the AvePoint Cloud Backup for Dynamics 365 jobs API.

Serves identity (OIDC discovery, client-credentials tokens by secret or certificate), the v1
``POST /api/OpenApi/GetJobs`` and v2 ``GET /dynamicsbackup/jobs`` endpoints over a generated,
seeded job history, with faults on demand. See ``docs/simulator-contract.md``.
"""

from avepoint_simulator.certs import make_certificate, make_pfx
from avepoint_simulator.faults import Faults
from avepoint_simulator.identity import SCOPE, App
from avepoint_simulator.jobs_store import JobFilter
from avepoint_simulator.simulator import Simulator
from avepoint_simulator.world import World

__all__ = [
    "SCOPE",
    "App",
    "Faults",
    "JobFilter",
    "Simulator",
    "World",
    "make_certificate",
    "make_pfx",
]
