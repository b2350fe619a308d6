"""`llmflow-airgap validate`: check the distribution files before anything is bundled.

Checks, in order: `platform.yaml` against its schema; each component's values files (keys
known to the upstream chart, merged values against the chart's schema for every profile,
images listed in the bill of materials, pinned and not from `bitnamilegacy`, no inline
credentials); the air-gap overlay redirects every image of the component to the site
registry; our own Kubernetes manifests against the Kubernetes OpenAPI schemas; the
monitoring files parse. Every problem is collected (not just the first) so one run tells
the operator everything to fix.
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from llmflow_airgap.charts import ChartReference, load_chart_reference
from llmflow_airgap.errors import ChartReferenceError, PlatformFileError
from llmflow_airgap.findings import Check, Finding, Notice
from llmflow_airgap.images import ImageRef, ImageRefError, images_in_values, parse_image
from llmflow_airgap.keys import unknown_keys
from llmflow_airgap.platform import Component, Platform, Profile, load_platform
from llmflow_airgap.schemas import schema_errors
from llmflow_airgap.secrets import inline_secrets
from llmflow_airgap.values import (
    Values,
    ValuesFileError,
    coalesce,
    compile_path_pattern,
    load_values,
)

DEFAULT_KUBERNETES_VERSION = "1.31.0"


@dataclass
class Report:
    """Everything one validation run found."""

    findings: list[Finding] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    checked_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, check: Check, file: str, location: str, message: str) -> None:
        self.findings.append(Finding(check, file, location, message))


@dataclass(frozen=True)
class ValidationInput:
    """Where things are: the repository root, `platform.yaml`, the chart reference copies."""

    repo_root: Path
    platform_file: Path
    charts_dir: Path | None
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION


def validate(inputs: ValidationInput) -> Report:
    """Run every check; never raises for a defect in the files, only reports it."""
    report = Report()
    try:
        platform = load_platform(inputs.platform_file)
    except PlatformFileError as exc:
        report.add(Check.SCHEMA, _rel(inputs.platform_file, inputs.repo_root), "", str(exc))
        return report
    for component in platform.components:
        _validate_component(platform, component, inputs, report)
    _validate_manifests(platform, inputs, report)
    _validate_monitoring(platform, inputs, report)
    return report


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _load_reference(
    component: Component, inputs: ValidationInput, report: Report
) -> ChartReference | None:
    if component.chart.reference is None:
        report.notices.append(
            Notice(component.name, "no reference copy of the chart: key and schema checks skipped")
        )
        return None
    if inputs.charts_dir is None:
        report.notices.append(
            Notice(component.name, "no --charts-dir given: key and schema checks skipped")
        )
        return None
    try:
        chart = load_chart_reference(inputs.charts_dir / component.chart.reference)
    except ChartReferenceError as exc:
        report.add(Check.FILE, component.name, "chart.reference", str(exc))
        return None
    if chart.version != component.chart.version.removeprefix("v") and (
        chart.version != component.chart.version
    ):
        report.notices.append(
            Notice(
                component.name,
                f"reference copy is chart {chart.version}, platform.yaml pins "
                f"{component.chart.version}: keys checked against the reference",
            )
        )
    return chart


def _validate_component(
    platform: Platform, component: Component, inputs: ValidationInput, report: Report
) -> None:
    chart = _load_reference(component, inputs, report)
    free_form = [compile_path_pattern(f.path) for f in component.values.free_form]
    bom = {ref.without_digest() for ref in component.image_refs()}
    loaded: dict[str, Values] = {}
    for rel in component.values.all_files():
        path = inputs.repo_root / rel
        try:
            values = load_values(path)
        except (OSError, ValuesFileError) as exc:
            report.add(Check.FILE, rel, "", str(exc))
            continue
        report.checked_files += 1
        loaded[rel] = values
        if chart is not None:
            for where, why in unknown_keys(values, chart, free_form):
                report.add(Check.UNKNOWN_KEY, rel, where, why)
        for where, why in inline_secrets(values):
            report.add(Check.INLINE_SECRET, rel, where, why)
        airgap = rel in component.values.airgap_files()
        _check_images(platform, component, bom, rel, values, airgap, report)
    overlays = {rel: loaded[rel] for rel in component.values.airgap_files() if rel in loaded}
    if overlays:
        _check_mirror_complete(platform, component, overlays, report)
    if chart is None:
        return
    for profile in component.profiles:
        # Both the connected install (no overlay) and the air-gapped one must be valid.
        for with_airgap in (False, True):
            files = component.values.layered(Profile(profile), airgap=with_airgap)
            if not all(f in loaded for f in files):
                continue
            merged = chart.root_defaults()
            for rel in files:
                merged = coalesce(merged, loaded[rel])
            for error in schema_errors(chart, merged):
                report.add(Check.VALUES_SCHEMA, ",".join(files), f"[{profile}]", error)


def _check_images(
    platform: Platform,
    component: Component,
    bom: set[ImageRef],
    rel: str,
    values: Values,
    airgap: bool,
    report: Report,
) -> None:
    site = platform.registry.host
    for where, text in images_in_values(values):
        if "bitnamilegacy" in text:
            report.add(Check.BITNAMI_LEGACY, rel, where, f"{text}: frozen legacy image")
        try:
            ref = parse_image(text)
        except ImageRefError as exc:
            report.add(Check.IMAGE_NOT_IN_BOM, rel, where, str(exc))
            continue
        if ref.tag in (None, "latest"):
            report.add(Check.LATEST_TAG, rel, where, f"{text}: pin a version tag")
            continue
        plain = ref.without_digest()
        if airgap:
            if ref.host != site:
                report.add(
                    Check.IMAGE_NOT_MIRRORED,
                    rel,
                    where,
                    f"{text} is not on the site registry {site}",
                )
            elif all(plain != b.mirrored(site) for b in bom):
                report.add(
                    Check.IMAGE_NOT_IN_BOM, rel, where, f"{text} mirrors no image in the BOM"
                )
        elif plain not in bom:
            report.add(
                Check.IMAGE_NOT_IN_BOM,
                rel,
                where,
                f"{ref} is not listed in platform.yaml for component {component.name}",
            )


def _check_mirror_complete(
    platform: Platform, component: Component, overlays: dict[str, Values], report: Report
) -> None:
    """Every BOM image is redirected by some air-gap overlay; each overlay sets the secret."""
    site = platform.registry.host
    redirected: set[ImageRef] = set()
    secret = platform.registry.pull_secret
    for rel, overlay in overlays.items():
        for _, text in images_in_values(overlay):
            try:
                redirected.add(parse_image(text).without_digest())
            except ImageRefError:
                continue
        if secret not in json.dumps(overlay):
            report.add(
                Check.IMAGE_NOT_MIRRORED,
                rel,
                "",
                f"the air-gap overlay does not set the pull secret {secret!r}",
            )
    for ref in component.image_refs():
        if ref.without_digest().mirrored(site) not in redirected:
            report.add(
                Check.IMAGE_NOT_MIRRORED,
                component.values.airgap,
                "",
                f"BOM image {ref} is not redirected to {site} by any air-gap overlay",
            )


def _manifest_files(platform: Platform, root: Path) -> list[Path]:
    files: list[Path] = []
    for pattern in dict.fromkeys(m.path for m in platform.manifests):
        files.extend(Path(p) for p in sorted(glob.glob(str(root / pattern), recursive=True)))
    return files


def _validate_manifests(platform: Platform, inputs: ValidationInput, report: Report) -> None:
    files = _manifest_files(platform, inputs.repo_root)
    if not files:
        report.add(Check.MANIFEST, "platform.yaml", "manifests", "no manifest matches")
        return
    try:
        import kubernetes_validate
    except ImportError:
        report.notices.append(
            Notice("manifests", "kubernetes-validate is not installed: manifests not checked")
        )
        return
    for path in files:
        rel = _rel(path, inputs.repo_root)
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
        except (OSError, yaml.YAMLError) as exc:
            report.add(Check.MANIFEST, rel, "", str(exc))
            continue
        report.checked_files += 1
        for index, doc in enumerate(documents):
            where = f"doc {index} {doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
            try:
                kubernetes_validate.validate(doc, inputs.kubernetes_version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                report.add(Check.MANIFEST, rel, where, exc.message)
            except (
                kubernetes_validate.SchemaNotFoundError,
                kubernetes_validate.InvalidSchemaError,
            ) as exc:
                report.add(Check.MANIFEST, rel, where, f"no schema: {exc}")
            for secret_where, why in inline_secrets(_without_secret_data(doc)):
                report.add(Check.INLINE_SECRET, rel, f"{where} {secret_where}", why)


def _without_secret_data(doc: dict[str, Any]) -> dict[str, Any]:
    # A Secret manifest in the repo is itself the defect; flag it as such, once.
    if doc.get("kind") == "Secret":
        return {"secret": {"password": "manifest of kind Secret"}}
    return doc


def _validate_monitoring(platform: Platform, inputs: ValidationInput, report: Report) -> None:
    mon = platform.monitoring
    for rel in [*mon.rule_files, *mon.rule_tests]:
        path = inputs.repo_root / rel
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            report.add(Check.MONITORING, rel, "", str(exc))
            continue
        key = "groups" if rel in mon.rule_files else "tests"
        if not isinstance(data, dict) or not data.get(key):
            report.add(Check.MONITORING, rel, "", f"expected a non-empty `{key}` list")
        report.checked_files += 1
    for rel in mon.dashboards:
        path = inputs.repo_root / rel
        try:
            board = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            report.add(Check.MONITORING, rel, "", str(exc))
            continue
        report.checked_files += 1
        for key in ("uid", "title", "panels"):
            if not board.get(key):
                report.add(Check.MONITORING, rel, key, "dashboard lacks this field")
