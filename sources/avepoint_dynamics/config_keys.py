"""Keys written under the source's config sections that nothing reads: a typo is an error, not a no-op.

dlt reads the keys a source asks for and never says that ``regoin = "us"`` or
``SOURCES__AVEPOINT_DYNAMICS__PAGESIZE`` went unread. Before the first request the source lists what its
sections hold (``.dlt/*.toml`` and the other document providers, and the names of env vars under its
prefix) and refuses a key it does not know, naming the closest known one. Providers that answer one key
at a time (a vault) cannot be listed: keys there are not checked.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import dlt
from dlt.common.configuration.providers.doc import BaseDocProvider

from .errors import ConfigError

#: Sub-sections dlt itself reads under a source's section: the source's name and its resources'.
SUB_SECTIONS = frozenset({"avepoint_dynamics", "jobs"})


def section_keys(section: str) -> Iterator[tuple[str, str]]:
    """Every key written under ``sources.<section>``: ``(dotted key, where it is written)``.

    Nested keys are dotted (``credentials.client_id``); env vars are listed by name only (their values
    are never read here).
    """
    seen: set[int] = set()
    for provider in [*dlt.config.config_providers, *dlt.secrets.config_providers]:
        if id(provider) in seen or not isinstance(provider, BaseDocProvider) or provider.is_empty:
            continue
        seen.add(id(provider))
        sources, _ = provider.get_value("sources", dict, None)  # type: ignore[arg-type]
        body = sources.get(section) if isinstance(sources, dict) else None
        if isinstance(body, dict):
            where = getattr(provider, "name", "a config file")
            for key in _flatten(body):
                yield key, f"[sources.{section}] of {where}"
    prefix = f"SOURCES__{section.upper()}__"
    for name in os.environ:
        if name.startswith(prefix) and len(name) > len(prefix):
            yield name[len(prefix) :].lower().replace("__", "."), name


def check_section_keys(section: str, known: Iterable[str]) -> None:
    """Refuse a key under ``sources.<section>`` that is not one of ``known`` (dotted names).

    Raises:
        ConfigError: naming the key, where it is written, and the closest known key.
    """
    allowed = set(known)
    for key, where in section_keys(section):
        parts = key.split(".")
        while parts and parts[0] in SUB_SECTIONS and ".".join(parts) not in allowed:
            parts = parts[1:]  # [sources.x.jobs] / [sources.x.avepoint_dynamics]: same keys
        plain = ".".join(parts)
        if not plain or plain in allowed:
            continue
        closest = difflib.get_close_matches(plain, sorted(allowed), n=1, cutoff=0.6)
        if not closest:
            flat = plain.replace("_", "").replace(".", "")
            closest = [k for k in allowed if k.replace("_", "").replace(".", "") == flat]
        if where.startswith("SOURCES__"):
            hint = (
                f"; did you mean SOURCES__{section.upper()}__{closest[0].upper().replace('.', '__')}?"
                if closest
                else ""
            )
            problem = f"{where} names no key of this source{hint}"
        else:
            hint = f"; did you mean {closest[0]}?" if closest else ""
            problem = f"unknown key {plain!r} in {where}{hint}"
        raise ConfigError(plain, problem, section=section)


def _flatten(body: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in body.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
