"""Who the tenants are, and where each one's config, pipeline and staging live.

A tenant is a name (``contoso``) with a config section of its own, ``[sources.avepoint_dynamics_contoso]``
(env vars ``SOURCES__AVEPOINT_DYNAMICS_CONTOSO__...``); a key missing there is read from
``[sources.avepoint_dynamics]``, so settings every tenant shares are written once. Each tenant loads
through a dlt pipeline of its own, ``<pipeline>_<tenant>`` (its state, working folder and run lock), and
stages its merges in a dataset of its own, ``<dataset>_staging_<tenant>``; all of them write the one
dataset, where rows carry a ``tenant`` column (primary key ``tenant, job_id``). Running them:
:mod:`avepoint_pipelines.load.tenant_runs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import dlt
from avepoint_dynamics import ConfigError, avepoint_dynamics, check_config_keys
from avepoint_dynamics.config_keys import section_keys
from dlt.common.configuration.providers.doc import BaseDocProvider

from .pipeline import Target
from .shared_dataset import staging_layout_of

SOURCE_NAME = "avepoint_dynamics"

_TENANT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: ``[sources.avepoint_dynamics_<tenant>]`` in a TOML file.
_SECTION = re.compile(rf"^{SOURCE_NAME}_([a-z][a-z0-9_]{{0,40}})$")
#: ``SOURCES__AVEPOINT_DYNAMICS_<TENANT>__<KEY>`` (``SOURCES__AVEPOINT_DYNAMICS__<KEY>`` is no tenant's).
_ENV_VAR = re.compile(rf"^SOURCES__{SOURCE_NAME.upper()}_([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*)__")


def section_of(tenant: str) -> str:
    """The config section of a tenant: ``avepoint_dynamics_<tenant>``.

    Raises:
        ConfigError: the name is not lower-case letters, digits and underscores.
    """
    if not _TENANT_NAME.match(tenant):
        raise ConfigError(
            "tenants", f"{tenant!r} is not a tenant name; use lower-case letters, digits and _"
        )
    return f"{SOURCE_NAME}_{tenant}"


def checked_tenants(tenants: Iterable[str]) -> list[str]:
    """The names, each valid and none twice, before anything runs.

    Raises:
        ConfigError: a name is not valid, or repeats.
    """
    names = list(tenants)
    for tenant in names:
        section_of(tenant)
    if len(set(names)) != len(names):
        raise ConfigError("tenants", f"tenant names repeat: {names}")
    _differ(names)
    return names


def _differ(names: list[str]) -> None:
    """Tenants that share credentials must not select the same jobs (``tenants_differ_by``)."""
    shared = dlt.config.get(f"sources.{SOURCE_NAME}.tenants_differ_by", str)
    if shared not in DIFFER_BY:
        return  # unset (each tenant has its own app), or refused per tenant when it runs
    seen: dict[str, str] = {}
    for tenant in names:
        value = dlt.config.get(f"sources.{section_of(tenant)}.{shared}", str)
        if value is None:
            continue
        other = seen.setdefault(str(value).strip().lower(), tenant)
        if other != tenant:
            raise ConfigError(
                shared,
                f"tenants {other!r} and {tenant!r} share credentials (tenants_differ_by) and both "
                f"set {shared} = {value!r}: they would load the same jobs twice",
                section=section_of(tenant),
            )


def tenant_target(target: Target, tenant: str) -> Target:
    """Where ``tenant`` goes: ``target``'s dataset, through its own pipeline and staging dataset.

    Example:
        >>> tenant_target(Target(), "contoso").pipeline_name
        'avepoint_dynamics_contoso'
    """
    section_of(tenant)
    return replace(
        target,
        pipeline_name=f"{target.pipeline_name}_{tenant}",
        staging_dataset_layout=staging_layout_of(target.destination, tenant),
    )


def tenant_source(tenant: str, **source_args: Any) -> Any:
    """The ``avepoint_dynamics`` source of one tenant, configured from its own section."""
    check_config_keys(section_of(tenant))
    check_tenant_section(tenant)
    # Only the config section is the tenant's: the source keeps its name, so the tenant's state sits
    # where `avepoint_dynamics(tenant=<name>)` keeps it (tenants.<name> of the jobs resource).
    return avepoint_dynamics.clone(section=section_of(tenant))(tenant=tenant, **source_args)


#: Filters tenants that share one app registration may differ by (``tenants_differ_by``).
DIFFER_BY = ("organization_id", "job_type", "object_type")


def check_tenant_section(tenant: str) -> None:
    """A tenant reads its own section; one without it would load the shared section's jobs as its own.

    A tenant's section holds its own credentials, unless ``[sources.avepoint_dynamics]`` says
    ``tenants_differ_by = "<filter>"``: then tenants share that section's credentials and each tenant's
    section sets the filter.

    Raises:
        ConfigError: the tenant has no section, or no credentials and no filter that sets it apart.
    """
    section = section_of(tenant)
    keys = {key for key, _ in section_keys(section)}
    env = f"SOURCES__{section.upper()}__..."
    if not keys:
        raise ConfigError(
            "",
            f"tenant {tenant!r} has no section of its own: add [sources.{section}] with its region "
            f"and credentials (or {env} env vars); without it the tenant would load the jobs of "
            "[sources.avepoint_dynamics] under its name",
            section=section,
        )
    if _has_credentials(keys) or not _has_credentials(k for k, _ in section_keys(SOURCE_NAME)):
        return  # its own, or none to borrow (dlt says which key is missing)
    shared = dlt.config.get(f"sources.{SOURCE_NAME}.tenants_differ_by", str)
    if not shared:
        raise ConfigError(
            "credentials",
            f"tenant {tenant!r} has no credentials of its own, so it would load the jobs of "
            f"[sources.{SOURCE_NAME}]'s app under its name: add credentials.client_id and its secret "
            f"to [sources.{section}], or, when tenants share one app registration, set "
            f'tenants_differ_by = "organization_id" in [sources.{SOURCE_NAME}] and organization_id '
            "in each tenant's section",
            section=section,
        )
    if shared not in DIFFER_BY:
        raise ConfigError(
            "tenants_differ_by", f"{shared!r} is not a filter; use one of {', '.join(DIFFER_BY)}"
        )
    if shared not in keys:
        raise ConfigError(
            shared,
            f"tenants share [sources.{SOURCE_NAME}]'s credentials and differ by {shared} "
            f"(tenants_differ_by), but tenant {tenant!r} sets no {shared} in [sources.{section}]",
            section=section,
        )


def _has_credentials(keys: Iterable[str]) -> bool:
    return any(key == "credentials" or key.startswith("credentials.") for key in keys)


def configured_tenants() -> list[str]:
    """The tenants that have a section in dlt config: TOML files (``.dlt/config.toml``, ``secrets.toml``)
    and ``SOURCES__AVEPOINT_DYNAMICS_<TENANT>__...`` env vars. Sorted; empty when there is none.

    Secret stores that answer one key at a time (a vault) cannot be listed: give the tenants in Python
    there (``build_definitions(tenants=[...])``).
    """
    found: set[str] = set()
    for name in os.environ:
        match = _ENV_VAR.match(name)
        if match:
            found.add(match.group(1).lower())
    providers = [*dlt.config.config_providers, *dlt.secrets.config_providers]
    for provider in providers:
        if not isinstance(provider, BaseDocProvider) or provider.is_empty:
            continue
        sources, _ = provider.get_value("sources", dict, None)  # type: ignore[arg-type]  # no pipeline
        for section in sources if isinstance(sources, dict) else ():
            match = _SECTION.match(str(section))
            if match:
                found.add(match.group(1))
    return sorted(found)
