"""Limits as code: reading a TOML, YAML or JSON file into the limits it declares.

The file is the whole desired state of each limit it names: a field left out
takes its default (``per = []``, ``enabled = true``, ...), it does not mean
"keep what the ledger has".  Keys take the wire's camelCase or snake_case,
as the library's models do.  The fields a ledger gives a limit (``id``,
``projectId``, ``createdAt``, ``updatedAt``) are ignored, so the output of
``limits list --json`` applies to another ledger as it is.

    [[rate_limits]]
    name = "rpm"
    limit_value = 60
    window = "minute"
    per = ["customer_id"]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from limitry_local.cli.exits import CliError
from limitry_local.errors import InvalidRequestError
from limitry_local.limits_as_code import LimitsConfig, parse_limits

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


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
            return json.loads(text, object_pairs_hook=_unique_keys)
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKeyError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path}: not valid TOML: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        # Its str() spans lines (the mark, a caret); one line reads better on stderr.
        where = " ".join(str(exc).split()).replace('in "<unicode string>", ', "")
        raise CliError(f"{path}: not valid YAML: {where}") from None
    except RecursionError:
        raise CliError(f"{path}: nested too deeply to read") from None
    except ValueError as exc:
        # An integer of more digits than Python converts (4300): the first clause of
        # the message says so; the rest advises a Python call no user of a CLI can make.
        raise CliError(f"{path}: cannot read the file ({str(exc).split(';')[0]})") from None


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refusing a key given twice (``json`` keeps the last silently)."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(f"the key {key!r} is given twice in one object")
        document[key] = value
    return document


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, refusing a key given twice in one mapping.

    PyYAML keeps the last value silently, where TOML refuses the file.  Keys
    brought in by a merge (``<<: *defaults``) may still be overridden.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class says so
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


LEDGER_FIELDS = frozenset(
    {"id", "projectId", "project_id", "createdAt", "created_at", "updatedAt", "updated_at"}
)
"""What a ledger gives a limit, in either spelling: in a file, ignored (limits match by name)."""


def parse_document(document: object, source: str) -> LimitsConfig:
    """Validate already-read data; ``source`` names it in error messages."""
    try:
        return parse_limits(_declared(document))
    except InvalidRequestError as exc:
        raise CliError(f"{source}: {exc.message}") from None


def _declared(document: object) -> object:
    """``document`` without the :data:`LEDGER_FIELDS` of its entries; anything else as it is."""
    if not isinstance(document, Mapping):
        return document
    return {
        key: [
            {name: value for name, value in entry.items() if name not in LEDGER_FIELDS}
            if isinstance(entry, Mapping)
            else entry
            for entry in section
        ]
        if isinstance(section, list)
        else section
        for key, section in document.items()
    }
