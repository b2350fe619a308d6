"""MLflow reconciler: an experiment per tenant and its group permission.

MLflow REST API 2.0 (tracking server, ``Authorization: Bearer`` of an admin):

* ``GET  /api/2.0/mlflow/experiments/get-by-name?experiment_name=`` → ``{"experiment": {...}}``
  or 404 ``{"error_code": "RESOURCE_DOES_NOT_EXIST"}``; a deleted experiment is still
  returned, with ``lifecycle_stage: "deleted"``, and keeps its name reserved;
* ``POST /api/2.0/mlflow/experiments/create`` ``{name, tags: [{key, value}]}`` →
  ``{"experiment_id"}``; ``.../restore`` and ``.../delete`` ``{experiment_id}``;
  ``.../set-experiment-tag`` ``{experiment_id, key, value}``;
* ``POST /api/2.0/mlflow/experiments/search`` ``{filter, max_results, page_token}`` finds the
  experiments tagged ``llmflow.tenant`` (removed tenants).

mlflow-oidc-auth (the chart's OIDC plugin) keeps permissions per group; its FastAPI routes
(``mlflow_oidc_auth/routers/group_permissions.py``):
``GET /api/2.0/mlflow/permissions/groups/{group}/experiments`` → ``[{id, name, permission}]``,
``POST|PATCH /api/2.0/mlflow/permissions/groups/{group}/experiments/{experiment_id}``
``{"permission": "EDIT"}``, and ``POST /api/2.0/mlflow/permissions/groups``
``{"group_name"}`` (create a group before its first sign-in; a no-op when it exists).
Releases before the FastAPI rewrite used ``/api/2.0/mlflow/groups/{group}/experiments/create``
instead and are not supported. The group is the Keycloak group path the ``groups`` claim
carries (``/tenants/<tenant>``), percent-encoded into the path.

Deleting an experiment is a soft delete in MLflow (``mlflow gc`` removes it for good).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from llmflow.tenancy.errors import TenantReconcileError
from llmflow.tenancy.reconciler import Operation, PlannedChange, Reconciler
from llmflow.tenancy.spec import TenantSpec

SYSTEM = "mlflow"
TENANT_TAG = "llmflow.tenant"
_API = "/api/2.0/mlflow"


def tenant_group(tenant: str) -> str:
    """The Keycloak group path of ``tenant`` as the OIDC ``groups`` claim carries it."""
    return f"/tenants/{tenant}"


@dataclass
class MlflowState:
    """Experiments by tenant and the group permission each tenant group holds."""

    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)  # tenant -> permission


class MlflowReconciler(Reconciler[MlflowState]):
    """Experiment ``tenants/<tenant>`` (tag ``llmflow.tenant``) + group permission."""

    system = SYSTEM

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        oidc_auth: bool = True,
        experiment_format: str = "tenants/{tenant}",
        permission: str = "EDIT",
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.oidc_auth = oidc_auth
        self.experiment_format = experiment_format
        self.permission = permission
        self._client = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout_s, transport=transport
        )

    @property
    def target(self) -> str:
        return self.url

    def experiment_name(self, tenant: str) -> str:
        """The experiment of ``tenant``."""
        return self.experiment_format.format(tenant=tenant)

    async def _call(
        self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any
    ) -> httpx.Response:
        try:
            response = await self._client.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise TenantReconcileError(f"mlflow: {self.url} unreachable ({exc})") from exc
        if response.status_code not in ok:
            try:
                body = response.json()
                message = body.get("message") or body.get("detail") or body
            except ValueError:
                message = response.text[:200]
            raise TenantReconcileError(
                f"mlflow: {method} {path}: HTTP {response.status_code} {message}"
            )
        return response

    # ------------------------------------------------------------------ observe

    async def observe(self, desired: Sequence[TenantSpec]) -> MlflowState:
        state = MlflowState()
        for tenant in desired:
            response = await self._call(
                "GET",
                f"{_API}/experiments/get-by-name",
                params={"experiment_name": self.experiment_name(tenant.name)},
                ok=(200, 404),
            )
            if response.status_code == 200:
                state.experiments[tenant.name] = response.json()["experiment"]
        page_token: str | None = None
        while True:
            body: dict[str, Any] = {
                "filter": f"tags.`{TENANT_TAG}` LIKE '%'",
                "max_results": 1000,
                "view_type": "ACTIVE_ONLY",
            }
            if page_token:
                body["page_token"] = page_token
            found = (await self._call("POST", f"{_API}/experiments/search", json=body)).json()
            for experiment in found.get("experiments", []):
                tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
                if TENANT_TAG in tags:
                    state.experiments.setdefault(tags[TENANT_TAG], experiment)
            page_token = found.get("next_page_token")
            if not page_token:
                break
        if self.oidc_auth:
            for tenant in desired:
                experiment = state.experiments.get(tenant.name)
                if experiment is None:
                    continue
                group = quote(tenant_group(tenant.name), safe="")
                response = await self._call(
                    "GET", f"{_API}/permissions/groups/{group}/experiments", ok=(200, 404)
                )
                items = response.json() if response.status_code == 200 else []
                for item in items:
                    if str(item.get("id")) == str(experiment["experiment_id"]):
                        state.permissions[tenant.name] = str(item.get("permission"))
        return state

    # ------------------------------------------------------------------ plan

    def plan(self, desired: Sequence[TenantSpec], actual: MlflowState) -> list[PlannedChange]:
        changes: list[PlannedChange] = []
        for tenant in desired:
            name = self.experiment_name(tenant.name)
            current = actual.experiments.get(tenant.name)
            payload: dict[str, Any] = {
                "name": name,
                "tags": [{"key": TENANT_TAG, "value": tenant.name}],
            }
            if current is None:
                op, detail = Operation.CREATE, ""
            else:
                payload["experiment_id"] = current["experiment_id"]
                tags = {t["key"]: t["value"] for t in current.get("tags", [])}
                problems = []
                if current.get("lifecycle_stage") == "deleted":
                    problems.append("restore deleted experiment")
                if tags.get(TENANT_TAG) != tenant.name:
                    problems.append(f"tag {TENANT_TAG}")
                op = Operation.UPDATE if problems else Operation.UNCHANGED
                detail = ", ".join(problems)
                payload["restore"] = current.get("lifecycle_stage") == "deleted"
            changes.append(
                PlannedChange(SYSTEM, "experiment", name, op, tenant.name, detail, payload)
            )
            if not self.oidc_auth:
                continue
            group = tenant_group(tenant.name)
            have = actual.permissions.get(tenant.name)
            if have is None:
                pop, pdetail = Operation.CREATE, self.permission
            elif have != self.permission:
                pop, pdetail = Operation.UPDATE, f"{have} -> {self.permission}"
            else:
                pop, pdetail = Operation.UNCHANGED, ""
            changes.append(
                PlannedChange(
                    SYSTEM,
                    "group-permission",
                    f"{group} on {name}",
                    pop,
                    tenant.name,
                    pdetail,
                    {"group": group, "experiment": name, "permission": self.permission},
                )
            )
        declared = {t.name for t in desired}
        for owner, experiment in sorted(actual.experiments.items()):
            if owner not in declared and experiment.get("lifecycle_stage") != "deleted":
                changes.append(
                    PlannedChange(
                        SYSTEM,
                        "experiment",
                        experiment["name"],
                        Operation.DELETE,
                        owner,
                        "tenant removed (soft delete; `mlflow gc` purges)",
                        {"experiment_id": experiment["experiment_id"]},
                    )
                )
        return changes

    # ------------------------------------------------------------------ apply

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        ids: dict[str, str] = {}
        done: list[PlannedChange] = []
        for change in changes:
            payload = change.payload or {}
            if change.kind == "experiment" and "experiment_id" in payload:
                ids[change.name] = str(payload["experiment_id"])
            if not change.pending:
                continue
            if change.kind == "experiment":
                await self._apply_experiment(change, ids)
            else:
                experiment_id = ids.get(payload["experiment"])
                if experiment_id is None:
                    raise TenantReconcileError(
                        f"mlflow: experiment {payload['experiment']!r} has no id; plan again"
                    )
                if change.operation is Operation.CREATE:
                    await self._ensure_group(payload["group"])
                group = quote(payload["group"], safe="")
                await self._call(
                    "POST" if change.operation is Operation.CREATE else "PATCH",
                    f"{_API}/permissions/groups/{group}/experiments/{experiment_id}",
                    json={"permission": payload["permission"]},
                    ok=(200, 201),
                )
            done.append(change)
        return done

    async def _ensure_group(self, group: str) -> None:
        # mlflow-oidc-auth learns groups from sign-ins; a group nobody of the tenant has signed
        # in with yet cannot hold a permission until created (POST .../permissions/groups,
        # a no-op when it exists). Plugin releases without that route answer 404/405: there
        # the grant itself reports the problem.
        await self._call(
            "POST",
            f"{_API}/permissions/groups",
            json={"group_name": group},
            ok=(200, 201, 404, 405),
        )

    async def _apply_experiment(self, change: PlannedChange, ids: dict[str, str]) -> None:
        payload = change.payload
        if change.operation is Operation.DELETE:
            await self._call(
                "POST",
                f"{_API}/experiments/delete",
                json={"experiment_id": payload["experiment_id"]},
            )
            return
        if change.operation is Operation.CREATE:
            response = await self._call(
                "POST",
                f"{_API}/experiments/create",
                json={"name": payload["name"], "tags": payload["tags"]},
            )
            ids[change.name] = str(response.json()["experiment_id"])
            return
        experiment_id = str(payload["experiment_id"])
        if payload.get("restore"):
            await self._call(
                "POST", f"{_API}/experiments/restore", json={"experiment_id": experiment_id}
            )
        for tag in payload["tags"]:
            await self._call(
                "POST",
                f"{_API}/experiments/set-experiment-tag",
                json={"experiment_id": experiment_id, **tag},
            )

    async def aclose(self) -> None:
        await self._client.aclose()
