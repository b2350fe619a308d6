"""`llmflow-airgap install`: from a verified bundle to a running platform, resumably.

The install is a plan of named steps, built offline from the bundle's lockfile and
`platform.yaml` (so `--dry-run` shows exactly what a real run will do):

1. preflight — blocking checks (`preflight.py`), always re-run, also on `--resume`;
2. `push-images` — every image into the site registry, digests unchanged (`push.py`);
3. `chart/<name>-<version>` — every chart archive as an OCI artifact (`chart_push.py`);
4. `manifests/<file>` for the files of `platform.yaml` `manifests:` that hold Namespaces —
   server-side applied before any release, so the pod-security labels exist before a chart
   (or `--create-namespace`) puts a pod there (`manifests.py`);
5. `release/<namespace>/<name>` — `helm upgrade --install` in dependency order with the
   profile's values and the air-gap overlay pinned to the site registry by digest, each
   followed by its `gate/<namespace>/<name>/<n>` health gates (`gates.py`);
   A Dify release is preceded by what it needs in the cluster (`dify_cluster`): its
   `dify-credentials` admin key (only if absent), the plugin-signing public key, and for a
   tenant release (`--tenant-values`, `dify_tenants`) the CloudNativePG `Database` objects
   of the tenant's databases; the glue's namespace gets its `dify-credentials` admin key
   before the first release (`prepare/...` steps);
6. `manifests/<file>` for every other manifest file of the profile (NetworkPolicies,
   ConfigMaps, HPAs, PodDisruptionBudgets), server-side applied after the last release;
7. `post/<name>` — post-install steps (`PostInstallStep`), in the order given.

Finished steps are recorded in `<work-dir>/install-state.json` (written atomically after
every step); `--resume` skips a finished step unless what it would do changed (a release
whose chart or values differ runs again). The work directory also keeps the upload sessions
of an interrupted push, the kubeconfig written for Helm, and the lockfile of every completed
install under `history/` (what `prune --keep N` keeps images for).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmflow_airgap.bundle import CHARTS_DIR, DISTRIBUTION_DIR, LOCK_NAME
from llmflow_airgap.chart_push import ChartPush, plan_charts, push_chart
from llmflow_airgap.dify_cluster import (
    DifyCredentials,
    PluginSigningKey,
    TenantDatabase,
)
from llmflow_airgap.dify_tenants import (
    TenantOverlay,
    TenantOverlayError,
    chart_schema_errors,
    read_overlays,
)
from llmflow_airgap.difyplugin_bundle import PUBLIC_KEY_NAME
from llmflow_airgap.digests import sha256_file
from llmflow_airgap.errors import AirgapError, BundleError
from llmflow_airgap.events import Reporter, human_size
from llmflow_airgap.gates import GateSpec, wait_for
from llmflow_airgap.helm.base import HelmDriver, ReleaseSpec
from llmflow_airgap.kube import KubeClient
from llmflow_airgap.lockfile import LOCK_API_VERSION, LOCK_KIND, Lockfile, LockSource, load_lockfile
from llmflow_airgap.manifests import (
    FIELD_MANAGER,
    ManifestApply,
    Phase,
    apply_manifest,
    plan_manifests,
)
from llmflow_airgap.overlay import UNRESOLVED_DIGEST, Rewrite, pin_images
from llmflow_airgap.platform import (
    Component,
    DifyTenancyMode,
    Platform,
    Profile,
    load_platform,
)
from llmflow_airgap.preflight import (
    CheckResult,
    PreflightSpec,
    check_gpus,
    describe_checks,
    run_preflight,
)
from llmflow_airgap.push import PlannedImage, describe_plan, plan_push, push_bundle
from llmflow_airgap.registry import RegistryClient, endpoint_url
from llmflow_airgap.values import coalesce, load_values

STATE_NAME = "install-state.json"
PUSH_STATE_NAME = "push-state.json"
HISTORY_DIR = "history"
STATE_KIND = "InstallState"
GPU_OPERATOR = "gpu-operator"
GPU_GATE_TIMEOUT_S = 1200
DIFY = "dify"


class PreflightFailed(AirgapError):
    """At least one blocking preflight check failed; nothing was changed."""


class InstallStateError(AirgapError):
    """The state file is unreadable or belongs to another bundle."""


# ---------------------------------------------------------------------- post-install


@dataclass(frozen=True)
class PostInstallContext:
    """What a post-install step may use."""

    plan: InstallPlan
    kube: KubeClient | None
    reporter: Reporter


class PostInstallStep(Protocol):
    """Extension point: configuration that runs after every release passed its gates.

    `platform.yaml` declares no post-install hooks; the CLI registers
    `dify_plugin_install.DifyPluginsStep` per `--dify-console`. A step is a class with a
    unique `name`, a one-line `describe()` for the plan, and an idempotent `run()`; pass
    instances through `PlanRequest(post_install=...)`. Its state key is `post/<name>`, so
    `--resume` skips it once it succeeded.
    """

    name: str

    def describe(self) -> str:
        """One line for the plan."""

    def run(self, context: PostInstallContext) -> None:
        """Do the work; raise an `AirgapError` to stop the install."""


class ClusterStep(Protocol):
    """An object a release needs in the cluster before Helm runs (Secrets, databases).

    `step_id` is its state key; `fingerprint()` None means "ensure once" (a finished step is
    never re-run on `--resume`); `run` is idempotent and returns what the state file records
    (never secret material)."""

    @property
    def step_id(self) -> str:
        """State key."""

    def fingerprint(self) -> str | None:
        """What the step applies; a change re-runs it on `--resume`."""

    def describe(self) -> str:
        """One line for the plan."""

    def run(self, kube: KubeClient, sleep: Callable[[float], None]) -> dict[str, Any]:
        """Do the work; raise an `AirgapError` to stop the install."""


# ---------------------------------------------------------------------- plan


@dataclass
class ReleasePlan:
    """One Helm release of the plan with its values already pinned."""

    component: str
    name: str
    namespace: str
    chart: Path
    chart_label: str
    chart_digest: str
    values_files: list[str]
    values: dict[str, Any]
    rewrites: list[Rewrite]
    timeout_s: int
    gates: list[GateSpec] = field(default_factory=list)
    before: list[ClusterStep] = field(default_factory=list)
    tenant: str | None = None

    @property
    def step_id(self) -> str:
        """State key of the release."""
        return f"release/{self.namespace}/{self.name}"

    def fingerprint(self) -> str:
        """sha256 of what the release applies: a changed chart or value re-runs it."""
        text = json.dumps([self.chart_digest, self.values], sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    def spec(self) -> ReleaseSpec:
        """What the Helm driver receives."""
        return ReleaseSpec(
            name=self.name,
            namespace=self.namespace,
            chart=self.chart,
            values=self.values,
            timeout_s=self.timeout_s,
        )


@dataclass
class InstallPlan:
    """Everything `install` will do, in order (built without touching the network)."""

    bundle: Path
    platform: Platform
    lock: Lockfile
    lock_sha256: str
    profile: Profile
    registry: str
    preflight: PreflightSpec
    images: list[PlannedImage]
    charts: list[ChartPush]
    releases: list[ReleasePlan]
    post_install: list[PostInstallStep]
    manifests: list[ManifestApply] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    prepare: list[ClusterStep] = field(default_factory=list)

    def manifests_in(self, phase: Phase) -> list[ManifestApply]:
        """The manifest files applied in one phase, in order."""
        return [m for m in self.manifests if m.phase is phase]

    def _manifest_lines(self, phase: Phase, title: str) -> list[str]:
        out = ["", f"{title} (server-side apply, field manager {FIELD_MANAGER}):"]
        files = self.manifests_in(phase)
        if not files:
            out.append("  none")
        for manifest in files:
            out.append(f"  {manifest.step_id}")
            out += [f"      {o.label()} -> PATCH {o.path}" for o in manifest.objects]
        return out

    @property
    def registry_host(self) -> str:
        """`host[:port]` of the site registry."""
        return self.registry.split("://", 1)[-1].rstrip("/")

    def gpu_gate_after(self) -> str | None:
        """Release after which a deferred GPU check is repeated (the GPU operator's)."""
        for release in self.releases:
            if release.component == GPU_OPERATOR:
                return release.step_id
        return None

    def lines(self) -> list[str]:
        """The plan for people (`--dry-run`)."""
        meta = self.platform.metadata
        out = [
            f"Install plan: {meta.name} {meta.version}, profile {self.profile}, "
            f"bundle {self.bundle} (lock {self.lock_sha256[:19]}), registry {self.registry_host}",
            "",
            "Preflight (blocking):",
        ]
        out += [f"  - {name}: {need}" for name, need in describe_checks(self.preflight)]
        out += ["", f"Push images to {self.registry_host} (step push-images):"]
        out += [f"  {line}" for line in describe_plan(self.images, self.registry_host)]
        out += ["", f"Push charts to oci://{self.registry_host}/charts:"]
        for chart in self.charts:
            out.append(
                f"  chart/{chart.name}-{chart.version} -> {chart.repository}:{chart.tag} "
                f"({human_size(chart.size)})"
            )
        out += self._manifest_lines(Phase.BEFORE_RELEASES, "Namespaces, before the releases")
        if self.prepare:
            out += ["", "Cluster objects, before the releases:"]
            out += [f"  {p.step_id}: {p.describe()}" for p in self.prepare]
        out += ["", "Helm releases, in order (upgrade --install --atomic --wait):"]
        gpu_after = self.gpu_gate_after() if self.preflight.gpus else None
        for number, release in enumerate(self.releases, start=1):
            out.append(
                f"  {number:2d}. {release.namespace}/{release.name}: {release.chart_label} "
                f"({release.chart.name}), {len(release.rewrites)} image(s) pinned to "
                f"{self.registry_host} by digest"
            )
            for before in release.before:
                out.append(f"      before: {before.step_id}: {before.describe()}")
            out.append(f"      values: {' + '.join(release.values_files)} + site digests")
            for rewrite in release.rewrites:
                out.append(f"      image {rewrite.path}: {rewrite.after}")
            for gate in release.gates:
                out.append(f"      gate: {gate.describe()}")
            if gpu_after == release.step_id:
                out.append(f"      gate: >= {self.preflight.gpus} nvidia.com/gpu allocatable")
        out += self._manifest_lines(Phase.AFTER_RELEASES, "Manifests, after every release")
        out += ["", "Post-install:"]
        if self.post_install:
            out += [f"  post/{step.name}: {step.describe()}" for step in self.post_install]
        else:
            out.append("  none registered (platform.yaml declares no post-install hooks)")
        for note in self.notes:
            out.append(f"Note: {note}")
        return out

    def to_json(self) -> dict[str, Any]:
        """The plan for CI (`--dry-run --json`)."""
        return {
            "platform": {
                "name": self.platform.metadata.name,
                "version": self.platform.metadata.version,
            },
            "profile": str(self.profile),
            "lockSha256": self.lock_sha256,
            "registry": self.registry_host,
            "preflight": [{"check": n, "requires": r} for n, r in describe_checks(self.preflight)],
            "images": [
                {
                    "source": p.source,
                    "target": f"{self.registry_host}/{p.target_repo}:{p.tag}",
                    "blobs": len(p.blobs),
                    "bytes": sum(s for _, s in p.blobs),
                }
                for p in self.images
            ],
            "charts": [
                {
                    "chart": f"{c.name}-{c.version}",
                    "target": f"{c.repository}:{c.tag}",
                    "bytes": c.size,
                }
                for c in self.charts
            ],
            "releases": [
                {
                    "step": r.step_id,
                    "component": r.component,
                    "chart": r.chart_label,
                    "valuesFiles": r.values_files,
                    "images": [
                        {"path": w.path, "before": w.before, "after": w.after} for w in r.rewrites
                    ],
                    "gates": [g.describe() for g in r.gates],
                    "tenant": r.tenant,
                    "before": [{"step": b.step_id, "describe": b.describe()} for b in r.before],
                }
                for r in self.releases
            ],
            "prepare": [{"step": p.step_id, "describe": p.describe()} for p in self.prepare],
            "manifests": [
                {
                    "step": m.step_id,
                    "phase": str(m.phase),
                    "objects": [
                        {
                            "apiVersion": o.api_version,
                            "kind": o.kind,
                            "namespace": o.namespace,
                            "name": o.name,
                            "path": o.path,
                        }
                        for o in m.objects
                    ],
                }
                for m in self.manifests
            ],
            "postInstall": [s.name for s in self.post_install],
            "notes": self.notes,
        }


@dataclass(frozen=True)
class PlanRequest:
    """Inputs of a plan."""

    bundle: Path
    platform_file: Path
    registry: str
    profile: Profile
    work_dir: Path
    tenants: tuple[str, ...] = ()
    tenant_values: Path | None = None
    min_free_bytes: int = 1024**3
    post_install: tuple[PostInstallStep, ...] = ()
    # False: `plan` before `lock` — no lockfile is read; charts and images are platform.yaml's,
    # their digests shown as `UNRESOLVED_DIGEST`.
    locked: bool = True


def _release_values(
    root: Path, component: Component, profile: Profile
) -> tuple[list[str], dict[str, Any]]:
    files = component.values.layered(profile)
    merged: dict[str, Any] = {}
    for rel in files:
        path = root / rel
        if not path.is_file():
            raise BundleError(f"values file {rel} of {component.name} is missing under {root}")
        merged = coalesce(merged, load_values(path))
    return files, merged


def _postgres_target(
    root: Path, platform: Platform, profile: Profile, dify_values: dict[str, Any]
) -> tuple[str, str, str]:
    """(CNPG cluster, its namespace, database owner) the dify values point at.

    The cluster and namespace come from `externalPostgres.address` (`<cluster>-rw.<ns>.svc`,
    the read-write Service CNPG creates); the owner is the one the platform's values declare
    for the shared dify database (`databases: [{name: dify, owner: ...}]` of the CNPG Cluster
    chart), so tenant databases belong to the role Dify already logs in as."""
    postgres = dify_values.get("externalPostgres") or {}
    address = str(postgres.get("address") or "")
    service, _, rest = address.partition(".")
    namespace = rest.split(".", 1)[0]
    if not service.endswith("-rw") or not namespace:
        raise TenantOverlayError(
            f"dify values externalPostgres.address {address!r} is not a CloudNativePG "
            "read-write Service (<cluster>-rw.<namespace>.svc): tenant databases need one"
        )
    shared_db = str((postgres.get("database") or {}).get("api") or "")
    for component in platform.components:
        for rel in component.values.layered(profile):
            path = root / rel
            if not path.is_file():
                continue
            for entry in load_values(path).get("databases") or []:
                if (
                    isinstance(entry, dict)
                    and entry.get("name") == shared_db
                    and entry.get("owner")
                ):
                    return service.removesuffix("-rw"), namespace, str(entry["owner"])
    raise TenantOverlayError(
        f"no component's values declare database {shared_db!r} with an owner "
        "(helm-values/postgresql `databases:`): the tenant databases would have no owner"
    )


def _tenant_releases(
    request: PlanRequest,
    root: Path,
    platform: Platform,
    template: ReleasePlan,
    merged: dict[str, Any],
    component: Component,
    signing: bytes | None,
    lock: Lockfile,
    unresolved: tuple[str, ...] = (),
) -> list[ReleasePlan]:
    """One dify release per `--tenant-values` overlay (see `dify_tenants`)."""
    assert request.tenant_values is not None
    if platform.tenancy.dify_mode is not DifyTenancyMode.INSTANCE_PER_TENANT:
        raise TenantOverlayError(
            f"--tenant-values installs one Dify per tenant, but platform.yaml sets "
            f"tenancy.difyMode {platform.tenancy.dify_mode}"
        )
    overlays: list[TenantOverlay] = read_overlays(request.tenant_values, template.chart.name)
    cluster, cluster_ns, owner = _postgres_target(root, platform, request.profile, merged)
    site = request.registry.split("://", 1)[-1].rstrip("/")
    out: list[ReleasePlan] = []
    for overlay in overlays:
        if overlay.namespace in request.tenants or overlay.namespace == component.namespace:
            raise TenantOverlayError(
                f"namespace {overlay.namespace} gets a dify release twice (--tenant or the "
                f"shared release, and {overlay.file.name}): give it one way only"
            )
        layered = coalesce(merged, overlay.values)
        errors = chart_schema_errors(template.chart, component.chart.name, layered)
        if errors:
            raise TenantOverlayError(
                f"{overlay.file}: the tenant's values break the chart's values.schema.json: "
                + "; ".join(errors[:5])
            )
        values, rewrites = pin_images(
            layered, lock.images, platform.registry.host, site, unresolved
        )
        before: list[ClusterStep] = [DifyCredentials(overlay.namespace, component.namespace)]
        if signing is not None:
            before.append(PluginSigningKey(overlay.namespace, signing))
        before += [
            TenantDatabase(overlay.tenant, database, owner, cluster, cluster_ns)
            for database in overlay.databases
        ]
        release = ReleasePlan(
            component=component.name,
            name=template.name,
            namespace=overlay.namespace,
            chart=template.chart,
            chart_label=template.chart_label,
            chart_digest=template.chart_digest,
            values_files=[*template.values_files, str(overlay.file)],
            values=values,
            rewrites=rewrites,
            timeout_s=template.timeout_s,
            before=before,
            tenant=overlay.tenant,
        )
        release.gates = [
            GateSpec(component.name, overlay.namespace, c) for c in component.health_checks
        ]
        out.append(release)
    return out


def build_plan(request: PlanRequest) -> InstallPlan:
    """Read the bundle and platform.yaml into an install plan (no network)."""
    bundle = request.bundle
    lock_path = bundle / LOCK_NAME
    if request.locked:
        lock = load_lockfile(lock_path)
        lock_sha, _ = sha256_file(lock_path)
    platform = load_platform(request.platform_file)
    platform_sha, _ = sha256_file(request.platform_file)
    unresolved: tuple[str, ...] = ()
    if not request.locked:
        meta = platform.metadata
        source = LockSource(name=meta.name, version=meta.version, sha256=platform_sha)
        lock = Lockfile(apiVersion=LOCK_API_VERSION, kind=LOCK_KIND, platform=source)
        lock_sha = ""
        unresolved = tuple(image for c in platform.components for image in c.images)
    if platform_sha != lock.platform.sha256:
        raise BundleError(
            f"{request.platform_file} is not the platform.yaml the bundle was locked from "
            f"(lock: {lock.platform.sha256}, file: {platform_sha})"
        )
    root = request.platform_file.resolve().parent.parent
    site = request.registry.split("://", 1)[-1].rstrip("/")
    charts_by_component = {c.component: c for c in lock.charts}
    releases: list[ReleasePlan] = []
    notes: list[str] = []
    prepare: list[ClusterStep] = []
    signing_path = bundle / PUBLIC_KEY_NAME
    signing = signing_path.read_bytes() if signing_path.is_file() else None
    for component in platform.install_order():
        if request.profile not in component.profiles:
            continue
        chart = charts_by_component.get(component.name)
        if chart is None and request.locked:
            raise BundleError(f"the bundle's lockfile has no chart for component {component.name}")
        chart_name, chart_version = component.chart.name, component.chart.version
        chart_digest = chart.digest if chart is not None else UNRESOLVED_DIGEST
        namespaces = [component.namespace]
        shared_dify = platform.tenancy.dify_mode is not DifyTenancyMode.INSTANCE_PER_TENANT
        if component.scope == "tenant" and shared_dify:
            # shared / licensed-multi-workspace: one Dify in the component's namespace
            if request.tenants:
                raise AirgapError(
                    f"platform.yaml sets tenancy.difyMode {platform.tenancy.dify_mode}: "
                    f"{component.name} is installed once in {component.namespace}, not per "
                    "--tenant"
                )
        elif component.scope == "tenant":
            namespaces = list(request.tenants)
            if not namespaces and request.tenant_values is None:
                notes.append(
                    f"{component.name} is installed per tenant: no --tenant given, so none now"
                )
        files, merged = _release_values(root, component, request.profile)
        values, rewrites = pin_images(merged, lock.images, platform.registry.host, site, unresolved)
        timeout = max([600, *(c.timeout_seconds for c in component.health_checks)])
        for namespace in namespaces:
            release = ReleasePlan(
                component=component.name,
                name=component.name,
                namespace=namespace,
                chart=bundle / CHARTS_DIR / f"{chart_name}-{chart_version}.tgz",
                chart_label=f"{chart_name} {chart_version}",
                chart_digest=chart_digest,
                values_files=files,
                values=values,
                rewrites=rewrites,
                timeout_s=timeout,
            )
            release.gates = [
                GateSpec(component.name, namespace, c) for c in component.health_checks
            ]
            if component.name == DIFY and namespace != component.namespace:
                release.before.append(DifyCredentials(namespace, component.namespace))
            if component.name == DIFY and signing is not None:
                release.before.append(PluginSigningKey(namespace, signing))
            releases.append(release)
        if component.name == DIFY:
            # The glue (same namespace) reads the admin key before any Dify exists.
            prepare.append(DifyCredentials(component.namespace))
            if signing is None:
                notes.append(
                    "the bundle ships no Dify plugins, so no dify-plugin-signing key: create "
                    "that Secret (public.pem) in each Dify namespace "
                    "(docs/operator/dify-plugins.md)"
                )
            if request.tenant_values is not None:
                template = ReleasePlan(
                    component=component.name,
                    name=component.name,
                    namespace=component.namespace,
                    chart=bundle / CHARTS_DIR / f"{chart_name}-{chart_version}.tgz",
                    chart_label=f"{chart_name} {chart_version}",
                    chart_digest=chart_digest,
                    values_files=files,
                    values=merged,
                    rewrites=[],
                    timeout_s=timeout,
                )
                releases += _tenant_releases(
                    request, root, platform, template, merged, component, signing, lock, unresolved
                )
    if request.tenant_values is not None and not any(r.tenant for r in releases):
        raise TenantOverlayError(
            f"--tenant-values {request.tenant_values}: the profile {request.profile} installs "
            "no dify component to layer tenant overlays on"
        )
    names = {r.component for r in releases}
    spec = PreflightSpec(
        nodes=platform.profiles[request.profile].nodes,
        gpus=platform.profiles[request.profile].gpus,
        registry=site,
        disk_paths=(request.work_dir, bundle),
        min_free_bytes=request.min_free_bytes,
        gpu_operator_in_plan=GPU_OPERATOR in names,
    )
    return InstallPlan(
        bundle=bundle,
        platform=platform,
        lock=lock,
        lock_sha256=lock_sha,
        profile=request.profile,
        registry=request.registry,
        preflight=spec,
        images=plan_push(bundle),
        charts=plan_charts(bundle, lock.charts),
        releases=releases,
        post_install=list(request.post_install),
        manifests=plan_manifests(root, platform, request.profile),
        notes=notes,
        prepare=prepare,
    )


# ---------------------------------------------------------------------- state


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, document: dict[str, Any]) -> None:
    """Write, fsync, rename: a crash leaves the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        # Insertion order is the order steps finished in: keep it readable.
        json.dump(document, handle, indent=1)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class InstallState:
    """`install-state.json`: which steps finished, for which bundle and profile."""

    def __init__(self, path: Path, document: dict[str, Any]) -> None:
        self.path = path
        self.document = document

    @classmethod
    def read(cls, path: Path) -> dict[str, Any] | None:
        """The state document, or None when there is none."""
        if not path.is_file():
            return None
        try:
            document: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InstallStateError(f"install state {path} is unreadable: {exc}") from exc
        if not isinstance(document, dict) or document.get("kind") != STATE_KIND:
            raise InstallStateError(f"{path} is not an install state file")
        return document

    @classmethod
    def open(cls, path: Path, plan: InstallPlan, resume: bool) -> InstallState:
        """Start a new state, or continue the existing one with `resume`."""
        identity = {
            "lockSha256": plan.lock_sha256,
            "profile": str(plan.profile),
            "registry": plan.registry_host,
        }
        existing = cls.read(path) if resume else None
        if existing is not None:
            previous = {k: existing.get(k) for k in identity}
            if previous != identity:
                raise InstallStateError(
                    f"{path} records another install ({previous}); this one is {identity}: "
                    "run without --resume to start over"
                )
            return cls(path, existing)
        document = {
            "apiVersion": "llmflow.io/v1alpha1",
            "kind": STATE_KIND,
            **identity,
            "platform": {
                "name": plan.platform.metadata.name,
                "version": plan.platform.metadata.version,
            },
            "startedAt": _now(),
            "steps": {},
        }
        state = cls(path, document)
        state.save()
        return state

    @property
    def steps(self) -> dict[str, Any]:
        """Finished steps by id."""
        steps: dict[str, Any] = self.document.setdefault("steps", {})
        return steps

    def finished(self, step: str, fingerprint: str | None = None) -> bool:
        """Whether `step` finished (with the same fingerprint, when one is given)."""
        entry = self.steps.get(step)
        if not entry or entry.get("status") != "done":
            return False
        return fingerprint is None or entry.get("fingerprint") == fingerprint

    def mark(self, step: str, **details: Any) -> None:
        """Record a finished step and save at once."""
        self.steps[step] = {**details, "status": "done", "finishedAt": _now()}
        self.save()

    def save(self) -> None:
        """Write the state file atomically."""
        write_json_atomic(self.path, self.document)


# ---------------------------------------------------------------------- run


@dataclass
class InstallResult:
    """What a run did."""

    preflight: list[CheckResult] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_install(
    plan: InstallPlan,
    *,
    work_dir: Path,
    driver: HelmDriver,
    kube: KubeClient,
    reporter: Reporter | None = None,
    resume: bool = False,
    chunk_size: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
    gate_interval: float = 5.0,
) -> InstallResult:
    """Execute the plan: preflight, pushes, namespaces, releases with gates, the other
    manifests, post-install steps."""
    report = reporter or Reporter(quiet=True)
    result = InstallResult()
    work_dir.mkdir(parents=True, exist_ok=True)

    def on_check(check: CheckResult) -> None:
        verdict = "ok" if check.ok else ("deferred" if check.deferred else "FAILED")
        report.event(
            "preflight.check",
            f"preflight {check.name}: {verdict} - {check.message}",
            check=check.name,
            ok=check.ok,
            deferred=check.deferred,
            detail=check.message,
        )

    with RegistryClient({plan.registry_host: endpoint_url(plan.registry)}) as registry:
        result.preflight = run_preflight(plan.preflight, kube, registry, on_check)
        failed = [c for c in result.preflight if c.fails]
        if failed:
            raise PreflightFailed(
                "preflight refused the install: "
                + "; ".join(f"{c.name}: {c.message}" for c in failed)
            )
        gpu_deferred = any(c.deferred for c in result.preflight)
        state = InstallState.open(work_dir / STATE_NAME, plan, resume)

        def step(
            step_id: str, fingerprint: str | None, action: Callable[[], dict[str, Any]]
        ) -> None:
            if resume and state.finished(step_id, fingerprint):
                result.skipped.append(step_id)
                report.event("step.skipped", f"{step_id}: done before, skipped", step=step_id)
                return
            report.event("step.started", f"{step_id} ...", step=step_id)
            details = action()
            if fingerprint is not None:
                details["fingerprint"] = fingerprint
            state.mark(step_id, **details)
            result.ran.append(step_id)
            report.event("step.done", f"{step_id}: done", step=step_id, **details)

        def push_images() -> dict[str, Any]:
            pushed = push_bundle(
                plan.bundle,
                plan.registry,
                report,
                chunk_size=chunk_size,
                state_file=work_dir / PUSH_STATE_NAME,
            )
            return {"uploaded": pushed.blobs_uploaded, "bytesUploaded": pushed.bytes_uploaded}

        step("push-images", plan.lock_sha256, push_images)
        for chart in plan.charts:

            def push_one(chart: ChartPush = chart) -> dict[str, Any]:
                digest, uploaded = push_chart(registry, plan.registry_host, chart)
                return {"manifestDigest": digest, "uploaded": uploaded}

            step(f"chart/{chart.name}-{chart.version}", chart.digest, push_one)

    def apply_files(phase: Phase) -> None:
        for manifest in plan.manifests_in(phase):

            def apply_one(manifest: ManifestApply = manifest) -> dict[str, Any]:
                return apply_manifest(kube, manifest)

            step(manifest.step_id, manifest.fingerprint(), apply_one)

    def run_cluster_step(prerequisite: ClusterStep) -> None:
        def action(prerequisite: ClusterStep = prerequisite) -> dict[str, Any]:
            return prerequisite.run(kube, sleep)

        step(prerequisite.step_id, prerequisite.fingerprint(), action)

    apply_files(Phase.BEFORE_RELEASES)
    for prerequisite in plan.prepare:
        run_cluster_step(prerequisite)
    gpu_after = plan.gpu_gate_after() if gpu_deferred else None
    for release in plan.releases:
        for prerequisite in release.before:
            run_cluster_step(prerequisite)

        def apply(release: ReleasePlan = release) -> dict[str, Any]:
            info = driver.upgrade_install(release.spec())
            return {"revision": info.revision, "helmStatus": info.status, "chart": info.chart}

        step(release.step_id, release.fingerprint(), apply)
        for number, gate in enumerate(release.gates, start=1):

            def wait(gate: GateSpec = gate) -> dict[str, Any]:
                def waiting(seen: str) -> None:
                    report.event("gate.waiting", f"  waiting: {gate.describe()}: {seen}")

                seen = wait_for(kube, gate, sleep=sleep, interval=gate_interval, on_wait=waiting)
                return {"seen": seen}

            step(f"gate/{release.namespace}/{release.name}/{number}", release.fingerprint(), wait)
        if release.step_id == gpu_after:

            def gpus() -> dict[str, Any]:
                deadline = time.monotonic() + GPU_GATE_TIMEOUT_S
                while True:
                    check = check_gpus(kube, plan.preflight.gpus, operator_in_plan=False)
                    if check.ok:
                        return {"seen": check.message}
                    if time.monotonic() >= deadline:
                        raise PreflightFailed(f"after the GPU operator: {check.message}")
                    sleep(gate_interval)

            step("gate/gpu-allocatable", None, gpus)
    apply_files(Phase.AFTER_RELEASES)
    context = PostInstallContext(plan=plan, kube=kube, reporter=report)
    for post in plan.post_install:

        def run_post(post: PostInstallStep = post) -> dict[str, Any]:
            post.run(context)
            return {}

        step(f"post/{post.name}", None, run_post)
    state.document["completedAt"] = _now()
    state.save()
    record_history(work_dir, plan)
    report.event(
        "install.done",
        f"install complete: {len(plan.releases)} releases ({len(result.ran)} steps run, "
        f"{len(result.skipped)} skipped as done before)",
        ran=len(result.ran),
        skipped=len(result.skipped),
    )
    return result


def history_dir(work_dir: Path) -> Path:
    """Where the lockfiles of completed installs are kept."""
    return work_dir / HISTORY_DIR


def record_history(work_dir: Path, plan: InstallPlan) -> Path:
    """Keep the installed lockfile (named by time and digest) for `prune --keep N`."""
    folder = history_dir(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for existing in folder.glob(f"*-{plan.lock_sha256[7:19]}.lock.yaml"):
        return existing
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    target = folder / f"{stamp}-{plan.lock_sha256[7:19]}.lock.yaml"
    tmp = target.with_name(target.name + ".tmp")
    shutil.copyfile(plan.bundle / LOCK_NAME, tmp)
    os.replace(tmp, target)
    return target


def history_locks(work_dir: Path) -> list[Path]:
    """Installed lockfiles, newest first."""
    return sorted(history_dir(work_dir).glob("*.lock.yaml"), reverse=True)


def default_platform_file(bundle: Path, fallback: Path) -> Path:
    """The bundle's own copy of the distribution files if it has one, else `fallback`."""
    inside = bundle / DISTRIBUTION_DIR / "platform" / "platform.yaml"
    return inside if inside.is_file() else fallback
