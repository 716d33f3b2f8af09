"""What can go wrong, as exceptions a scheduler can act on.

Every error a user can cause carries one line that says what was wrong and how to fix it; the CLI prints
``str(error)`` and exits with ``error.exit_code``. None of them ever holds a secret.

Which error means what (exit code in brackets):

- ``ConfigError`` (2): a setting is missing or invalid (a key nothing reads, a region that does not exist,
  a credential file that cannot be used, a backfill whose range is empty); raised before any job is read.
- ``AuthError`` (3): the identity service refused the app (``invalid_client``, a bad scope), has no usable
  discovery document, or the jobs API still answers 401 after the token was renewed.
- ``ApiError`` (4): the jobs API failed for good: it could not be reached, retries ran out (``status``: the
  last answer's), a 403, 404 or other 4xx, or an answer that makes no sense (a repeated page, a total it
  never delivers, a body that is not a page).
- ``ContractError`` (2), an ``ApiError``: a 400 that names the fields it requires or cannot read; the
  request does not match this service (most often ``api_version``).
- ``UnavailableError`` (4): the identity service could not be reached, or stayed unavailable through every
  retry (the jobs API in that case raises ``ApiError``).
- ``AvePointError`` (1): the base class of all of them; never raised itself.

A stop (Ctrl-C, SIGTERM) is :class:`avepoint_dynamics.stopping.RunStopped`, not one of these.
"""

from __future__ import annotations


class AvePointError(Exception):
    """Base class of every error the connector raises on purpose."""

    exit_code = 1


class ConfigError(AvePointError):
    """A configuration value is missing or invalid; raised before any job is read.

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
    """The identity service refused the app, or the jobs API refused a renewed token; retrying would not help."""

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
    """The identity service could not be reached, or stayed unavailable through every retry.

    The jobs API in the same case raises :class:`ApiError` (with the last answer's ``status``).
    """

    exit_code = 4
