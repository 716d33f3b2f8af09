"""What a run needs, validated once by the source: what to ask, who we are, how to connect."""

from __future__ import annotations

from dataclasses import dataclass

from .auth import TokenProvider
from .client import JobsClient
from .credentials import AvePointCredentials
from .query import JobsQuery
from .retries import RetryPolicy


@dataclass(frozen=True)
class JobsSetup:
    """Everything a run needs, validated: what to ask, who we are, how to connect."""

    query: JobsQuery
    credentials: AvePointCredentials
    identity_root: str
    verify: bool | str
    retry: RetryPolicy
    tenant: str | None = None

    @property
    def constants(self) -> dict[str, str]:
        """Columns every row gets (``tenant``)."""
        return {"tenant": self.tenant} if self.tenant else {}

    def connect(self) -> tuple[TokenProvider, JobsClient]:
        """A token provider and a jobs client for one run (close the client when done)."""
        tokens = TokenProvider(
            self.credentials, self.identity_root, verify=self.verify, retry=self.retry
        )
        return tokens, JobsClient(self.query, tokens, verify=self.verify, retry=self.retry)
