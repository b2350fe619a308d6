"""Are our values keys ones the upstream chart actually reads?

Helm silently ignores a misspelt key, so a typo in `helm-values/` (`extraEnvs` for
`extraEnv`, a key that moved between chart versions) ships a platform that quietly runs on
defaults. The only offline evidence of what a chart reads is its `values.yaml` (and its
schema), so every key path we set must exist there, or sit under a mapping the chart leaves
open (an empty `{}` default, a `null` default, or a path `platform.yaml` documents as
free-form with a reason).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from llmflow_airgap.charts import ChartReference
from llmflow_airgap.values import format_path, under_any

Path = tuple[str | int, ...]

# Kubernetes objects that charts copy verbatim with `toYaml` into a pod or resource spec: their
# inner keys are Kubernetes' (checked by the API server and by kubernetes-validate on our own
# manifests), not the chart's, so charts list only an example or nothing at all.
KUBERNETES_PASSTHROUGH = frozenset(
    {
        "resources",
        "securityContext",
        "podSecurityContext",
        "containerSecurityContext",
        "labels",
        "annotations",
        "podLabels",
        "podAnnotations",
        "nodeSelector",
        "affinity",
        "tolerations",
        "topologySpreadConstraints",
    }
)


def unknown_keys(
    ours: dict[str, Any], chart: ChartReference, free_form: list[re.Pattern[str]]
) -> Iterator[tuple[str, str]]:
    """Yield (key path, reason) for every key the chart does not know."""
    yield from _check_mapping(ours, chart.root_defaults(), (), chart, free_form)


def _check_mapping(
    ours: dict[str, Any],
    upstream: dict[str, Any],
    path: Path,
    chart: ChartReference,
    free_form: list[re.Pattern[str]],
) -> Iterator[tuple[str, str]]:
    if not upstream:
        return  # `{}` default: the chart takes any keys here (labels, extra config...)
    for key, value in ours.items():
        child = (*path, str(key))
        text = format_path(child)
        if under_any(text, free_form) or key in KUBERNETES_PASSTHROUGH:
            continue
        dep = chart.dependencies.get(str(key)) if not path else None
        if dep is not None and not dep.library:
            # A subchart reads its own defaults plus whatever the parent sets under its key.
            if isinstance(value, dict):
                share = upstream.get(key)
                parent_share: dict[str, Any] = share if isinstance(share, dict) else {}
                sub_upstream = _union(dep.chart.root_defaults(), parent_share)
                yield from _check_mapping(value, sub_upstream, child, dep.chart, free_form)
            continue
        if key in upstream:
            yield from _check_node(value, upstream[key], child, chart, free_form)
            continue
        if key == "global":
            continue  # every chart accepts `global`; subcharts read what they know
        yield text, f"not a key of {chart.name} {chart.version} values.yaml"


def _union(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Keys of both trees; unlike Helm's merge a `null` keeps its key (it still names one)."""
    out = dict(a)
    for key, value in b.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _union(out[key], value)
        elif key not in out or value is not None:
            out[key] = value
    return out


def _check_node(
    ours: Any,
    upstream: Any,
    path: Path,
    chart: ChartReference,
    free_form: list[re.Pattern[str]],
) -> Iterator[tuple[str, str]]:
    if not isinstance(ours, dict) or upstream is None:
        return  # scalars and lists replace wholesale; the schema (if any) types them
    if isinstance(upstream, dict):
        yield from _check_mapping(ours, upstream, path, chart, free_form)
    elif upstream not in ("", [], 0, False):
        yield format_path(path), f"is a {type(upstream).__name__} upstream, not a mapping"
