"""What went wrong, as one line a person can act on and an exit code a scheduler can act on.

dlt wraps what actually failed (``PipelineStepFailed`` around a missing module, a config resolution
error, a ``KeyboardInterrupt``) and puts the cause on the lines after its first one. This module walks
the whole chain of an exception to the cause a person can fix, and says how: the key, flag, file or
command. It never prints a secret: URLs lose their password and values of secret env vars are masked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from avepoint_dynamics import AvePointError

EXIT_OK = 0
EXIT_FAILED = 1  # unexpected: a bug, or a destination that failed
EXIT_CONFIG = 2  # configuration or command line: fix a key, a flag or a file
EXIT_AUTH = 3  # the identity service refused the app's credentials
EXIT_API = (
    4  # a service (the jobs API, the identity service) stayed unavailable or answered nonsense
)
EXIT_REJECTED = 5  # loaded, but jobs were set aside in jobs_rejected (with --fail-on-rejected)
EXIT_BUSY = 75  # another run of the pipeline holds it (sysexits' EX_TEMPFAIL: try again later)
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
EXIT_TERMINATED = 143  # SIGTERM (a scheduler or container stopping the run): 128 + 15

#: Modules that come with an extra of this project, and the extra.
EXTRA_OF_MODULE = {
    "psycopg2": "postgres",
    "dagster": "dagster",
    "dagster_dlt": "dagster",
    "dagster_webserver": "dagster",
    "airflow": "airflow",
    "deltalake": "lakehouse",
    "s3fs": "s3",
}

#: Env vars whose values are secrets: dlt's ``..._SECRET``, ``..._PASSWORD``, a destination's
#: ``DESTINATION__<NAME>__CREDENTIALS`` connection string, ... (not ``..._CLIENT_ID``: it names the app).
_SECRET_ENV = re.compile(
    r"(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY|__CREDENTIALS)$", re.I
)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]+:)[^@\s]+@", re.I)


class Failure(NamedTuple):
    """One line and an exit code."""

    message: str
    exit_code: int


class UsageError(Exception):
    """A command-line option is wrong or missing; the message names the flag."""

    exit_code = EXIT_CONFIG


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run ends the way Ctrl-C ends it.

    A ``KeyboardInterrupt`` because dlt treats those as an interruption of its step (it wraps them in
    ``PipelineStepFailed`` and leaves no half-committed package), which is what a stop request is.
    """


def describe_failure(error: BaseException) -> Failure:
    """One line and an exit code for any failure, looking under dlt's wrappers for the real cause."""
    chain = causes(error)
    for describe in _DESCRIBERS:
        for cause in chain:
            found = describe(cause, chain)
            if found is not None:
                return Failure(redact(found.message), found.exit_code)
    return Failure(redact(_fallback(chain)), EXIT_FAILED)


def causes(error: BaseException) -> list[BaseException]:
    """The exception and everything under it: dlt's ``.exception``, ``__cause__``, ``__context__``."""
    chain: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in chain:
        chain.append(seen)
        wrapped = getattr(seen, "exception", None)
        seen = (
            wrapped if isinstance(wrapped, BaseException) else (seen.__cause__ or seen.__context__)
        )
    return chain


def chain_lines(error: BaseException) -> list[str]:
    """The whole chain, one exception per line (type and message), for ``-v``."""
    return [
        redact(
            f"{type(cause).__module__}.{type(cause).__qualname__}: {' '.join(str(cause).split())}"
        )
        for cause in causes(error)
    ]


def redact(text: str) -> str:
    """``text`` without URL passwords or the values of secret-looking env vars."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    for name, value in os.environ.items():
        if len(value) >= 6 and _SECRET_ENV.search(name) and value in text:
            text = text.replace(value, "***")
    return text


def first_line(error: BaseException) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[0].strip() if lines else type(error).__name__


# --------------------------------------------------------------------------- the causes, by priority
def _interrupted(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    if isinstance(cause, Terminated):
        return Failure(
            "terminated (SIGTERM); the next run picks up where this one stopped", EXIT_TERMINATED
        )
    if isinstance(cause, KeyboardInterrupt):
        return Failure(
            "interrupted (Ctrl-C); the next run picks up where this one stopped", EXIT_INTERRUPTED
        )
    return None


def _ours(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    if isinstance(cause, AvePointError):
        return Failure(str(cause), cause.exit_code)
    if isinstance(cause, UsageError):
        return Failure(str(cause), cause.exit_code)
    return None


def _unreadable_config_file(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    from dlt.common.configuration.providers.toml import TomlProviderReadException

    if not isinstance(cause, TomlProviderReadException):
        return None
    parse_error = cause.__cause__ or cause.__context__
    problem = first_line(parse_error) if parse_error is not None else first_line(cause)
    line, col = getattr(parse_error, "line", None), getattr(parse_error, "col", None)
    where = ""
    if line is not None:
        problem = re.sub(rf"\s*at line {line} col {col}\s*$", "", problem)
        where = f" line {line}, column {col}:"
    if "Control characters" in problem:
        problem += " (is a string's closing quote missing on that line?)"
    path = _unparsable_file(cause.full_paths) or cause.file_name
    return Failure(f"{path} is not valid TOML:{where} {problem}; fix the file", EXIT_CONFIG)


def _missing_config(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    from dlt.common.configuration.exceptions import ConfigFieldMissingException

    if not isinstance(cause, ConfigFieldMissingException):
        return None
    messages = [_missing_field(field, traces) for field, traces in cause.traces.items()]
    return Failure("; ".join(messages) or first_line(cause), EXIT_CONFIG)


def _bad_config_value(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    from dlt.common.configuration.exceptions import (
        ConfigurationValueError,
        ConfigValueCannotBeCoercedException,
    )

    if isinstance(cause, ConfigValueCannotBeCoercedException):
        return Failure(
            f"configuration value {cause.field_name} cannot be read as {cause.hint}", EXIT_CONFIG
        )
    if isinstance(cause, ConfigurationValueError):
        return Failure(f"configuration error: {first_line(cause)}", EXIT_CONFIG)
    return None


def _unknown_destination(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    from dlt.common.destination.exceptions import UnknownDestinationModule

    if not isinstance(cause, UnknownDestinationModule):
        return None
    name = cause.ref
    return Failure(
        f"unknown destination {name!r}; dlt knows: {', '.join(destination_names())} "
        f"(a named destination also needs DESTINATION__{name.upper()}__DESTINATION_TYPE)",
        EXIT_CONFIG,
    )


def _missing_extra(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    if isinstance(cause, ModuleNotFoundError) and cause.name:
        top = cause.name.split(".")[0]
        if top in EXTRA_OF_MODULE:
            extra = EXTRA_OF_MODULE[top]
            return Failure(
                f"the {extra} extra is not installed (no module named {top!r}): "
                f"pip install -e '.[{extra}]'",
                EXIT_CONFIG,
            )
    return None


def _missing_dependency(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    from dlt.common.exceptions import MissingDependencyException

    if isinstance(cause, MissingDependencyException):
        install = " and ".join(f'pip install "{d}"' for d in cause.dependencies)
        return Failure(f"{cause.caller} needs more packages: {install}", EXIT_CONFIG)
    return None


def _destination_failed(cause: BaseException, chain: Sequence[BaseException]) -> Failure | None:
    """A destination that could not be reached or refused the load: what it said, and where to look."""
    from dlt.common.destination.exceptions import DestinationException
    from dlt.pipeline.exceptions import PipelineStepFailed

    from .load.lease import LeaseStepFailed

    step = getattr(cause, "step", None)
    if isinstance(cause, PipelineStepFailed | LeaseStepFailed) and step in (
        "sync",
        "load",
        "lease",
    ):
        destination = getattr(getattr(cause, "pipeline", None), "destination", None)
        name = getattr(destination, "destination_name", None) or "the destination"
        where = f"{name} failed at the {step} step"
    elif isinstance(cause, DestinationException):
        name, where = "the destination", "the destination failed"
    else:
        return None
    innermost = chain[-1]
    message = f"{where}: {type(innermost).__name__}: {first_line(innermost)}"
    if name == "duckdb":
        message += "; check --duckdb-path"
    elif name != "the destination":
        message += f"; check its settings (DESTINATION__{name.upper()}__CREDENTIALS, ...)"
    return Failure(message, EXIT_FAILED)


_Describer = Callable[[BaseException, Sequence[BaseException]], Failure | None]
#: First match wins, in this order, anywhere in the chain.
_DESCRIBERS: list[_Describer] = [
    _interrupted,
    _ours,
    _unreadable_config_file,
    _missing_config,
    _bad_config_value,
    _unknown_destination,
    _missing_extra,  # before dlt's advice, which names dlt's extra rather than ours
    _missing_dependency,
    _destination_failed,
]


def _fallback(chain: Sequence[BaseException]) -> str:
    """The innermost exception (what actually failed), and dlt's step if one wrapped it."""
    from dlt.pipeline.exceptions import PipelineStepFailed

    innermost = chain[-1]
    steps = [cause.step for cause in chain if isinstance(cause, PipelineStepFailed)]
    where = f"failed at the {steps[0]} step: " if steps else ""
    return f"{where}{type(innermost).__name__}: {first_line(innermost)}"


# --------------------------------------------------------------------------- helpers
def destination_names() -> list[str]:
    """The destination names dlt knows (its registry of built-in destination factories)."""
    import dlt.destinations  # noqa: F401  (registers them)
    from dlt.common.destination.reference import DestinationReference

    names = {ref.rsplit(".", 1)[-1] for ref in DestinationReference.DESTINATIONS}
    names.discard("destination")  # the decorator for custom destinations, not a name to type
    return sorted(names)


def _unparsable_file(paths: Sequence[str]) -> str | None:
    """The first of ``paths`` that exists and does not parse (dlt's exception lists them all)."""
    import tomlkit

    for path in paths:
        try:
            with open(path, encoding="utf-8") as file:
                tomlkit.parse(file.read())
        except FileNotFoundError:
            continue
        except Exception:
            return os.path.normpath(path)
    return None


def _missing_field(field: str, traces: Sequence[Any]) -> str:
    """Where a missing value goes, as a user writes it: the section dlt looked in first."""
    from dlt.common.configuration.exceptions import LookupTraces, flatten_traces

    nested = next((trace for trace in traces if isinstance(trace, LookupTraces)), None)
    flat = flatten_traces(list(traces))
    sections = _most_specific(flat)
    if nested is not None:
        path = sections  # the nested config's own section, e.g. [sources, avepoint_dynamics, credentials]
        missing = list(nested.traces)
    else:
        path, missing = [*sections, field], []
    dotted, env = ".".join(path), "__".join(part.upper() for part in path)
    if nested is not None and nested.spec_name == "AvePointCredentials":
        return (
            f"missing credentials: set {dotted}.client_id and one of client_secret, "
            "private_key + certificate, or pfx_path + pfx_password in .dlt/secrets.toml "
            f"(or {env}__CLIENT_ID, ..._CLIENT_SECRET env vars)"
        )
    if path and path[0] == "destination":
        destination = path[1] if len(path) > 2 else "the destination"
        what = f" (missing: {', '.join(missing)})" if missing else ""
        return (
            f"missing {field} of destination {destination}: set {env} or "
            f"[{'.'.join(path[:-1])}] {path[-1]} = ... in .dlt/secrets.toml{what}"
        )
    what = f" ({', '.join(missing)})" if missing else ""
    return (
        f"missing configuration {dotted}{what}: set it in .dlt/config.toml or .dlt/secrets.toml "
        f"(or the {env} env var)"
    )


def _most_specific(traces: Sequence[Any]) -> list[str]:
    """The longest section path dlt tried, as a user writes it.

    Without the source function's own section after the source's: ``sources.avepoint_dynamics`` (not
    ``sources.avepoint_dynamics.avepoint_dynamics``), and a tenant's ``sources.avepoint_dynamics_<name>``
    (not ``sources.avepoint_dynamics_<name>.avepoint_dynamics``): dlt reads both spellings.
    """
    best: list[str] = []
    for trace in traces:
        sections = [
            s
            for i, s in enumerate(trace.sections)
            if i == 0
            or (s != trace.sections[i - 1] and not trace.sections[i - 1].startswith(s + "_"))
        ]
        if len(sections) > len(best):
            best = sections
    return best
