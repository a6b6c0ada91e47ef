"""Stripe's request encoding: form bodies and query strings with bracket notation.

`line_items[0][price_data][unit_amount]=500`, `metadata[firm_id]=f1`, `expand[]=x` and
`expand[0]=x` all arrive as flat pairs; `parse_params` turns them into the nested dicts and
lists Stripe's API documents. Values stay strings, as on the wire; the readers below coerce
them and answer with Stripe's own messages when they cannot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from sandbox.stripe.errors import StripeError, invalid_param, missing_param, unknown_param

Params = dict[str, Any]
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")
# Stripe's metadata limits.
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX = 40
METADATA_VALUE_MAX = 500


def parse_query(raw: str | bytes) -> Params:
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    return parse_params(parse_qsl(text, keep_blank_values=True))


def _split_key(key: str) -> list[str]:
    head, _, rest = key.partition("[")
    if not rest:
        return [key]
    segments = _SEGMENT.findall("[" + rest)
    if "[" + "][".join(segments) + "]" != "[" + rest:
        raise invalid_param(key, f"Invalid parameter name: {key}")
    return [head, *segments]


def parse_params(pairs: Iterable[tuple[str, str]]) -> Params:
    root: Params = {}
    for key, value in pairs:
        segments = _split_key(key)
        node = root
        for depth, segment in enumerate(segments):
            name = str(len(node)) if segment == "" else segment
            if depth == len(segments) - 1:
                node[name] = value
                break
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise invalid_param(key, f"Invalid parameter: {key} mixes a value and a hash")
            node = child
    converted = _listify(root)
    assert isinstance(converted, dict)
    return converted


def _listify(value: Any) -> Any:
    """Hashes whose keys are all indices become lists, in index order."""
    if not isinstance(value, dict):
        return value
    items = {key: _listify(item) for key, item in value.items()}
    if items and all(key.isdigit() for key in items):
        return [items[key] for key in sorted(items, key=int)]
    return items


def reject_unknown(params: Mapping[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
    known = set(allowed)
    for key in params:
        if key not in known:
            raise unknown_param(f"{prefix}[{key}]" if prefix else key)


def text(params: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise missing_param(name)
        return None
    if not isinstance(value, str):
        raise invalid_param(name, f"Invalid string: {name} must be a string")
    return value


def integer(
    params: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    minimum: int | None = None,
    label: str | None = None,
) -> int | None:
    label = label or name
    raw = text(params, name, required=required)
    if raw is None:
        return None
    if not re.fullmatch(r"-?\d+", raw):
        raise invalid_param(label, f"Invalid integer: {raw}", "parameter_invalid_integer")
    value = int(raw)
    if minimum is not None and value < minimum:
        kind = "positive integer" if minimum == 1 else f"integer (at least {minimum})"
        raise invalid_param(label, f"Invalid {kind}", "parameter_invalid_integer")
    return value


def boolean(params: Mapping[str, Any], name: str) -> bool | None:
    raw = text(params, name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise invalid_param(name, f"Invalid boolean: {raw}")
    return raw == "true"


def choice(params: Mapping[str, Any], name: str, options: tuple[str, ...]) -> str | None:
    value = text(params, name)
    if value is not None and value not in options:
        raise invalid_param(name, f"Invalid {name}: must be one of {', '.join(options)}")
    return value


def hash_param(params: Mapping[str, Any], name: str) -> Params:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid_param(name, f"Invalid object: {name} must be a hash")
    return value


def list_param(params: Mapping[str, Any], name: str) -> list[Any]:
    value = params.get(name)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        raise invalid_param(name, f"Invalid array: {name} must be an array")
    return value


def expand_list(params: Mapping[str, Any]) -> list[str]:
    return [str(item) for item in list_param(params, "expand")]


def metadata(
    params: Mapping[str, Any], name: str = "metadata", current: Params | None = None
) -> Params:
    """Stripe's metadata rules: string values, an empty value deletes the key, 50 keys at
    most, keys up to 40 and values up to 500 characters."""
    result: Params = dict(current or {})
    raw = params.get(name)
    if raw is None or raw == "":
        return result
    if isinstance(raw, list):  # keys 0..n were read as indices: they are keys here
        raw = {str(index): value for index, value in enumerate(raw)}
    if not isinstance(raw, dict):
        raise invalid_param(name, "Invalid object: metadata must be a hash of strings")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise invalid_param(f"{name}[{key}]", "Invalid string: metadata values are strings")
        if len(key) > METADATA_KEY_MAX:
            raise invalid_param(
                f"{name}[{key}]", f"Metadata keys can have up to {METADATA_KEY_MAX} characters."
            )
        if len(value) > METADATA_VALUE_MAX:
            raise invalid_param(
                f"{name}[{key}]",
                f"Metadata values can have up to {METADATA_VALUE_MAX} characters.",
            )
        if value == "":
            result.pop(key, None)
        else:
            result[key] = value
    if len(result) > METADATA_MAX_KEYS:
        raise StripeError(400, f"Metadata can have up to {METADATA_MAX_KEYS} keys.", param=name)
    return result
