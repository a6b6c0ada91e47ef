"""JSON output with money as numbers carrying two decimals (`1250.00`), as Clio writes them.

The standard encoder can only write floats, which drop the trailing zero (`1250.0`) and
would let a client that parses amounts by text pass here and fail against Clio.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from starlette.responses import JSONResponse

from sandbox.clio.records import to_cents

# What `json.dumps(text, ensure_ascii=False)` calls, without its per-call set-up: a page
# of 200 records has thousands of leaves.
_string: Callable[[str], str] = json.encoder.encode_basestring  # type: ignore[attr-defined]


def encode(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return _string(value)
    if kind is int:
        return int.__repr__(value)
    if value is None:
        return "null"
    if kind is dict:
        members = (f"{_string(str(key))}:{encode(item)}" for key, item in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, Decimal):
        return format(to_cents(value), "f")
    if isinstance(value, dict):
        members = (f"{json.dumps(str(key))}:{encode(item)}" for key, item in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(item) for item in value) + "]"
    if isinstance(value, datetime | date):
        return json.dumps(value.isoformat())
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


class ClioJSONResponse(JSONResponse):
    # The content type Clio's OpenAPI document declares for every JSON response.
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return encode(content).encode("utf-8")
