"""Fake servers for the tenant control plane's systems that cannot run here.

Each is a real HTTP server on 127.0.0.1 (Starlette under uvicorn in a thread) replaying the
documented contract the reconcilers depend on:

* :class:`FakeKubernetes` — the API server's REST paths for the tenant kinds; server-side
  apply (``PATCH`` with ``Content-Type: application/apply-patch+yaml`` and ``fieldManager``,
  creating or updating; 415 for another patch type, 400 without a field manager), ``GET``
  returning the object with server-set fields (uid, resourceVersion, managedFields, the
  ``kubernetes.io/metadata.name`` label and ``spec.finalizers`` of namespaces), lists with
  ``labelSelector`` whose items carry no ``kind``, ``DELETE`` (a namespace takes its objects
  with it), errors as ``{"kind": "Status", "code": 404, ...}``, 401 without the bearer token.
* :class:`FakeMlflow` — MLflow 2.0 REST experiments endpoints (get-by-name 404
  ``RESOURCE_DOES_NOT_EXIST``, create 400 ``RESOURCE_ALREADY_EXISTS`` even for a deleted
  experiment, soft delete/restore, set-experiment-tag, search with a tag ``LIKE`` filter) and
  mlflow-oidc-auth's group experiment permission routes.
* :class:`FakeLangfuse` — Langfuse 4.x organization API (Basic auth with an org-scoped key,
  ``admin-api`` entitlement: 403 "not available on your current plan" otherwise).
* :class:`FakeOpa` — OPA's Data API for ``/v1/data/llmflow/tenants``.
"""

from __future__ import annotations

import base64
import copy
import itertools
import re
import threading
import uuid
from typing import Any

import yaml
from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class ThreadedServer(LocalServer):
    """A local server that keeps a request log."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[dict[str, Any]] = []

    def _record(self, request: Request, body: bytes = b"") -> None:
        self.log.append(
            {
                "method": request.method,
                "path": request.url.path,
                "query": dict(request.query_params),
                "content_type": request.headers.get("content-type", ""),
                "body": body,
            }
        )

    def writes(self) -> list[dict[str, Any]]:
        """Requests that could change state."""
        return [e for e in self.log if e["method"] in {"POST", "PUT", "PATCH", "DELETE"}]


# ---------------------------------------------------------------------------- Kubernetes

# plural -> (kind, group/version, namespaced)
K8S_RESOURCES = {
    "namespaces": ("Namespace", "v1", False),
    "resourcequotas": ("ResourceQuota", "v1", True),
    "limitranges": ("LimitRange", "v1", True),
    "networkpolicies": ("NetworkPolicy", "networking.k8s.io/v1", True),
    "rolebindings": ("RoleBinding", "rbac.authorization.k8s.io/v1", True),
}


def _status(code: int, reason: str, message: str, **details: Any) -> JSONResponse:
    return JSONResponse(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code,
        },
        status_code=code,
    )


def _selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key.rstrip("=")) != value:
                return False
        elif term not in labels:
            return False
    return True


class FakeKubernetes(ThreadedServer):
    """Objects by (plural, namespace, name); ``token`` is the bearer token it accepts."""

    def __init__(self, token: str = "fake-sa-token") -> None:
        super().__init__()
        self.token = token
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._rv = itertools.count(1000)
        self._lock = threading.Lock()
        routes = []
        for prefix in ("/api/{version}", "/apis/{group}/{version}"):
            routes += [
                Route(prefix + "/{plural}", self._collection, methods=["GET"]),
                Route(prefix + "/{plural}/{name}", self._item, methods=["GET", "PATCH", "DELETE"]),
                Route(prefix + "/namespaces/{ns}/{plural}", self._collection, methods=["GET"]),
                Route(
                    prefix + "/namespaces/{ns}/{plural}/{name}",
                    self._item,
                    methods=["GET", "PATCH", "DELETE"],
                ),
            ]
        self.app = Starlette(routes=routes)

    def get(self, kind_plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The stored object (for assertions), or None."""
        return self.objects.get((kind_plural, namespace, name))

    def edit(self, kind_plural: str, namespace: str, name: str, change: Any) -> None:
        """Change a live object as a person with kubectl edit would (drift)."""
        with self._lock:
            change(self.objects[(kind_plural, namespace, name)])

    def _auth(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        return None

    def _resource(self, request: Request) -> tuple[str, str, str, bool] | JSONResponse:
        plural = request.path_params["plural"]
        if plural not in K8S_RESOURCES:
            return _status(404, "NotFound", "the server could not find the requested resource")
        kind, api_version, namespaced = K8S_RESOURCES[plural]
        group = request.path_params.get("group")
        version = request.path_params["version"]
        if (f"{group}/{version}" if group else version) != api_version:
            return _status(404, "NotFound", "the server could not find the requested resource")
        if namespaced != ("ns" in request.path_params):
            return _status(404, "NotFound", "the server could not find the requested resource")
        return plural, kind, api_version, namespaced

    async def _collection(self, request: Request) -> Response:
        self._record(request)
        if (denied := self._auth(request)) is not None:
            return denied
        resource = self._resource(request)
        if isinstance(resource, JSONResponse):
            return resource
        plural, kind, api_version, _ = resource
        ns = request.path_params.get("ns", "")
        selector = request.query_params.get("labelSelector", "")
        with self._lock:
            items = []
            for (p, n, _name), obj in sorted(self.objects.items()):
                if p != plural or (ns and n != ns):
                    continue
                if not _selector_matches(selector, obj["metadata"].get("labels") or {}):
                    continue
                item = copy.deepcopy(obj)
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        return JSONResponse(
            {
                "kind": f"{kind}List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(next(self._rv))},
                "items": items,
            }
        )

    async def _item(self, request: Request) -> Response:
        body = await request.body()
        self._record(request, body)
        if (denied := self._auth(request)) is not None:
            return denied
        resource = self._resource(request)
        if isinstance(resource, JSONResponse):
            return resource
        plural, kind, api_version, namespaced = resource
        ns = request.path_params.get("ns", "")
        name = request.path_params["name"]
        key = (plural, ns, name)
        if request.method == "GET":
            with self._lock:
                obj = self.objects.get(key)
            if obj is None:
                return _status(
                    404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural
                )
            return JSONResponse(copy.deepcopy(obj))
        if request.method == "DELETE":
            with self._lock:
                obj = self.objects.pop(key, None)
                if obj is not None and plural == "namespaces":
                    for other in [k for k in self.objects if k[1] == name]:
                        del self.objects[other]
            if obj is None:
                return _status(
                    404, "NotFound", f'{plural} "{name}" not found', name=name, kind=plural
                )
            return JSONResponse(obj)
        # PATCH: only server-side apply is part of the contract the control plane uses.
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip() != "application/apply-patch+yaml":
            return _status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {content_type}",
            )
        manager = request.query_params.get("fieldManager")
        if not manager:
            return _status(
                400,
                "BadRequest",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        try:
            applied = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            return _status(400, "BadRequest", f"error decoding YAML: {exc}")
        meta = applied.get("metadata") or {}
        if applied.get("kind") != kind or applied.get("apiVersion") != api_version:
            return _status(400, "BadRequest", "apiVersion/kind of the body do not match the path")
        if meta.get("name") != name or (namespaced and meta.get("namespace", ns) != ns):
            return _status(
                400, "BadRequest", "the name of the object does not match the name on the URL"
            )
        if namespaced and ("namespaces", "", ns) not in self.objects:
            return _status(
                404, "NotFound", f'namespaces "{ns}" not found', name=ns, kind="namespaces"
            )
        with self._lock:
            current = self.objects.get(key)
            created = current is None
            obj = copy.deepcopy(applied)
            obj["metadata"] = {**copy.deepcopy(meta)}
            if namespaced:
                obj["metadata"]["namespace"] = ns
            server_meta = (current or {}).get("metadata") or {
                "uid": str(uuid.uuid4()),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            }
            obj["metadata"]["uid"] = server_meta["uid"]
            obj["metadata"]["creationTimestamp"] = server_meta["creationTimestamp"]
            obj["metadata"]["resourceVersion"] = str(next(self._rv))
            obj["metadata"]["managedFields"] = [
                {"manager": manager, "operation": "Apply", "apiVersion": api_version}
            ]
            if plural == "namespaces":
                obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
                obj["spec"] = {"finalizers": ["kubernetes"]}
                obj["status"] = {"phase": "Active"}
            if plural == "resourcequotas":
                obj["status"] = {"hard": copy.deepcopy(obj["spec"]["hard"]), "used": {}}
            self.objects[key] = obj
        return JSONResponse(copy.deepcopy(obj), status_code=201 if created else 200)


# ---------------------------------------------------------------------------- MLflow


class FakeMlflow(ThreadedServer):
    """Experiments and mlflow-oidc-auth group permissions."""

    def __init__(self, token: str = "mlflow-admin-token") -> None:
        super().__init__()
        self.token = token
        self.experiments: dict[str, dict[str, Any]] = {
            "0": {
                "experiment_id": "0",
                "name": "Default",
                "artifact_location": "s3://mlflow/0",
                "lifecycle_stage": "active",
                "tags": [],
            }
        }
        self.permissions: dict[tuple[str, str], str] = {}  # (group, experiment id) -> level
        self.groups: set[str] = set()  # known to mlflow-oidc-auth (sign-in or POST)
        self._ids = itertools.count(100)
        api = "/api/2.0/mlflow"
        self.app = Starlette(
            routes=[
                Route(f"{api}/experiments/get-by-name", self._get_by_name, methods=["GET"]),
                Route(f"{api}/experiments/create", self._create, methods=["POST"]),
                Route(f"{api}/experiments/delete", self._lifecycle("deleted"), methods=["POST"]),
                Route(f"{api}/experiments/restore", self._lifecycle("active"), methods=["POST"]),
                Route(f"{api}/experiments/set-experiment-tag", self._set_tag, methods=["POST"]),
                Route(f"{api}/experiments/search", self._search, methods=["POST"]),
                Route(f"{api}/permissions/groups", self._create_group, methods=["POST"]),
                Route(
                    f"{api}/permissions/groups/{{group:path}}/experiments/{{experiment_id}}",
                    self._permission,
                    methods=["POST", "PATCH", "DELETE"],
                ),
                Route(
                    f"{api}/permissions/groups/{{group:path}}/experiments",
                    self._group_experiments,
                    methods=["GET"],
                ),
            ]
        )

    def writes(self) -> list[dict[str, Any]]:
        """Requests that could change state (search is a read sent as POST)."""
        return [e for e in super().writes() if not e["path"].endswith("/search")]

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((e for e in self.experiments.values() if e["name"] == name), None)

    @staticmethod
    def _error(code: str, message: str, status: int) -> JSONResponse:
        return JSONResponse({"error_code": code, "message": message}, status_code=status)

    def _denied(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"detail": "Unauthorized"}, status_code=401)
        return None

    async def _body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        self._record(request, raw)
        return (await request.json()) if raw else {}

    async def _get_by_name(self, request: Request) -> Response:
        self._record(request)
        if (denied := self._denied(request)) is not None:
            return denied
        name = request.query_params.get("experiment_name", "")
        experiment = self.by_name(name)
        if experiment is None:
            return self._error(
                "RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with name '{name}'", 404
            )
        return JSONResponse({"experiment": copy.deepcopy(experiment)})

    async def _create(self, request: Request) -> Response:
        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        name = body.get("name")
        if not name:
            return self._error(
                "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'", 400
            )
        if self.by_name(name) is not None:
            return self._error(
                "RESOURCE_ALREADY_EXISTS", f"Experiment '{name}' already exists.", 400
            )
        experiment_id = str(next(self._ids))
        self.experiments[experiment_id] = {
            "experiment_id": experiment_id,
            "name": name,
            "artifact_location": f"s3://mlflow/{experiment_id}",
            "lifecycle_stage": "active",
            "tags": list(body.get("tags") or []),
        }
        return JSONResponse({"experiment_id": experiment_id})

    def _lifecycle(self, stage: str) -> Any:
        async def handler(request: Request) -> Response:
            body = await self._body(request)
            if (denied := self._denied(request)) is not None:
                return denied
            experiment = self.experiments.get(str(body.get("experiment_id")))
            if experiment is None:
                return self._error("RESOURCE_DOES_NOT_EXIST", "No Experiment with id", 404)
            experiment["lifecycle_stage"] = stage
            return JSONResponse({})

        return handler

    async def _set_tag(self, request: Request) -> Response:
        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        experiment = self.experiments.get(str(body.get("experiment_id")))
        if experiment is None:
            return self._error("RESOURCE_DOES_NOT_EXIST", "No Experiment with id", 404)
        tags = [t for t in experiment["tags"] if t["key"] != body["key"]]
        experiment["tags"] = [*tags, {"key": body["key"], "value": body["value"]}]
        return JSONResponse({})

    async def _search(self, request: Request) -> Response:
        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        view = body.get("view_type", "ACTIVE_ONLY")
        flt = body.get("filter") or ""
        tag_key = None
        if flt:
            match = re.fullmatch(r"tags\.`([^`]+)` LIKE '%'", flt)
            if match is None:
                return self._error("INVALID_PARAMETER_VALUE", f"Invalid filter '{flt}'", 400)
            tag_key = match.group(1)
        found = []
        for experiment in self.experiments.values():
            if view == "ACTIVE_ONLY" and experiment["lifecycle_stage"] != "active":
                continue
            if tag_key and not any(t["key"] == tag_key for t in experiment["tags"]):
                continue
            found.append(copy.deepcopy(experiment))
        return JSONResponse({"experiments": found} if found else {})

    async def _group_experiments(self, request: Request) -> Response:
        self._record(request)
        if (denied := self._denied(request)) is not None:
            return denied
        group = request.path_params["group"]
        items = [
            {"id": eid, "name": self.experiments[eid]["name"], "permission": level}
            for (g, eid), level in sorted(self.permissions.items())
            if g == group and eid in self.experiments
        ]
        return JSONResponse(items)

    async def _create_group(self, request: Request) -> Response:
        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        name = str(body.get("group_name") or "").strip()
        if not name:
            return JSONResponse({"detail": "Group name must not be empty"}, status_code=400)
        if name in self.groups:
            return JSONResponse({"message": f"Group {name} already exists"})
        self.groups.add(name)
        return JSONResponse({"message": f"Group {name} successfully created"}, status_code=201)

    async def _permission(self, request: Request) -> Response:
        body = await self._body(request)
        if (denied := self._denied(request)) is not None:
            return denied
        group = request.path_params["group"]
        experiment_id = request.path_params["experiment_id"]
        if experiment_id not in self.experiments:
            return JSONResponse({"detail": "Experiment not found"}, status_code=404)
        if request.method == "DELETE":
            self.permissions.pop((group, experiment_id), None)
            return JSONResponse({"message": "deleted"})
        if group not in self.groups:
            # the store's lookup of an unknown group fails; the route maps it to a 500
            return JSONResponse(
                {"detail": "Failed to create group experiment permission"}, status_code=500
            )
        if body.get("permission") not in {"READ", "EDIT", "MANAGE", "NO_PERMISSIONS"}:
            return JSONResponse({"detail": "invalid permission"}, status_code=422)
        self.permissions[(group, experiment_id)] = body["permission"]
        status = 201 if request.method == "POST" else 200
        return JSONResponse({"message": "Experiment permission saved"}, status_code=status)


# ---------------------------------------------------------------------------- Langfuse


class FakeLangfuse(ThreadedServer):
    """One organization; ``plan`` is the licence plan (``self-hosted:enterprise`` or ``oss``)."""

    def __init__(
        self,
        public_key: str = "pk-lf-org",
        secret_key: str = "sk-lf-org",
        plan: str = "self-hosted:enterprise",
    ) -> None:
        super().__init__()
        self.credentials = base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.plan = plan
        self.projects: dict[str, dict[str, Any]] = {}
        self.app = Starlette(
            routes=[
                Route("/api/public/organizations/projects", self._list, methods=["GET"]),
                Route("/api/public/projects", self._create, methods=["POST"]),
                Route("/api/public/projects/{project_id}", self._one, methods=["PUT", "DELETE"]),
            ]
        )

    def live(self) -> dict[str, dict[str, Any]]:
        """Projects not deleted, by name."""
        return {p["name"]: p for p in self.projects.values() if not p.get("deletedAt")}

    def _check(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Basic {self.credentials}":
            return JSONResponse({"error": "Invalid credentials"}, status_code=401)
        if self.plan != "self-hosted:enterprise":
            return JSONResponse(
                {"error": "This feature is not available on your current plan."}, status_code=403
            )
        return None

    async def _list(self, request: Request) -> Response:
        self._record(request)
        if (denied := self._check(request)) is not None:
            return denied
        return JSONResponse(
            {
                "projects": [
                    {
                        "id": p["id"],
                        "name": p["name"],
                        "metadata": p["metadata"],
                        "createdAt": "2026-01-01T00:00:00.000Z",
                        "updatedAt": "2026-01-01T00:00:00.000Z",
                    }
                    for p in self.live().values()
                ]
            }
        )

    async def _create(self, request: Request) -> Response:
        raw = await request.body()
        self._record(request, raw)
        if (denied := self._check(request)) is not None:
            return denied
        body = await request.json()
        name = body.get("name") or ""
        if not 3 <= len(name) <= 60:
            return JSONResponse(
                {"message": "Invalid project name. Should be between 3 and 60 characters."},
                status_code=400,
            )
        if name in self.live():
            return JSONResponse(
                {"message": "A project with this name already exists in your organization"},
                status_code=409,
            )
        project = {
            "id": f"cl{uuid.uuid4().hex[:22]}",
            "name": name,
            "metadata": body.get("metadata") or {},
        }
        self.projects[project["id"]] = project
        return JSONResponse(
            {"id": project["id"], "name": name, "metadata": project["metadata"]}, status_code=201
        )

    async def _one(self, request: Request) -> Response:
        raw = await request.body()
        self._record(request, raw)
        if (denied := self._check(request)) is not None:
            return denied
        project = self.projects.get(request.path_params["project_id"])
        if project is None or project.get("deletedAt"):
            return JSONResponse({"message": "Project not found"}, status_code=404)
        if request.method == "DELETE":
            project["deletedAt"] = "now"
            return JSONResponse(
                {
                    "success": True,
                    "message": "Project deletion has been initiated and is being processed "
                    "asynchronously",
                },
                status_code=202,
            )
        body = await request.json()
        project["name"] = body["name"]
        if "metadata" in body:
            project["metadata"] = body["metadata"]
        return JSONResponse(
            {"id": project["id"], "name": project["name"], "metadata": project["metadata"]}
        )


# ---------------------------------------------------------------------------- OPA


class FakeOpa(ThreadedServer):
    """``data.llmflow.tenants`` through OPA's Data API."""

    def __init__(self) -> None:
        super().__init__()
        self.tenants: dict[str, Any] | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/data/llmflow/tenants", self._all, methods=["GET"]),
                Route("/v1/data/llmflow/tenants/{tenant}", self._one, methods=["PUT", "DELETE"]),
            ]
        )

    async def _all(self, request: Request) -> Response:
        self._record(request)
        # An undefined document: 200 without "result".
        return JSONResponse({} if self.tenants is None else {"result": self.tenants})

    async def _one(self, request: Request) -> Response:
        raw = await request.body()
        self._record(request, raw)
        tenant = request.path_params["tenant"]
        if request.method == "PUT":
            self.tenants = {**(self.tenants or {}), tenant: await request.json()}
            return Response(status_code=204)
        if not self.tenants or tenant not in self.tenants:
            return JSONResponse(
                {"code": "resource_not_found", "message": "storage_not_found_error"},
                status_code=404,
            )
        del self.tenants[tenant]
        return Response(status_code=204)
