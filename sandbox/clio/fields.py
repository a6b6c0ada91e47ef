"""Clio's `fields=` parameter: parsing, checking against a resource's catalog, projecting.

Clio answers 400 for an unknown field and for fields requested on a second-level nested
resource (`client{id,company{name}}`); a nested resource named without braces comes back
with its default fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


class FieldsError(ValueError):
    """The fields parameter is malformed or names something the resource does not have."""


@dataclass(frozen=True, slots=True)
class Nested:
    """A nested resource inside a record: the subfields it offers and those it shows by default."""

    fields: tuple[str, ...]
    defaults: tuple[str, ...] = ("id", "etag")


Catalog = Mapping[str, Nested | None]
"""Top-level field name to None (a plain value) or the nested resource it holds."""

Selection = dict[str, tuple[str, ...] | None]
"""Requested field name to the requested subfields (None: not given, use the defaults)."""

DEFAULT_SELECTION: Selection = {"id": None, "etag": None}


def parse_fields(raw: str | None, catalog: Catalog) -> Selection:
    if raw is None or not raw.strip():
        return dict(DEFAULT_SELECTION)
    selection: Selection = {}
    for item in _split_top_level(raw):
        name, sub = _split_item(item)
        if name not in catalog:
            raise FieldsError(f"Invalid field: {name}")
        nested = catalog[name]
        if sub is None:
            selection[name] = None
            continue
        if nested is None:
            raise FieldsError(f"Invalid field: {name} is not a nested resource")
        subfields = tuple(_check_subfield(name, part, nested) for part in sub.split(","))
        selection[name] = subfields
    return selection


def project(record: Any, selection: Selection, catalog: Catalog) -> Any:
    """The record cut down to the selection; keys the record lacks are left out.

    Raw test records may be anything, so whatever is not an object passes through untouched.
    """
    if not isinstance(record, dict):
        return record
    result: dict[str, Any] = {}
    for name, sub in selection.items():
        if name not in record:
            continue
        nested = catalog.get(name)
        value = record[name]
        if nested is None:
            result[name] = value
            continue
        keys = sub if sub is not None else nested.defaults
        if isinstance(value, list):
            result[name] = [_pick(element, keys) for element in value]
        else:
            result[name] = _pick(value, keys)
    return result


def all_fields(catalog: Catalog) -> str:
    """A fields parameter asking for everything the catalog offers."""
    parts = []
    for name, nested in catalog.items():
        parts.append(name if nested is None else f"{name}{{{','.join(nested.fields)}}}")
    return ",".join(parts)


def _pick(value: Any, keys: tuple[str, ...]) -> Any:
    if not isinstance(value, dict):
        return value
    return {key: value[key] for key in keys if key in value}


def _split_top_level(raw: str) -> list[str]:
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for char in raw:
        if char == "{":
            depth += 1
            if depth > 1:
                raise FieldsError("Fields may be nested only one level deep")
        elif char == "}":
            depth -= 1
            if depth < 0:
                raise FieldsError("Unbalanced braces in fields")
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise FieldsError("Unbalanced braces in fields")
    items.append("".join(current))
    return items


def _split_item(item: str) -> tuple[str, str | None]:
    item = item.strip()
    if "{" not in item:
        return _check_name(item), None
    if not item.endswith("}"):
        raise FieldsError(f"Malformed field: {item}")
    name, _, rest = item.partition("{")
    return _check_name(name.strip()), rest[:-1]


def _check_subfield(parent: str, part: str, nested: Nested) -> str:
    name = _check_name(part.strip())
    if name not in nested.fields:
        raise FieldsError(f"Invalid field: {parent}{{{name}}}")
    return name


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise FieldsError(f"Malformed field: {name!r}")
    return name
