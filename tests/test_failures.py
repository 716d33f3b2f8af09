"""Unit tier: any failure → one line and an exit code, found under dlt's wrappers (pipelines/failures.py).

The exceptions are dlt's own, raised in-process the way a run raises them (a source whose config is
missing, a destination name dlt does not know, a TOML file that does not parse) or built with dlt's
constructors where raising them takes a socket (a destination that refused a load). What the CLI
prints for them, in a subprocess as a user types it, is the integration tier's (test_cli_failures.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
import pytest
import tomlkit
from avepoint_dynamics import (
    ApiError,
    AuthError,
    AvePointCredentials,
    ConfigError,
    UnavailableError,
    avepoint_dynamics,
)
from avepoint_pipelines.failures import (
    EXIT_API,
    EXIT_AUTH,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Failure,
    Terminated,
    UsageError,
    causes,
    chain_lines,
    describe_failure,
    redact,
)
from avepoint_pipelines.load.tenants import tenant_source
from dlt.common.configuration import resolve_configuration
from dlt.common.configuration.exceptions import (
    ConfigFieldMissingException,
    ConfigValueCannotBeCoercedException,
)
from dlt.common.configuration.providers.toml import TomlProviderReadException
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.common.destination.reference import Destination
from dlt.common.exceptions import MissingDependencyException
from dlt.pipeline.exceptions import PipelineStepFailed

pytestmark = pytest.mark.unit


@pytest.fixture
def pipeline(tmp_path: Path) -> Any:
    """A pipeline object (a folder, no database opened) for dlt's step wrappers to name."""
    return dlt.pipeline(
        pipeline_name="unit_failures",
        destination="duckdb",
        dataset_name="avepoint",
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def raised(call: Any, *args: Any, **kwargs: Any) -> BaseException:
    """What ``call`` raises (it must raise)."""
    with pytest.raises(BaseException) as caught:
        call(*args, **kwargs)
    return caught.value


def wrapped(pipeline: Any, step: str, error: BaseException) -> PipelineStepFailed:
    """``error`` as dlt hands it to the CLI: raised inside a step, wrapped, its cause chained."""
    try:
        try:
            raise error
        except BaseException as inner:
            raise PipelineStepFailed(pipeline, step, "1700000000.1", inner) from inner  # type: ignore[arg-type]
    except PipelineStepFailed as outer:
        return outer


# ---------------------------------------------------------------------- stops
@pytest.mark.parametrize(
    ("stop", "code", "says"),
    [
        (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
        (Terminated(), EXIT_TERMINATED, "terminated (SIGTERM)"),
    ],
)
def test_a_stop_inside_any_step_is_its_own_exit_code(
    pipeline: Any, stop: BaseException, code: int, says: str
) -> None:
    for step in ("extract", "normalize", "load"):
        failure = describe_failure(wrapped(pipeline, step, stop))

        assert failure == Failure(f"{says}; the next run picks up where this one stopped", code), (
            step
        )


def test_a_stop_wins_over_whatever_else_failed_on_the_way_out(pipeline: Any) -> None:
    try:
        try:
            raise ConfigError("page_size", "bad")
        except ConfigError:
            raise KeyboardInterrupt from None
    except KeyboardInterrupt as stop:
        stop.__context__ = ConfigError("page_size", "bad")  # what was failing when Ctrl-C came
        error = wrapped(pipeline, "extract", stop)

    assert describe_failure(error).exit_code == EXIT_INTERRUPTED


# ---------------------------------------------------------------------- the connector's own errors
@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("page_size", "0 is out of range"), EXIT_CONFIG),
        (AuthError("the identity service rejected the app"), EXIT_AUTH),
        (ApiError("the jobs API rejected page 1"), EXIT_API),
        (UnavailableError("the jobs API stayed unavailable"), EXIT_API),
        (UsageError("--from: give a date"), EXIT_CONFIG),
    ],
)
def test_the_connectors_errors_are_said_as_they_are_under_any_wrapper(
    pipeline: Any, error: Exception, code: int
) -> None:
    assert describe_failure(error) == Failure(str(error), code)
    assert describe_failure(wrapped(pipeline, "extract", error)) == Failure(str(error), code)


# ---------------------------------------------------------------------- configuration
def test_missing_credentials_say_where_to_put_them() -> None:
    error = raised(avepoint_dynamics)  # nothing configured (the conftest clears the env vars)

    assert isinstance(error, ConfigFieldMissingException)
    assert describe_failure(error) == Failure(
        "missing credentials: set sources.avepoint_dynamics.credentials.client_id and one of "
        "client_secret, private_key + certificate, or pfx_path + pfx_password in "
        ".dlt/secrets.toml (or SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID, "
        "..._CLIENT_SECRET env vars)",
        EXIT_CONFIG,
    )


def test_a_tenants_missing_credentials_name_the_tenants_section(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SOURCES__AVEPOINT_DYNAMICS_CONTOSO__REGION", "us")  # a section, no app
    error = raised(tenant_source, "contoso")

    message = describe_failure(error).message
    assert message.startswith(
        "missing credentials: set sources.avepoint_dynamics_contoso.credentials.client_id"
    ), message
    assert "SOURCES__AVEPOINT_DYNAMICS_CONTOSO__CREDENTIALS__CLIENT_ID" in message


def test_missing_destination_credentials_name_the_destination_key_not_the_source() -> None:
    spec = dlt.destinations.postgres().spec()
    error = raised(resolve_configuration, spec, sections=("destination", "postgres"))

    first = describe_failure(error).message.split("; ")[0]
    assert first == (
        "missing credentials of destination postgres: set DESTINATION__POSTGRES__CREDENTIALS or "
        "[destination.postgres] credentials = ... in .dlt/secrets.toml "
        "(missing: database, password, username, host)"
    )
    assert describe_failure(error).exit_code == EXIT_CONFIG


def test_a_value_dlt_cannot_coerce_names_the_key_and_the_type() -> None:
    error = ConfigValueCannotBeCoercedException("page_size", "ten", int)

    assert describe_failure(error) == Failure(
        "configuration value page_size cannot be read as <class 'int'>", EXIT_CONFIG
    )


@pytest.mark.parametrize(
    ("text", "says", "hint"),
    [
        (
            '[sources.avepoint_dynamics]\nregion = "us\n',
            "is not valid TOML: line 2, column 12: Control characters",
            " (is a string's closing quote missing on that line?); fix the file",
        ),
        ("[sources.avepoint_dynamics]\npage_size = = 5\n", "is not valid TOML: line 2, column", ""),
    ],
)
def test_a_toml_file_that_does_not_parse_names_the_file_the_line_and_the_problem(
    tmp_path: Path, text: str, says: str, hint: str
) -> None:
    broken = tmp_path / ".dlt" / "secrets.toml"
    broken.parent.mkdir()
    broken.write_text(text)
    fine = tmp_path / "elsewhere" / "secrets.toml"  # dlt lists every file it read
    fine.parent.mkdir()
    fine.write_text("[sources]\n")
    try:
        try:
            tomlkit.parse(text)
        except Exception as parse_error:
            raise TomlProviderReadException(
                "secrets.toml", "secrets.toml", [str(fine), str(broken)], str(parse_error)
            ) from parse_error
    except TomlProviderReadException as error:
        failure = describe_failure(error)

    assert failure.exit_code == EXIT_CONFIG
    assert failure.message.startswith(f"{broken} {says}"), failure.message
    assert failure.message.endswith(hint or "; fix the file"), failure.message
    assert " at line " not in failure.message  # tomlkit's own "at line 2 col 12" is said once


# ---------------------------------------------------------------------- destinations and extras
def test_an_unknown_destination_lists_the_names_dlt_knows() -> None:
    error = raised(Destination.from_reference, "bogus")

    failure = describe_failure(error)
    assert failure.exit_code == EXIT_CONFIG
    assert failure.message.startswith("unknown destination 'bogus'; dlt knows: ")
    known = failure.message.split("dlt knows: ", 1)[1].split(" (", 1)[0].split(", ")
    assert {"bigquery", "duckdb", "filesystem", "motherduck", "postgres", "snowflake"} <= set(known)
    assert "destination" not in known  # the decorator, not a name to type
    assert known == sorted(known)
    assert failure.message.endswith(
        "(a named destination also needs DESTINATION__BOGUS__DESTINATION_TYPE)"
    )


@pytest.mark.parametrize(
    ("module", "extra"),
    [("psycopg2", "postgres"), ("dagster_dlt.translator", "dagster"), ("airflow", "airflow")],
)
def test_a_module_of_an_extra_says_which_extra_to_install(
    pipeline: Any, module: str, extra: str
) -> None:
    missing = ModuleNotFoundError(f"No module named {module!r}", name=module)

    failure = describe_failure(wrapped(pipeline, "sync", missing))

    top = module.split(".")[0]
    assert failure == Failure(
        f"the {extra} extra is not installed (no module named {top!r}): pip install -e '.[{extra}]'",
        EXIT_CONFIG,
    )


def test_another_missing_module_is_not_blamed_on_an_extra(pipeline: Any) -> None:
    missing = ModuleNotFoundError("No module named 'left_pad'", name="left_pad")

    failure = describe_failure(wrapped(pipeline, "extract", missing))

    assert failure == Failure(
        "failed at the extract step: ModuleNotFoundError: No module named 'left_pad'", EXIT_FAILED
    )


def test_dlts_missing_dependency_advice_becomes_one_pip_line_per_package() -> None:
    error = MissingDependencyException("DuckDB destination", ["duckdb>=1.1", "pyarrow>=16"])

    assert describe_failure(error) == Failure(
        'DuckDB destination needs more packages: pip install "duckdb>=1.1" and '
        'pip install "pyarrow>=16"',
        EXIT_CONFIG,
    )


def test_a_destination_that_failed_its_step_says_what_it_said_and_where_to_look(
    pipeline: Any,
) -> None:
    refused = DestinationTerminalException(
        'IO Error: The file "jobs.duckdb" is not a database\nmore'
    )

    for step in ("sync", "load"):
        failure = describe_failure(wrapped(pipeline, step, refused))

        assert failure == Failure(
            f"duckdb failed at the {step} step: DestinationTerminalException: IO Error: The file "
            '"jobs.duckdb" is not a database; check --duckdb-path',
            EXIT_FAILED,
        )
    alone = describe_failure(refused)
    assert alone.message.startswith(
        "the destination failed: DestinationTerminalException: IO Error"
    )


def test_another_destination_is_pointed_at_its_credentials(tmp_path: Path) -> None:
    postgres = dlt.pipeline(
        pipeline_name="unit_pg",
        destination=dlt.destinations.postgres(credentials="postgresql://u:p@127.0.0.1:9/db"),
        pipelines_dir=str(tmp_path),
    )

    failure = describe_failure(wrapped(postgres, "sync", OSError("connection refused")))

    assert failure.message == (
        "postgres failed at the sync step: OSError: connection refused; "
        "check its settings (DESTINATION__POSTGRES__CREDENTIALS, ...)"
    )


def test_anything_else_says_the_innermost_error_and_the_step(pipeline: Any) -> None:
    failure = describe_failure(wrapped(pipeline, "normalize", RuntimeError("\n  boom  \nsecond")))

    assert failure == Failure("failed at the normalize step: RuntimeError: boom", EXIT_FAILED)
    assert describe_failure(ValueError()) == Failure("ValueError: ValueError", EXIT_FAILED)


# ---------------------------------------------------------------------- the chain, and secrets
def test_the_chain_follows_dlts_exception_attribute_causes_and_contexts_without_looping(
    pipeline: Any,
) -> None:
    root = ValueError("root")
    middle = RuntimeError("middle")
    middle.__cause__ = root
    outer = wrapped(pipeline, "extract", middle)
    root.__context__ = outer  # a cycle: must end

    chain = causes(outer)

    assert chain == [outer, middle, root]
    lines = chain_lines(outer)
    assert lines[0].startswith("dlt.pipeline.exceptions.PipelineStepFailed: Pipeline execution")
    assert lines[1:] == ["builtins.RuntimeError: middle", "builtins.ValueError: root"]
    assert all("\n" not in line for line in lines)


def test_no_secret_survives_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_SECRET", "s3cr3t-value")
    monkeypatch.setenv("DESTINATION__POSTGRES__CREDENTIALS", "postgresql://u:pw-in-env@h/db")
    monkeypatch.setenv("SOURCES__AVEPOINT_DYNAMICS__CREDENTIALS__CLIENT_ID", "the-app-id")
    monkeypatch.setenv("MY_TOKEN", "short")  # too short to mask without masking ordinary words

    text = redact(
        "postgresql://loader:hunter2@db:5432/x used s3cr3t-value for the-app-id; "
        "postgresql://u:pw-in-env@h/db, a short token"
    )

    assert "hunter2" not in text and "s3cr3t-value" not in text and "pw-in-env" not in text
    assert "postgresql://loader:***@db:5432/x" in text and "used *** for the-app-id" in text
    assert "a short token" in text
    error = AuthError("rejected s3cr3t-value at https://u:hunter2@id.test")
    assert describe_failure(error).message == "rejected *** at https://u:***@id.test"
    assert "hunter2" not in " ".join(chain_lines(error))


def test_the_credentials_repr_holds_no_secret() -> None:
    credentials = AvePointCredentials()
    credentials.client_id = "app"
    credentials.client_secret = "s3cr3t-value"

    assert "s3cr3t-value" not in repr(credentials)


def test_a_destination_failing_at_the_lease_is_pointed_at_its_credentials(tmp_path: Path) -> None:
    from avepoint_pipelines.load.lease import LeaseStepFailed

    postgres = dlt.pipeline(
        pipeline_name="unit_pg_lease",
        destination=dlt.destinations.postgres(credentials="postgresql://u:p@127.0.0.1:9/db"),
        pipelines_dir=str(tmp_path),
    )
    error = OSError("connection refused")
    try:
        raise LeaseStepFailed(postgres, error) from error
    except LeaseStepFailed as failed:
        failure = describe_failure(failed)

    assert failure.message == (
        "postgres failed at the lease step: OSError: connection refused; "
        "check its settings (DESTINATION__POSTGRES__CREDENTIALS, ...)"
    )
    assert failure.exit_code == 1
