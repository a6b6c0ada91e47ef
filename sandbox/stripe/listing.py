"""List pages and `expand[]`, the way Stripe answers them."""

from __future__ import annotations

import copy
from collections.abc import Callable

from sandbox.stripe import forms
from sandbox.stripe.errors import invalid_param, no_such
from sandbox.stripe.forms import Params
from sandbox.stripe.objects import Obj, list_object
from sandbox.stripe.state import SandboxState

LIST_PARAMS = ("limit", "starting_after", "ending_before", "expand")
MAX_LIMIT = 100


def paginate(
    state: SandboxState,
    items: list[Obj],
    params: Params,
    url: str,
    filters: dict[str, Callable[[Obj, str], bool]] | None = None,
) -> Obj:
    """One page of `items` (newest first), after the list's own filters."""
    filters = filters or {}
    forms.reject_unknown(params, (*LIST_PARAMS, *filters))
    for name, keep in filters.items():
        wanted = forms.text(params, name)
        if wanted is not None:
            items = [item for item in items if keep(item, wanted)]
    limit = forms.integer(params, "limit", minimum=1) or 10
    if limit > MAX_LIMIT:
        raise invalid_param("limit", f"This value must be less than or equal to {MAX_LIMIT}.")
    after = forms.text(params, "starting_after")
    before = forms.text(params, "ending_before")
    ids = [item["id"] for item in items]
    if after is not None:
        start = _position(ids, after, "starting_after") + 1
        page = items[start : start + limit]
        has_more = start + limit < len(items)
    elif before is not None:
        end = _position(ids, before, "ending_before")
        page = items[max(end - limit, 0) : end]
        has_more = end - limit > 0
    else:
        page, has_more = items[:limit], len(items) > limit
    return list_object(url, page, has_more)


def _position(ids: list[str], object_id: str, param: str) -> int:
    if object_id not in ids:
        raise no_such("object", object_id, param=param, status=400)
    return ids.index(object_id)


def render(state: SandboxState, obj: Obj, params: Params) -> Obj:
    """A copy of `obj` with the requested `expand[]` paths replaced by their objects."""
    result = copy.deepcopy(obj)
    for path in forms.expand_list(params):
        _expand(state, result, path.split("."), path)
    return result


def _expand(state: SandboxState, node: Obj, segments: list[str], path: str) -> None:
    head, rest = segments[0], segments[1:]
    if node.get("object") == "list" and head == "data" and rest:
        for item in node["data"]:
            _expand(state, item, rest, path)
        return
    if node.get("object") == "checkout.session" and head == "line_items":
        items = state.line_items.get(node["id"], [])
        node["line_items"] = list_object(
            f"/v1/checkout/sessions/{node['id']}/line_items", copy.deepcopy(items)
        )
        return
    if head not in node:
        raise invalid_param("expand", f"This property cannot be expanded ({path}).")
    value = node[head]
    if isinstance(value, str):
        found = state.find(value)
        if found is None:
            raise invalid_param("expand", f"This property cannot be expanded ({path}).")
        value = node[head] = copy.deepcopy(found)
    if not rest or value is None:
        return
    if not isinstance(value, dict):
        raise invalid_param("expand", f"This property cannot be expanded ({path}).")
    _expand(state, value, rest, path)
