"""OPA data reconciler: ``data.llmflow.tenants.<tenant>`` for the authorization policies.

Each tenant's document is ``{allowed_models, classification_ceiling, quotas: {gpus,
requests_per_minute, tokens_per_day}}`` (policies/opa/README.md); what a tenant does not
declare comes from ``data.llmflow.defaults`` of the release's ``policies/opa/data.json``.

The whole data document (the release's, with ``tenants`` replaced) is always written to a
file: embedded mode evaluates it when ``policy.data_file`` points there, and cluster
deployments can ship it as kube-mgmt's data ConfigMap. When the policy mode is ``http`` the
tenants are also written to the running OPA through its Data API
(``PUT /v1/data/llmflow/tenants/<tenant>``, ``DELETE`` for removed tenants), and the state is
read back from it (``GET /v1/data/llmflow/tenants``), so drift on the live OPA is reported.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler, drift, summary
from llmflow.tenancy.spec import TenantSpec

SYSTEM = "opa"
TENANTS_PATH = "/v1/data/llmflow/tenants"


def tenant_document(tenant: TenantSpec, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``data.llmflow.tenants.<tenant>`` for ``tenant`` (unset fields from ``defaults``)."""
    quotas = dict(defaults.get("quotas") or {})
    models = tenant.allowed_models
    return {
        "allowed_models": list(models)
        if models is not None
        else list(defaults.get("allowed_models") or ["*"]),
        "classification_ceiling": tenant.classification_ceiling
        or defaults.get("classification_ceiling", "internal"),
        "quotas": {
            "gpus": tenant.quotas.gpus,
            "requests_per_minute": tenant.rate_limits.requests_per_minute
            if tenant.rate_limits.requests_per_minute is not None
            else quotas.get("requests_per_minute", 0),
            "tokens_per_day": tenant.rate_limits.tokens_per_day
            if tenant.rate_limits.tokens_per_day is not None
            else quotas.get("tokens_per_day", 0),
        },
    }


@dataclass
class OpaState:
    """The tenants the file (or the live OPA) holds, and the base document."""

    tenants: dict[str, Any] = field(default_factory=dict)
    base: dict[str, Any] = field(default_factory=dict)


class OpaDataReconciler(Reconciler[OpaState]):
    """Writes the data document; PUTs to OPA's Data API when ``opa_url`` is set."""

    system = SYSTEM

    def __init__(
        self,
        output: Path,
        base_document: Path,
        *,
        opa_url: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.output = output
        self.base_document = base_document
        self.opa_url = opa_url.rstrip("/") if opa_url else None
        self._client = (
            httpx.AsyncClient(base_url=self.opa_url, timeout=timeout_s, transport=transport)
            if self.opa_url
            else None
        )
        self._base: dict[str, Any] = {}

    @property
    def target(self) -> str:
        if self.opa_url:
            return f"{self.opa_url}{TENANTS_PATH} (document also written to {self.output})"
        return str(self.output)

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise TenantReconcileError(f"opa: cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise TenantReconcileError(f"opa: {path} is not a JSON object")
        return data

    async def observe(self, desired: Sequence[TenantSpec]) -> OpaState:
        base = self._read_json(self.base_document)
        state = OpaState(base=base)
        if self._client is not None:
            try:
                response = await self._client.get(TENANTS_PATH)
            except httpx.HTTPError as exc:
                raise TenantReconcileError(f"opa: {self.opa_url} unreachable ({exc})") from exc
            if response.status_code != 200:
                raise TenantReconcileError(
                    f"opa: GET {TENANTS_PATH}: HTTP {response.status_code} {response.text[:200]}"
                )
            # An undefined document answers 200 without "result".
            state.tenants = dict(response.json().get("result") or {})
        elif self.output.exists():
            written = self._read_json(self.output)
            state.tenants = dict((written.get("llmflow") or {}).get("tenants") or {})
        return state

    def plan(self, desired: Sequence[TenantSpec], actual: OpaState) -> list[PlannedChange]:
        self._base = actual.base
        defaults = (actual.base.get("llmflow") or {}).get("defaults") or {}
        changes: list[PlannedChange] = []
        for tenant in desired:
            doc = tenant_document(tenant, defaults)
            current = actual.tenants.get(tenant.name)
            if current is None:
                op, detail = Operation.CREATE, ""
            elif paths := drift(doc, current) + drift(current, doc):
                op, detail = Operation.UPDATE, summary(sorted(set(paths)))
            else:
                op, detail = Operation.UNCHANGED, ""
            name = f"data.llmflow.tenants.{tenant.name}"
            changes.append(PlannedChange(SYSTEM, "tenant-data", name, op, tenant.name, detail, doc))
        declared = {t.name for t in desired}
        for name in sorted(set(actual.tenants) - declared):
            changes.append(
                PlannedChange(
                    SYSTEM,
                    "tenant-data",
                    f"data.llmflow.tenants.{name}",
                    Operation.DELETE,
                    name,
                    "tenant removed",
                )
            )
        return changes

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        done = [c for c in changes if c.pending]
        if self._client is not None:
            for change in done:
                assert change.tenant is not None
                path = f"{TENANTS_PATH}/{change.tenant}"
                try:
                    if change.operation is Operation.DELETE:
                        response = await self._client.delete(path)
                    else:
                        response = await self._client.put(path, json=change.payload)
                except httpx.HTTPError as exc:
                    raise TenantReconcileError(f"opa: {self.opa_url} unreachable ({exc})") from exc
                # 204 on success; 404 on DELETE means it is already gone.
                if response.status_code not in (200, 204) and not (
                    change.operation is Operation.DELETE and response.status_code == 404
                ):
                    raise TenantReconcileError(
                        f"opa: {change.operation.value} {path}: HTTP {response.status_code} "
                        f"{response.text[:200]}"
                    )
        self._write(changes)
        return done

    def _write(self, changes: Sequence[PlannedChange]) -> None:
        """Update the data document file with ``changes`` (other tenants stay as written)."""
        if self.output.exists():
            document = self._read_json(self.output)
        else:
            document = copy.deepcopy(self._base or self._read_json(self.base_document))
            document.setdefault("llmflow", {})["tenants"] = {}
        tenants: dict[str, Any] = document.setdefault("llmflow", {}).setdefault("tenants", {})
        for change in changes:
            if change.tenant is None:
                continue
            if change.operation is Operation.DELETE:
                tenants.pop(change.tenant, None)
            else:
                tenants[change.tenant] = change.payload
        document["llmflow"]["tenants"] = dict(sorted(tenants.items()))
        text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        if self.output.exists() and self.output.read_text(encoding="utf-8") == text:
            return
        self.output.parent.mkdir(parents=True, exist_ok=True)
        # Replace atomically: an embedded policy engine may read the file at any moment.
        fd, tmp = tempfile.mkstemp(dir=self.output.parent, prefix=".opa-data-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, self.output)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
