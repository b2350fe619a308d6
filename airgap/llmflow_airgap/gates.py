"""Health gates: wait until a component really works before installing what depends on it.

`helm --wait` only knows that pods started; the gates of `platform.yaml` say when a component
is usable. They are checked from the install host through the Kubernetes API only (the host
is outside the cluster network and cannot resolve `*.svc`):

* `rollout` — a Deployment, StatefulSet or DaemonSet has every replica updated and ready for
  its current generation (the rule `kubectl rollout status` applies);
* `http` — the health URL answers 2xx through the API server's service proxy
  (`/api/v1/namespaces/<ns>/services/<name>:<port>/proxy/<path>`);
* `tcp` — the Service has ready endpoints on that port (a TCP connect from outside the
  cluster is impossible; a ready endpoint is what kube-proxy would route to);
* `job` — the Job succeeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmflow_airgap.errors import AirgapError
from llmflow_airgap.kube import KubeClient
from llmflow_airgap.platform import HealthCheck

_WORKLOAD_PATHS = {
    "deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "statefulset": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "daemonset": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
    "job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}",
}
POLL_INTERVAL_S = 5.0


class GateFailed(AirgapError):
    """A gate did not pass in time, or can never pass (a failed Job)."""


@dataclass(frozen=True)
class GateSpec:
    """One gate of one release, in a namespace."""

    component: str
    namespace: str
    check: HealthCheck

    def describe(self) -> str:
        """One line for the plan."""
        check = self.check
        target = f"{self.namespace}/{check.target}"
        if check.kind == "http":
            target += f":{check.port}{check.path}"
        elif check.kind == "tcp":
            target += f":{check.port}"
        return f"{check.kind} {target} (up to {check.timeout_seconds}s)"


def _split_target(target: str, default_kind: str) -> tuple[str, str]:
    kind, sep, name = target.partition("/")
    return (kind.lower(), name) if sep else (default_kind, kind)


def _workload_ready(kind: str, obj: dict[str, Any]) -> tuple[bool, str]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = int((obj.get("metadata") or {}).get("generation") or 0)
    if int(status.get("observedGeneration") or 0) < generation:
        return False, "controller has not observed the latest spec yet"
    if kind == "daemonset":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
        return (
            updated >= desired and available >= desired,
            f"{available}/{desired} pods available, {updated} updated",
        )
    wanted = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if kind == "deployment":
        available = int(status.get("availableReplicas") or 0)
        ok = updated >= wanted and available >= wanted and total <= updated
        return ok, f"{available}/{wanted} available, {updated} updated, {total} total"
    return ready >= wanted and updated >= wanted, f"{ready}/{wanted} ready, {updated} updated"


def check_once(kube: KubeClient, gate: GateSpec) -> tuple[bool, str]:
    """Evaluate a gate once: (passed, what was seen)."""
    check = gate.check
    ns = gate.namespace
    if check.kind == "rollout":
        kind, name = _split_target(check.target, "deployment")
        if kind not in ("deployment", "statefulset", "daemonset"):
            raise GateFailed(f"rollout gate on unsupported kind {kind!r} ({check.target})")
        obj = kube.get(_WORKLOAD_PATHS[kind].format(ns=ns, name=name), allow_missing=True)
        if obj is None:
            return False, f"{kind} {ns}/{name} does not exist (yet)"
        return _workload_ready(kind, obj)
    if check.kind == "job":
        _, name = _split_target(check.target, "job")
        obj = kube.get(_WORKLOAD_PATHS["job"].format(ns=ns, name=name), allow_missing=True)
        if obj is None:
            return False, f"job {ns}/{name} does not exist (yet)"
        status = obj.get("status") or {}
        backoff = int((obj.get("spec") or {}).get("backoffLimit", 6))
        if int(status.get("failed") or 0) > backoff:
            raise GateFailed(f"job {ns}/{name} failed {status.get('failed')} times")
        return int(status.get("succeeded") or 0) >= 1, f"job {ns}/{name}: {status}"
    _, service = _split_target(check.target, "service")
    if check.kind == "http":
        path = check.path or "/"
        url = f"/api/v1/namespaces/{ns}/services/{service}:{check.port}/proxy{path}"
        code = kube.probe(url)
        return 200 <= code < 300, f"GET {service}:{check.port}{path} -> HTTP {code}"
    endpoints = kube.get(f"/api/v1/namespaces/{ns}/endpoints/{service}", allow_missing=True)
    ready = 0
    for subset in (endpoints or {}).get("subsets") or []:
        ports = {int(p.get("port", 0)) for p in subset.get("ports") or []}
        # An Endpoints port is the target port; the gate names the Service port, so a
        # subset whose only port differs still counts when the Service maps it.
        if check.port in ports or len(ports) == 1:
            ready += len(subset.get("addresses") or [])
    return ready > 0, f"service {ns}/{service}: {ready} ready endpoint(s)"


def wait_for(
    kube: KubeClient,
    gate: GateSpec,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[str], None] | None = None,
    interval: float = POLL_INTERVAL_S,
) -> str:
    """Poll a gate until it passes (returns what was seen) or its timeout runs out."""
    deadline = clock() + gate.check.timeout_seconds
    last = ""
    while True:
        ok, seen = check_once(kube, gate)
        if ok:
            return seen
        if seen != last and on_wait is not None:
            on_wait(seen)
        last = seen
        if clock() >= deadline:
            raise GateFailed(
                f"{gate.component}: gate {gate.describe()} did not pass in "
                f"{gate.check.timeout_seconds}s; last seen: {seen}"
            )
        sleep(interval)
