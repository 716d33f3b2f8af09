"""What can go wrong, as exceptions a scheduler can act on.

Every error a user can cause carries one line that says what was wrong and how to fix it; the CLI prints
``str(error)`` and exits with ``error.exit_code``. None of them ever holds a secret.
"""

from __future__ import annotations


class AvePointError(Exception):
    """Base class of every error the connector raises on purpose."""

    exit_code = 1


class ConfigError(AvePointError):
    """A configuration value is missing or invalid; raised before any request is sent.

    Args:
        key: The config key at fault, as the user writes it (e.g. ``page_size``).
        problem: What is wrong and what would be valid, in one sentence.
        section: The config section the key belongs to (a tenant's: ``avepoint_dynamics_contoso``).
    """

    exit_code = 2

    def __init__(self, key: str, problem: str, section: str = "avepoint_dynamics") -> None:
        self.key = key
        self.problem = problem
        self.section = section
        where = f"sources.{section}.{key}" if key else f"sources.{section}"
        super().__init__(f"config error in {where}: {problem}")


class AuthError(AvePointError):
    """The identity service refused us, or could not be reached; retrying would not help."""

    exit_code = 3


class ApiError(AvePointError):
    """The jobs API failed for good: retries ran out, or it answered something that makes no sense.

    Args:
        message: What failed, in one line.
        status: The HTTP status of the answer that ended the attempts, if there was one (callers
            decide by it, never by the text).
    """

    exit_code = 4

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ContractError(ApiError):
    """The jobs API refused a request by naming fields it requires or cannot read (a 400 that names them).

    Retrying would not help and nothing is wrong with the network: the request this connector builds
    does not match what this service accepts (most often ``api_version``). Exit code 2, like a
    configuration error.

    Args:
        message: What was refused, with the field names.
        fields: The field names the service named.
    """

    exit_code = 2

    def __init__(self, message: str, fields: list[str]) -> None:
        super().__init__(message, status=400)
        self.fields = fields


class UnavailableError(AvePointError):
    """A service (the identity service or the jobs API) stayed unavailable through every retry."""

    exit_code = 4
