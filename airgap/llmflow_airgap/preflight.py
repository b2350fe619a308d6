"""Preflight: refuse to start an install that cannot finish.

Every check returns a `CheckResult`; a failed *blocking* check stops `install` before the
first byte is pushed or the first release touched, with a message that says what to fix.
The checks ask the Kubernetes API (version, nodes, `nvidia.com/gpu`, storage classes), the
site registry (a probe blob pushed and removed in a dedicated repository, so "reachable"
means "writable" too) and the local filesystem (free space where the install writes).
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmflow_airgap.digests import sha256_bytes
from llmflow_airgap.errors import AirgapError
from llmflow_airgap.events import human_size
from llmflow_airgap.kube import KubeClient
from llmflow_airgap.registry import RegistryClient

# The oldest Kubernetes minor the distribution's charts and manifests are validated against
# (validate.py defaults to 1.31; charts of platform.yaml all support 1.29+).
MIN_KUBERNETES = (1, 29)
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
PROBE_REPOSITORY = "llmflow-airgap/preflight"
DEFAULT_MIN_FREE = 1024**3


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check. `deferred`: not met yet, re-checked later as a gate."""

    name: str
    ok: bool
    message: str
    blocking: bool = True
    deferred: bool = False

    @property
    def fails(self) -> bool:
        """True when this result stops the install."""
        return not self.ok and self.blocking and not self.deferred


@dataclass(frozen=True)
class PreflightSpec:
    """What the install needs, derived from platform.yaml, the profile and the plan."""

    nodes: int
    gpus: int
    registry: str
    disk_paths: tuple[Path, ...]
    min_free_bytes: int = DEFAULT_MIN_FREE
    # The GPU operator is part of the plan: GPUs become allocatable only once it runs, so a
    # shortfall is re-checked after that release instead of blocking now.
    gpu_operator_in_plan: bool = False


def describe_checks(spec: PreflightSpec) -> list[tuple[str, str]]:
    """(name, what is required) for every check, for the plan and `--dry-run`."""
    checks = [
        ("kubernetes-version", f"server version >= {MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]}"),
        ("nodes-ready", f">= {spec.nodes} node(s) Ready"),
    ]
    if spec.gpus:
        later = " (re-checked after the GPU operator if short now)"
        checks.append(
            (
                "gpu-allocatable",
                f">= {spec.gpus} {GPU_RESOURCE} allocatable"
                + (later if spec.gpu_operator_in_plan else ""),
            )
        )
    checks.append(("storage-class", "at least one StorageClass, one of them the default"))
    checks.append(
        ("registry-writable", f"push and remove a probe blob in {spec.registry}/{PROBE_REPOSITORY}")
    )
    for path in spec.disk_paths:
        checks.append(("free-disk", f">= {human_size(spec.min_free_bytes)} free in {path}"))
    return checks


def _version_tuple(info: dict[str, Any]) -> tuple[int, int] | None:
    major = re.match(r"\d+", str(info.get("major", "")))
    minor = re.match(r"\d+", str(info.get("minor", "")))
    if major and minor:
        return int(major.group()), int(minor.group())
    match = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_kubernetes_version(kube: KubeClient) -> CheckResult:
    """The API server is recent enough for the distribution's charts."""
    info = kube.version()
    found = _version_tuple(info)
    label = str(info.get("gitVersion") or f"{info.get('major')}.{info.get('minor')}")
    if found is None:
        return CheckResult("kubernetes-version", False, f"unreadable server version {label!r}")
    if found < MIN_KUBERNETES:
        need = f"{MIN_KUBERNETES[0]}.{MIN_KUBERNETES[1]}"
        return CheckResult(
            "kubernetes-version", False, f"server is {label}; upgrade to {need} or newer"
        )
    return CheckResult("kubernetes-version", True, f"server is {label}")


def _node_ready(node: dict[str, Any]) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def check_nodes(kube: KubeClient, wanted: int) -> CheckResult:
    """At least `wanted` schedulable nodes report `Ready`."""
    nodes = kube.nodes()
    ready = [
        n["metadata"]["name"]
        for n in nodes
        if _node_ready(n) and not (n.get("spec") or {}).get("unschedulable")
    ]
    not_ready = sorted({n["metadata"]["name"] for n in nodes} - set(ready))
    detail = f"{len(ready)} of {len(nodes)} node(s) Ready and schedulable"
    if not_ready:
        detail += f" (not: {', '.join(not_ready)})"
    if len(ready) < wanted:
        return CheckResult("nodes-ready", False, f"{detail}; the profile needs {wanted}")
    return CheckResult("nodes-ready", True, detail)


def _quantity(value: object) -> int:
    # Extended resources such as nvidia.com/gpu are whole numbers; anything else is 0.
    text = str(value or "0")
    return int(text) if text.isdigit() else 0


def check_gpus(kube: KubeClient, wanted: int, operator_in_plan: bool) -> CheckResult:
    """The nodes offer at least `wanted` `nvidia.com/gpu` in total."""
    total = sum(
        _quantity(((n.get("status") or {}).get("allocatable") or {}).get(GPU_RESOURCE))
        for n in kube.nodes()
    )
    if total >= wanted:
        return CheckResult("gpu-allocatable", True, f"{total} {GPU_RESOURCE} allocatable")
    message = f"{total} {GPU_RESOURCE} allocatable; the profile needs {wanted}"
    if operator_in_plan:
        return CheckResult(
            "gpu-allocatable",
            False,
            message + " (re-checked after the GPU operator is installed)",
            deferred=True,
        )
    return CheckResult("gpu-allocatable", False, message + ": install the NVIDIA device plugin")


def check_storage_classes(kube: KubeClient) -> CheckResult:
    """A default StorageClass exists (every stateful chart relies on it)."""
    classes = kube.storage_classes()
    if not classes:
        return CheckResult("storage-class", False, "no StorageClass: PVCs would never bind")
    defaults = [
        c["metadata"]["name"]
        for c in classes
        if any(
            ((c["metadata"].get("annotations") or {}).get(a) == "true")
            for a in DEFAULT_CLASS_ANNOTATIONS
        )
    ]
    names = ", ".join(sorted(c["metadata"]["name"] for c in classes))
    if not defaults:
        return CheckResult(
            "storage-class",
            False,
            f"no default StorageClass among {names}: mark one with "
            "storageclass.kubernetes.io/is-default-class=true",
        )
    return CheckResult("storage-class", True, f"default {defaults[0]} (of {names})")


def check_registry(client: RegistryClient, host: str) -> CheckResult:
    """The site registry accepts a push (a tiny probe blob, removed again if allowed)."""
    probe = f"llmflow-airgap preflight {os.getpid()}\n".encode()
    digest = sha256_bytes(probe)
    try:
        client.upload_blob(host, PROBE_REPOSITORY, digest, probe)
        removed = client.delete_blob(host, PROBE_REPOSITORY, digest)
    except AirgapError as exc:
        return CheckResult("registry-writable", False, f"{host}: {exc}")
    note = "" if removed else f" (probe left in {PROBE_REPOSITORY}: the registry keeps blobs)"
    return CheckResult("registry-writable", True, f"{host} accepted a push{note}")


def check_disk(path: Path, min_free: int) -> CheckResult:
    """Enough free space where the install writes its state and values."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    free = shutil.disk_usage(target).free
    if free < min_free:
        return CheckResult(
            "free-disk",
            False,
            f"{human_size(free)} free in {path}; need {human_size(min_free)}",
        )
    return CheckResult("free-disk", True, f"{human_size(free)} free in {path}")


def run_preflight(
    spec: PreflightSpec,
    kube: KubeClient,
    registry: RegistryClient,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check (all of them, so one run reports every problem)."""
    checks: list[tuple[str, Callable[[], CheckResult]]] = [
        ("kubernetes-version", lambda: check_kubernetes_version(kube)),
        ("nodes-ready", lambda: check_nodes(kube, spec.nodes)),
    ]
    if spec.gpus:
        checks.append(
            ("gpu-allocatable", lambda: check_gpus(kube, spec.gpus, spec.gpu_operator_in_plan))
        )
    checks.append(("storage-class", lambda: check_storage_classes(kube)))
    checks.append(("registry-writable", lambda: check_registry(registry, spec.registry)))
    for path in spec.disk_paths:
        checks.append(("free-disk", functools.partial(check_disk, path, spec.min_free_bytes)))
    results: list[CheckResult] = []
    for name, check in checks:
        try:
            result = check()
        except AirgapError as exc:
            result = CheckResult(name, False, str(exc))
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results
