"""Dify's ``metadata_condition``, applied to our result metadata.

Dify (External Knowledge API) sends ``{"logical_operator": "and"|"or", "conditions":
[{"name": [field, ...], "comparison_operator": op, "value": v}]}`` with the comparison
operators of its metadata filter UI. ``name`` may be one field or a list (any match counts).
Unknown operators are a client error, never silently ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from llmflow.errors import InvalidRequest


class Condition(BaseModel):
    name: list[str] | str
    comparison_operator: str
    value: Any = None

    @property
    def names(self) -> list[str]:
        return [self.name] if isinstance(self.name, str) else list(self.name)


class MetadataCondition(BaseModel):
    logical_operator: Literal["and", "or"] = "and"
    conditions: list[Condition] = Field(default_factory=list)


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"metadata value {v!r} is not a number") from exc


def _time(v: Any) -> float:
    if isinstance(v, int | float):
        return float(v)
    try:
        return datetime.fromisoformat(str(v)).timestamp()
    except ValueError as exc:
        raise InvalidRequest(f"metadata value {v!r} is not a date/time") from exc


def _is_empty(v: Any) -> bool:
    return v is None or v == "" or v == [] or v == {}


def _contains(field: Any, value: Any) -> bool:
    if isinstance(field, list):
        return value in field or any(str(value) in str(x) for x in field)
    return str(value) in str(field)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "contains": lambda f, v: not _is_empty(f) and _contains(f, v),
    "not contains": lambda f, v: _is_empty(f) or not _contains(f, v),
    "start with": lambda f, v: str(f).startswith(str(v)) if f is not None else False,
    "end with": lambda f, v: str(f).endswith(str(v)) if f is not None else False,
    "is": lambda f, v: f is not None and str(f) == str(v),
    "is not": lambda f, v: f is None or str(f) != str(v),
    "empty": lambda f, v: _is_empty(f),
    "not empty": lambda f, v: not _is_empty(f),
    "=": lambda f, v: f is not None and _num(f) == _num(v),
    "≠": lambda f, v: f is None or _num(f) != _num(v),
    "!=": lambda f, v: f is None or _num(f) != _num(v),
    ">": lambda f, v: f is not None and _num(f) > _num(v),
    "<": lambda f, v: f is not None and _num(f) < _num(v),
    "≥": lambda f, v: f is not None and _num(f) >= _num(v),
    ">=": lambda f, v: f is not None and _num(f) >= _num(v),
    "≤": lambda f, v: f is not None and _num(f) <= _num(v),
    "<=": lambda f, v: f is not None and _num(f) <= _num(v),
    "before": lambda f, v: f is not None and _time(f) < _time(v),
    "after": lambda f, v: f is not None and _time(f) > _time(v),
    "in": lambda f, v: f is not None and str(f) in [str(x) for x in (v or [])],
    "not in": lambda f, v: f is None or str(f) not in [str(x) for x in (v or [])],
}


def validate(condition: MetadataCondition) -> None:
    for c in condition.conditions:
        if c.comparison_operator not in _OPS:
            raise InvalidRequest(
                f"unsupported comparison_operator {c.comparison_operator!r}; "
                f"supported: {', '.join(sorted(_OPS))}"
            )


def matches(metadata: Mapping[str, Any], condition: MetadataCondition | None) -> bool:
    if condition is None or not condition.conditions:
        return True
    results = []
    for c in condition.conditions:
        op = _OPS[c.comparison_operator]
        results.append(any(op(metadata.get(name), c.value) for name in c.names))
    return all(results) if condition.logical_operator == "and" else any(results)
