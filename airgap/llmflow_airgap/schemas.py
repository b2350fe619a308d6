"""Validating merged values against a chart's `values.schema.json`, offline.

Helm validates the *coalesced* values (chart defaults plus every `-f` file) against the
schema, and a subchart's share against the subchart's schema, so that is what we do too.
Some schemas `$ref` a URL (app-template points at its library chart on GitHub); those are
resolved against the local reference copy instead of the network, and a reference we
cannot resolve locally is an error rather than a silent pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmflow_airgap.charts import ChartReference, condition_enabled
from llmflow_airgap.values import Values, coalesce


def _local_retriever(chart: ChartReference) -> Any:
    import json

    from referencing import Resource
    from referencing.exceptions import NoSuchResource
    from referencing.jsonschema import DRAFT7

    # Dependencies first: a remote $ref in a parent points at a library it depends on.
    roots = [*(dep.chart.path for dep in chart.dependencies.values()), chart.path]

    def retrieve(uri: str) -> Any:
        # Map `.../charts/library/<name>/<rest>` (or any URL ending in a file we hold) onto
        # the reference copies; the longest matching suffix wins.
        tail = uri.split("#", 1)[0].split("?", 1)[0]
        parts = tail.split("/")
        for start in range(len(parts)):
            for root in roots:
                candidate = Path(root, *parts[start:])
                if candidate.is_file():
                    contents = json.loads(candidate.read_text(encoding="utf-8"))
                    return Resource.from_contents(contents, default_specification=DRAFT7)
        raise NoSuchResource(ref=uri)  # type: ignore[call-arg]

    return retrieve


def _errors(schema: dict[str, Any], instance: Values, chart: ChartReference) -> Iterator[str]:
    from jsonschema import Draft7Validator, validators
    from referencing import Registry

    registry: Registry[Any] = Registry(retrieve=_local_retriever(chart))  # type: ignore[call-arg]
    # Only vLLM's schema is 2020-12; Bitnami's "http://json-schema.org/schema#" and APISIX's
    # https spelling of draft-07 name no draft jsonschema knows. Helm reads them as draft-07.
    is_2020 = "2020-12" in str(schema.get("$schema", ""))
    cls = validators.validator_for(schema) if is_2020 else Draft7Validator
    validator = cls(schema, registry=registry)
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in error.absolute_path) or "(root)"
        message = error.message if len(error.message) < 300 else error.message[:300] + "..."
        yield f"{where}: {message}"


def schema_errors(chart: ChartReference, merged: Values) -> Iterator[str]:
    """Errors of the merged values against the chart's schema and its enabled subcharts'."""
    if chart.schema is not None:
        yield from _errors(chart.schema, merged, chart)
    globals_ = merged.get("global") if isinstance(merged.get("global"), dict) else {}
    for key, dep in chart.dependencies.items():
        if dep.library or dep.chart.schema is None:
            continue
        if not condition_enabled(merged, dep.condition):
            continue
        raw_share = merged.get(key)
        share: Values = raw_share if isinstance(raw_share, dict) else {}
        sub_values = coalesce(dep.chart.defaults, share)
        if globals_:
            sub_values["global"] = coalesce(sub_values.get("global") or {}, globals_)
        for error in _errors(dep.chart.schema, sub_values, dep.chart):
            yield f"{key}.{error}"
