"""Helm values as data: loading, Helm's merge rule, and walking key paths.

`helm install -f a.yaml -f b.yaml` coalesces the chart defaults with each file in turn:
maps merge key by key, anything else (lists included) replaces, and an explicit `null`
deletes the default. Validation must see exactly what Helm will render with, so the merge
here follows that rule rather than a generic deep-merge.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Values = dict[str, Any]


class ValuesFileError(ValueError):
    """A values file that is not a YAML mapping."""


def load_values(path: Path) -> Values:
    """Load one values file; an empty file is an empty mapping."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValuesFileError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValuesFileError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def coalesce(base: Values, override: Values) -> Values:
    """Merge `override` onto `base` the way Helm merges a `-f` file onto the defaults."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = coalesce(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def format_path(parts: tuple[str | int, ...]) -> str:
    """`("api", "extraEnv", 0, "name")` -> `api.extraEnv[0].name`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def walk(
    tree: Any, prefix: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every (path, value) pair, parents before children."""
    yield prefix, tree
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from walk(value, (*prefix, str(key)))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from walk(value, (*prefix, index))


def compile_path_pattern(pattern: str) -> re.Pattern[str]:
    """A dotted pattern with `*` (one key or `[n]`) as a regex over `format_path` output."""
    regex = ""
    for i, part in enumerate(pattern.split(".")):
        if part == "*":
            regex += r"(?:\.?[^.\[\]]+|\[\d+\])" if i else r"(?:[^.\[\]]+)"
        else:
            regex += ("" if i == 0 else r"\.") + re.escape(part).replace(r"\[\*\]", r"\[\d+\]")
    return re.compile(regex)


def under_any(path: str, patterns: list[re.Pattern[str]]) -> bool:
    """True if `path` is one of the patterns or lies below one."""
    for pattern in patterns:
        match = pattern.match(path)
        if match and (match.end() == len(path) or path[match.end()] in ".["):
            return True
    return False
