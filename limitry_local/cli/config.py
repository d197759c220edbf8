"""Limits as code: reading a TOML, YAML or JSON file into the limits it declares.

The file is the whole desired state of each limit it names: a field left out
takes its default (``per = []``, ``enabled = true``, ...), it does not mean
"keep what the ledger has".  Keys take the wire's camelCase or snake_case,
as the library's models do.

    [[rate_limits]]
    name = "rpm"
    limit_value = 60
    window = "minute"
    per = ["customer_id"]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from limitry_local.cli.exits import CliError
from limitry_local.errors import InvalidRequestError, parse
from limitry_local.models import QuotaCreate, RateLimitCreate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

C = TypeVar("C", RateLimitCreate, QuotaCreate)

SUFFIXES = (".toml", ".yaml", ".yml", ".json")
# Each section under both spellings, as the models take both.
_SECTIONS = {"rate_limits": "rate_limits", "rateLimits": "rate_limits", "quotas": "quotas"}


@dataclass(frozen=True)
class LimitsConfig:
    """What a config file declares, validated by the same models as ``create``."""

    rate_limits: list[RateLimitCreate]
    quotas: list[QuotaCreate]


def load(path: Path) -> LimitsConfig:
    """Read and validate ``path``; every failure is a :class:`CliError` naming file and field."""
    return parse_document(read_document(path), str(path))


def read_document(path: Path) -> object:
    """The file's content as plain data, the format chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise CliError(
            f"{path}: unknown config format {suffix or '(no suffix)'!r}; use .toml, "
            ".yaml, .yml or .json"
        )
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        # Its str() spans lines (the mark, a caret); one line reads better on stderr.
        where = " ".join(str(exc).split()).replace('in "<unicode string>", ', "")
        raise CliError(f"{path}: not valid YAML: {where}") from None


def parse_document(document: object, source: str) -> LimitsConfig:
    """Validate already-read data; ``source`` names it in error messages."""
    if document is None:
        document = {}  # an empty YAML file declares no limits
    if not isinstance(document, Mapping):
        raise CliError(
            f"{source}: the top level must be a table/mapping with rate_limits and quotas, "
            f"got {type(document).__name__}"
        )
    sections: dict[str, Any] = {}
    for key, value in document.items():
        section = _SECTIONS.get(key) if isinstance(key, str) else None
        if section is None:
            raise CliError(f"{source}: {key!r}: unknown section; expected rate_limits or quotas")
        if section in sections:
            raise CliError(f"{source}: rate_limits is given twice (rate_limits and rateLimits)")
        sections[section] = value
    return LimitsConfig(
        rate_limits=_entries(RateLimitCreate, sections.get("rate_limits"), "rate_limits", source),
        quotas=_entries(QuotaCreate, sections.get("quotas"), "quotas", source),
    )


def _entries(model: type[C], value: object, section: str, source: str) -> list[C]:
    if value is None:
        return []
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise CliError(f"{source}: {section}: must be a list of tables/mappings")
    entries: list[C] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(value):
        where = f"{section}[{index}]"
        if not isinstance(entry, Mapping):
            raise CliError(f"{source}: {where}: must be a table/mapping of fields")
        name = entry.get("name")
        if isinstance(name, str) and name:
            where += f" ({name!r})"
        try:
            created = parse(model, entry, {}, prefix=f"{where}.")
        except InvalidRequestError as exc:
            raise CliError(f"{source}: {exc.message}") from None
        # Limits are matched to the ledger by name, so a name may appear once per section.
        first = seen.setdefault(created.name, index)
        if first != index:
            raise CliError(
                f"{source}: {section}[{first}] and {section}[{index}] are both named "
                f"{created.name!r}; names identify limits, so each must be unique in its section"
            )
        entries.append(created)
    return entries
