"""The Dify system of the tenant control plane: licence-aware tenancy plus the wiring.

Per mode (:mod:`llmflow.tenancy.dify_settings`, ARCHITECTURE §5):

* ``instance-per-tenant``: one single-workspace Dify release per tenant namespace. The
  tenant control plane has no Helm path (the Kubernetes reconciler server-side-applies plain
  manifests; Helm releases are the offline installer's job), so this reconciler renders, per
  tenant, the Helm values overlay of the ``dify`` chart 0.37.0 that separates the tenant on
  the shared stores — PostgreSQL databases ``dify_<t>``/``dify_plugin_<t>``, a Valkey
  database pair (cache, Celery broker), the tenant's object-store bucket — plus the
  ``helm upgrade --install`` command that layers it on ``helm-values/dify/values.yaml``.
  The files are the state: a second apply renders the same bytes and plans nothing.
* ``shared``: nothing to install per tenant; every tenant is wired into the one workspace
  with its own API keys (the data plane enforces the tenant from the key).
* ``licensed-multi-workspace``: refused at plan time unless the operator declared the
  commercial licence; then each tenant is wired into its own workspace of the one Dify.

When the Dify admin key is configured (and ``wire_on_apply``), the plan also carries each
tenant's wiring (:class:`llmflow.dify.wiring.DifySync`); a tenant whose Dify cannot be
reached yet (a release not installed) gets one ``unchanged`` entry saying so, and
``llmflow dify sync`` wires it later.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from llmflow.dify.client import DifyError
from llmflow.tenancy.dify_settings import DifySettings
from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.k8s_manifests import namespace_of
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler, drift, summary
from llmflow.tenancy.spec import TenantSpec

if TYPE_CHECKING:
    from llmflow.dify.wiring import DifySync
    from llmflow.runtime import Runtime
    from llmflow.settings import Settings

SYSTEM = "dify"
CHART = "dify"
CHART_VERSION = "0.37.0"
RELEASE = "dify"
_HEADER = "# Rendered by `llmflow tenant apply` (dify, tenant {tenant})"
REDIS_DB_BASE = 2
"""Valkey databases 0-1 stay with LLMFlow; each tenant's Dify takes the next free pair."""
REDIS_DATABASES = 64
"""The Valkey ``databases`` setting the platform configures (default Valkey has 16)."""


def bucket_name(bucket_prefix: str, tenant: str) -> str:
    """The tenant's bucket as :meth:`llmflow.storage.objectstore.S3ObjectStore.bucket` names it
    (the object-store reconciler creates it), so Dify's files live in the tenant's bucket."""
    name = re.sub(r"[^a-z0-9-]+", "-", f"{bucket_prefix}{tenant}".lower()).strip("-")
    if len(name) > 63:
        name = name[:54] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return name


def database_name(prefix: str, tenant: str) -> str:
    """A PostgreSQL identifier for the tenant (hyphens become underscores)."""
    return f"{prefix}_{tenant.replace('-', '_')}"[:63]


def tenant_values(tenant: str, redis_db: int, bucket: str) -> dict[str, Any]:
    """The per-tenant overlay of the dify chart's values (keys of its values.schema.json)."""
    return {
        "externalPostgres": {
            "database": {
                "api": database_name("dify", tenant),
                "pluginDaemon": database_name("dify_plugin", tenant),
            }
        },
        "externalRedis": {"db": {"app": redis_db, "celery": redis_db + 1}},
        "externalS3": {"bucketName": {"api": bucket, "pluginDaemon": bucket}},
    }


def helm_command(namespace: str, overlay: Path, base: Path) -> str:
    """The install command for the tenant's release (chart from the offline bundle)."""
    return (
        f"helm upgrade --install {RELEASE} {CHART}-{CHART_VERSION}.tgz --namespace {namespace} "
        f"-f {base} -f {overlay}"
    )


@dataclass
class DifyTenancyState:
    """Rendered overlays per tenant, and each tenant's wiring plan when wiring is on."""

    rendered: dict[str, dict[str, Any]] = field(default_factory=dict)
    wiring: dict[str, list[PlannedChange]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)


def read_overlays(directory: Path) -> dict[str, dict[str, Any]]:
    """The overlays this reconciler rendered (files starting with its header)."""
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.values.yaml")):
        text = path.read_text(encoding="utf-8")
        if text.startswith(_HEADER.split("{", 1)[0]):
            document = yaml.safe_load(text)
            if isinstance(document, dict):
                out[path.name.removesuffix(".values.yaml")] = document
    return out


class DifyReconciler(Reconciler[DifyTenancyState]):
    """Dify per tenant: the mode's install plan, then (optionally) the wiring."""

    system = SYSTEM

    def __init__(
        self,
        settings: DifySettings,
        values_dir: Path,
        *,
        namespace_prefix: str = "",
        bucket_prefix: str = "llmflow-",
        app_settings: Settings | None = None,
        runtime: Runtime | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.values_dir = values_dir
        self.namespace_prefix = namespace_prefix
        self.bucket_prefix = bucket_prefix
        self.app_settings = app_settings
        # A runtime handed in is the caller's (not closed here); otherwise one is opened
        # on first use, only when the wiring runs.
        self._runtime: Runtime | None = runtime
        self._owns_runtime = runtime is None
        self._transport = transport
        self._syncs: dict[str, DifySync] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> DifyReconciler:
        """The reconciler of ``settings.dify`` (values under ``<data_dir>/tenants/dify``)."""
        return cls(
            settings.dify,
            settings.dify.values_dir or settings.data_dir / "tenants" / "dify",
            namespace_prefix=settings.tenancy.namespace_prefix,
            bucket_prefix=settings.object_store.bucket_prefix,
            app_settings=settings,
        )

    @property
    def target(self) -> str:
        if self.settings.mode == "instance-per-tenant":
            return f"{self.settings.mode}: {self.values_dir}"
        return f"{self.settings.mode}: {self.settings.shared_base_url}"

    @property
    def wiring_enabled(self) -> bool:
        return (
            self.settings.wire_on_apply
            and (self.app_settings is not None or self._runtime is not None)
            and self.settings.admin_key() is not None
        )

    async def observe(self, desired: Sequence[TenantSpec]) -> DifyTenancyState:
        self.settings.check_licence()
        state = DifyTenancyState()
        if self.settings.mode == "instance-per-tenant":
            state.rendered = read_overlays(self.values_dir)
        if self.wiring_enabled:
            for tenant in desired:
                sync = await self._sync_for(tenant.name)
                if sync is None:
                    state.unreachable[tenant.name] = (
                        "no Dify workspace id configured (LLMFLOW_DIFY__WORKSPACE_IDS)"
                    )
                    continue
                try:
                    state.wiring[tenant.name] = sync.plan(await sync.observe())
                except (httpx.TransportError, OSError) as exc:
                    state.unreachable[tenant.name] = (
                        f"Dify not reachable ({type(exc).__name__}); "
                        "`llmflow dify sync` wires it once the release runs"
                    )
                except DifyError as exc:
                    raise TenantReconcileError(f"dify: tenant {tenant.name}: {exc}") from exc
        return state

    async def _sync_for(self, tenant: str) -> DifySync | None:
        from llmflow.dify.wiring import build_sync

        if tenant in self._syncs:
            return self._syncs[tenant]
        if self._runtime is None:
            from llmflow.runtime import Runtime

            assert self.app_settings is not None
            self._runtime = await Runtime.open(self.app_settings)
        sync = build_sync(
            self.settings,
            tenant,
            namespace_of(tenant, self.namespace_prefix),
            self._runtime.api_keys,
            self._runtime.knowledge_bases,
            transport=self._transport,
        )
        if sync is not None:
            self._syncs[tenant] = sync
        return sync

    def _allocate(
        self, desired: Sequence[TenantSpec], rendered: dict[str, dict[str, Any]]
    ) -> dict[str, int]:
        """Valkey database pairs: kept for tenants that have one, the lowest free otherwise."""
        taken: dict[str, int] = {}
        for tenant, document in rendered.items():
            db = document.get("externalRedis", {}).get("db", {}).get("app")
            if isinstance(db, int) and any(t.name == tenant for t in desired):
                taken[tenant] = db
        used = set(taken.values())
        for tenant in sorted(t.name for t in desired):
            if tenant in taken:
                continue
            db = REDIS_DB_BASE
            while db in used:
                db += 2
            if db + 1 >= REDIS_DATABASES:
                raise TenantReconcileError(
                    f"dify: no free Valkey database pair for tenant {tenant} "
                    f"(databases {REDIS_DB_BASE}..{REDIS_DATABASES - 1} are taken)"
                )
            taken[tenant] = db
            used.add(db)
        return taken

    def plan(self, desired: Sequence[TenantSpec], actual: DifyTenancyState) -> list[PlannedChange]:
        changes: list[PlannedChange] = []
        if self.settings.mode == "instance-per-tenant":
            dbs = self._allocate(desired, actual.rendered)
            for tenant in sorted(t.name for t in desired):
                namespace = namespace_of(tenant, self.namespace_prefix)
                values = tenant_values(tenant, dbs[tenant], bucket_name(self.bucket_prefix, tenant))
                current = actual.rendered.get(tenant)
                paths = drift(values, current) if current is not None else []
                if current is None:
                    op, detail = Operation.CREATE, f"release {RELEASE} in {namespace}"
                elif paths or current != values:
                    op, detail = Operation.UPDATE, summary(paths) or "extra keys"
                else:
                    op, detail = Operation.UNCHANGED, ""
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "helm-values",
                        f"{namespace}/{RELEASE}",
                        op,
                        tenant,
                        detail,
                        payload=values,
                    )
                )
            for tenant in sorted(set(actual.rendered) - {t.name for t in desired}):
                namespace = namespace_of(tenant, self.namespace_prefix)
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "helm-values",
                        f"{namespace}/{RELEASE}",
                        Operation.DELETE,
                        tenant,
                        f"uninstall: helm uninstall {RELEASE} -n {namespace}",
                    )
                )
        else:
            workspace = "one workspace" if self.settings.mode == "shared" else "own workspace"
            for tenant in sorted(t.name for t in desired):
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "tenancy",
                        tenant,
                        Operation.UNCHANGED,
                        tenant,
                        f"{self.settings.mode}: {workspace} in {self.settings.shared_base_url}",
                    )
                )
        for tenant in sorted(t.name for t in desired):
            if tenant in actual.unreachable:
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "wiring",
                        tenant,
                        Operation.UNCHANGED,
                        tenant,
                        f"skipped: {actual.unreachable[tenant]}",
                    )
                )
            changes += actual.wiring.get(tenant, [])
        return changes

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        done: list[PlannedChange] = []
        by_tenant: dict[str, list[PlannedChange]] = {}
        for change in changes:
            if change.kind == "helm-values" and change.pending and change.tenant:
                self._write(change)
                done.append(change)
            elif change.kind not in ("helm-values", "tenancy", "wiring") and change.tenant:
                by_tenant.setdefault(change.tenant, []).append(change)
        for tenant, entries in by_tenant.items():
            sync = self._syncs.get(tenant)
            if sync is not None and any(c.pending for c in entries):
                try:
                    done += await sync.apply(entries)
                except DifyError as exc:
                    raise TenantReconcileError(f"dify: tenant {tenant}: {exc}") from exc
        return done

    def _write(self, change: PlannedChange) -> None:
        assert change.tenant is not None
        path = self.values_dir / f"{change.tenant}.values.yaml"
        if change.operation is Operation.DELETE:
            if path.exists():
                path.unlink()
            return
        namespace = change.name.split("/", 1)[0]
        text = (
            _HEADER.format(tenant=change.tenant)
            + ": per-tenant overlay of the dify chart "
            + f"{CHART_VERSION}.\n# Install: "
            + helm_command(namespace, path, self.settings.chart_values)
            + "\n# The tenant's dify-credentials Secret must use the same stores: DB_* for "
            + "the databases below, CELERY_BROKER_URL with the celery database.\n"
            + yaml.safe_dump(change.payload, sort_keys=False)
        )
        self.values_dir.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")

    async def aclose(self) -> None:
        for sync in self._syncs.values():
            await sync.target.api.console.aclose()
        self._syncs.clear()
        if self._runtime is not None and self._owns_runtime:
            await self._runtime.close()
            self._runtime = None
