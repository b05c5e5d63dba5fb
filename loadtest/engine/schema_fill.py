"""A small JSON value that validates against a JSON schema: what a real engine's guided decoding
(vLLM's structured outputs) guarantees for `response_format` json_schema and for tool arguments.

Covers what agent frameworks send: pydantic / zod output (`$ref` into `$defs` or `definitions`,
`anyOf` for Optional and unions, `allOf` wrappers, `additionalProperties: false`, `required`),
`enum` / `const`, type lists, string `minLength` / `maxLength` / `format` / simple `pattern`s,
number bounds (`minimum`, `exclusiveMinimum`, `multipleOf` ...), array `minItems` / `maxItems` /
`prefixItems` / `uniqueItems`, object `minProperties`. Every property is filled, required or not
(a strict schema requires them all). Unknown keywords are ignored.
"""

from __future__ import annotations

import math
import re
from typing import Any, TypeGuard

MAX_DEPTH = 8
_FORMATS = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com",
    "url": "https://example.com",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "duration": "P1D",
}


def fill(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A value valid against `schema` (resolving `#/...` references against `root`)."""
    root = schema if root is None else root
    if schema is True or not isinstance(schema, dict):
        return "example"
    schema = _resolve(schema, root)
    if depth > MAX_DEPTH:
        return _shallow(schema)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "allOf" in schema:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            merged = _merge(merged, _resolve(part, root))
        return fill(merged, root, depth + 1)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if options:
            # the first non-null branch (Optional[X] is anyOf [X, null]); siblings apply too
            rest = {k: v for k, v in schema.items() if k != key}
            pick = next((o for o in options if _resolve(o, root).get("type") != "null"), options[0])
            return fill(_merge(rest, _resolve(pick, root)), root, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, root, depth)
    if kind == "array":
        return _array(schema, root, depth)
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def _resolve(schema: Any, root: Any, hops: int = 0) -> dict[str, Any]:
    if not isinstance(schema, dict):
        return {}
    ref = schema.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#") or hops > 32:
        return schema
    node: Any = root
    for part in ref.lstrip("#").strip("/").split("/") if ref != "#" else []:
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part) if isinstance(node, dict) else None
    extra = {k: v for k, v in schema.items() if k != "$ref"}
    return _merge(_resolve(node, root, hops + 1) if isinstance(node, dict) else {}, extra)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if k == "properties" and isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = {**out[k], **v}
        elif k == "required" and isinstance(out.get(k), list) and isinstance(v, list):
            out[k] = list(dict.fromkeys([*out[k], *v]))
        else:
            out[k] = v
    return out


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        if "properties" in schema or "required" in schema or "additionalProperties" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
            return "number"
        return "string"
    return kind


def _shallow(schema: dict[str, Any]) -> Any:
    """Past MAX_DEPTH: the smallest value of the type (a recursive schema ends here)."""
    kind = _kind(schema)
    return {"object": {}, "array": [], "integer": 0, "number": 0, "boolean": True, "null": None}.get(kind or "", "")


def _object(schema: dict[str, Any], root: Any, depth: int) -> dict[str, Any]:
    props = schema.get("properties") or {}
    out = {name: fill(sub, root, depth + 1) for name, sub in props.items()}
    extra = schema.get("additionalProperties")
    for name in schema.get("required") or ():  # required but not described in properties
        if name not in out:
            out[name] = fill(extra, root, depth + 1) if isinstance(extra, dict) else "example"
    i = 0
    while len(out) < int(schema.get("minProperties") or 0):
        out[f"key{i}"] = fill(extra, root, depth + 1) if isinstance(extra, dict) else "example"
        i += 1
    return out


def _array(schema: dict[str, Any], root: Any, depth: int) -> list[Any]:
    prefix = [fill(s, root, depth + 1) for s in schema.get("prefixItems") or ()]
    items = schema.get("items")
    lo = int(schema.get("minItems") or 0)
    hi = schema.get("maxItems")
    count = max(lo, len(prefix), 1 if items not in (None, False) else 0)
    if hi is not None:
        count = min(count, int(hi))
    out = prefix[:count]
    unique = bool(schema.get("uniqueItems"))
    while len(out) < count:
        value = fill(items, root, depth + 1) if isinstance(items, dict) else "example"
        if unique:
            value = _distinct(value, len(out))
        out.append(value)
    return out


def _distinct(value: Any, i: int) -> Any:
    if isinstance(value, str):
        return value + str(i) if i else value
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value + i
    return value


def _string(schema: dict[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format", "")), "example")
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        text = _from_pattern(pattern, text)
    lo = int(schema.get("minLength") or 0)
    hi = schema.get("maxLength")
    if len(text) < lo:
        text = text + "x" * (lo - len(text))
    if hi is not None and len(text) > int(hi):
        text = text[: int(hi)]
    return text


def _from_pattern(pattern: str, fallback: str) -> str:
    """A string matching a simple pattern: the fallback if it matches, else a few literal guesses."""
    try:
        rx = re.compile(pattern)
    except re.error:
        return fallback
    for guess in (fallback, "example", "a", "A", "0", "a1", "2024-01-01", ""):
        if rx.search(guess):
            return guess
    return fallback


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    """1 (1.5 for a number) moved inside the bounds, rounded to multipleOf."""
    value: float = 1 if integer else 1.5
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    step = schema.get("multipleOf")
    step = step if _num(step) and step > 0 else None
    nudge = 1 if integer else (step or 0.5)
    if _num(lo):
        value = max(value, lo)
    if _num(xlo):
        value = max(value, xlo + nudge)
    if _num(hi):
        value = min(value, hi)
    if _num(xhi):
        value = min(value, xhi - nudge)
    if step:
        value = math.ceil(value / step) * step
        if (_num(hi) and value > hi) or (_num(xhi) and value >= xhi):
            value -= step
    if integer:
        return math.ceil(value) if not (_num(hi) and math.ceil(value) > hi) else math.floor(value)
    return value


def _num(v: Any) -> TypeGuard[int | float]:
    return isinstance(v, int | float) and not isinstance(v, bool)
