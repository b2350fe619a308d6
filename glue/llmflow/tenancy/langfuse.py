"""Langfuse reconciler: a project per tenant in the platform's Langfuse organization.

Langfuse 4.4 (platform/platform.yaml), organization-scoped API key as HTTP Basic
(public key : secret key), routes in ``web/src/pages/api/public/``:

* ``GET /api/public/organizations/projects`` → ``{"projects": [{id, name, metadata,
  createdAt, updatedAt}]}`` (deleted projects are not listed);
* ``POST /api/public/projects`` ``{name, metadata}`` → 201 ``{id, name, metadata}``;
  409 when the name exists in the organization; names are 3–60 characters;
* ``PUT /api/public/projects/{id}`` ``{name, metadata}`` → 200;
* ``DELETE /api/public/projects/{id}`` → 202 (the project's data is deleted asynchronously).

Every one of them requires the ``admin-api`` entitlement, which self-hosted Langfuse grants
only under an Enterprise licence; without it Langfuse answers 403 and the plan says so.
Projects this control plane made carry ``metadata.llmflow.tenant``; projects without it
are never touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler, drift, summary
from llmflow.tenancy.spec import TenantSpec

SYSTEM = "langfuse"
TENANT_KEY = "llmflow.tenant"


@dataclass
class LangfuseState:
    """Projects of the organization by name."""

    projects: dict[str, dict[str, Any]] = field(default_factory=dict)


class LangfuseReconciler(Reconciler[LangfuseState]):
    """Project ``<tenant>`` with ``metadata: {llmflow.tenant: <tenant>}``."""

    system = SYSTEM

    def __init__(
        self,
        url: str,
        public_key: str,
        secret_key: str,
        *,
        project_format: str = "{tenant}",
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.project_format = project_format
        self._client = httpx.AsyncClient(
            base_url=self.url,
            auth=httpx.BasicAuth(public_key, secret_key),
            timeout=timeout_s,
            transport=transport,
        )

    @property
    def target(self) -> str:
        return self.url

    def project_name(self, tenant: str) -> str:
        """The project of ``tenant`` (Langfuse requires 3–60 characters)."""
        name = self.project_format.format(tenant=tenant)
        if not 3 <= len(name) <= 60:
            raise TenantReconcileError(
                f"langfuse: project name {name!r} must have 3-60 characters; "
                "adjust tenancy.langfuse_project_format"
            )
        return name

    async def _call(
        self, method: str, path: str, *, ok: tuple[int, ...], **kw: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TenantReconcileError(f"langfuse: {self.url} unreachable ({exc})") from exc
        if response.status_code in ok:
            return response
        try:
            body = response.json()
            message = body.get("message") or body.get("error") or body
        except ValueError:
            message = response.text[:200]
        hint = ""
        if response.status_code == 403:
            hint = (
                " (the organization API needs an organization-scoped key and the admin-api "
                "entitlement, i.e. a self-hosted Enterprise licence; otherwise unset "
                "tenancy.langfuse_url and create projects in the UI)"
            )
        raise TenantReconcileError(
            f"langfuse: {method} {path}: HTTP {response.status_code} {message}{hint}"
        )

    async def observe(self, desired: Sequence[TenantSpec]) -> LangfuseState:
        response = await self._call("GET", "/api/public/organizations/projects", ok=(200,))
        return LangfuseState(projects={p["name"]: p for p in response.json().get("projects", [])})

    def plan(self, desired: Sequence[TenantSpec], actual: LangfuseState) -> list[PlannedChange]:
        changes: list[PlannedChange] = []
        wanted: set[str] = set()
        for tenant in desired:
            name = self.project_name(tenant.name)
            wanted.add(name)
            body = {"name": name, "metadata": {TENANT_KEY: tenant.name}}
            current = actual.projects.get(name)
            if current is None:
                op, detail, payload = Operation.CREATE, "", body
            elif paths := drift(body["metadata"], current.get("metadata") or {}, "metadata"):
                op, detail, payload = (
                    Operation.UPDATE,
                    summary(paths),
                    {**body, "id": current["id"]},
                )
            else:
                op, detail, payload = Operation.UNCHANGED, "", {**body, "id": current["id"]}
            changes.append(PlannedChange(SYSTEM, "project", name, op, tenant.name, detail, payload))
        for name, project in sorted(actual.projects.items()):
            owner = (project.get("metadata") or {}).get(TENANT_KEY)
            if owner and name not in wanted:
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "project",
                        name,
                        Operation.DELETE,
                        str(owner),
                        "tenant removed: traces are deleted with the project",
                        {"id": project["id"]},
                    )
                )
        return changes

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        done: list[PlannedChange] = []
        for change in changes:
            if not change.pending:
                continue
            payload = change.payload
            if change.operation is Operation.CREATE:
                await self._call("POST", "/api/public/projects", ok=(200, 201), json=payload)
            elif change.operation is Operation.UPDATE:
                body = {"name": payload["name"], "metadata": payload["metadata"]}
                await self._call(
                    "PUT", f"/api/public/projects/{payload['id']}", ok=(200,), json=body
                )
            else:
                await self._call(
                    "DELETE", f"/api/public/projects/{payload['id']}", ok=(200, 202, 404)
                )
            done.append(change)
        return done

    async def aclose(self) -> None:
        await self._client.aclose()
