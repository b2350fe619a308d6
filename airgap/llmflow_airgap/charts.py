"""Reference copies of upstream charts: defaults, schema and subcharts.

The offline host cannot download charts, so validation reads a directory of each chart's
data files (`Chart.yaml`, `values.yaml`, `values.schema.json`, and the same for dependencies
under `charts/<name>/`). Values for a dependency live under its alias in the parent, which is
why aliases are resolved here once, from the parent's own dependency list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmflow_airgap.errors import ChartReferenceError
from llmflow_airgap.values import Values, load_values


@dataclass(frozen=True)
class Dependency:
    """A subchart as its parent declares it."""

    key: str  # the alias if one is set, otherwise the chart name
    condition: str | None
    chart: ChartReference
    library: bool


@dataclass(frozen=True)
class ChartReference:
    """One chart's data files."""

    path: Path
    name: str
    version: str
    defaults: Values
    schema: dict[str, Any] | None
    dependencies: dict[str, Dependency] = field(default_factory=dict)

    def root_defaults(self) -> Values:
        """Defaults as the parent's templates see them.

        Library charts (bjw-s `common`) merge their defaults into the parent's root instead of
        living under a key, so their keys count as the parent's own.
        """
        out: Values = {}
        for dep in self.dependencies.values():
            if dep.library:
                out.update(dep.chart.defaults)
        out.update(self.defaults)
        return out


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ChartReferenceError(f"cannot read {path}: {exc}") from exc


def _declared_dependencies(path: Path, chart_yaml: dict[str, Any]) -> list[dict[str, Any]]:
    deps = chart_yaml.get("dependencies")
    if deps is None and (path / "requirements.yaml").is_file():
        # apiVersion v1 charts (milvus) keep them in requirements.yaml.
        deps = (_read_yaml(path / "requirements.yaml") or {}).get("dependencies")
    return list(deps or [])


def load_chart_reference(path: Path) -> ChartReference:
    """Load a chart directory and its dependencies (recursively)."""
    chart_file = path / "Chart.yaml"
    if not chart_file.is_file():
        raise ChartReferenceError(f"{path} has no Chart.yaml")
    chart_yaml = _read_yaml(chart_file) or {}
    values_file = path / "values.yaml"
    defaults = load_values(values_file) if values_file.is_file() else {}
    schema: dict[str, Any] | None = None
    schema_file = path / "values.schema.json"
    if schema_file.is_file():
        try:
            schema = json.loads(schema_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ChartReferenceError(f"cannot read {schema_file}: {exc}") from exc
    deps: dict[str, Dependency] = {}
    for dep in _declared_dependencies(path, chart_yaml):
        name = str(dep["name"])
        sub_path = path / "charts" / name
        if not (sub_path / "Chart.yaml").is_file():
            continue
        sub = load_chart_reference(sub_path)
        sub_yaml = _read_yaml(sub_path / "Chart.yaml") or {}
        key = str(dep.get("alias") or name)
        condition = dep.get("condition")
        deps[key] = Dependency(
            key=key,
            condition=str(condition) if condition else None,
            chart=sub,
            library=sub_yaml.get("type") == "library",
        )
    return ChartReference(
        path=path,
        name=str(chart_yaml.get("name", path.name)),
        version=str(chart_yaml.get("version", "")),
        defaults=defaults,
        schema=schema,
        dependencies=deps,
    )


def condition_enabled(values: Values, condition: str | None) -> bool:
    """Evaluate a Helm dependency condition (`a.b.enabled`, comma = first path found)."""
    if not condition:
        return True
    for path in condition.split(","):
        node: Any = values
        found = True
        for part in path.strip().split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                found = False
                break
        if found and isinstance(node, bool):
            return node
    return True
