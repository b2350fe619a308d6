"""A contract replay of Dify 1.14.2's console API for the calls LLMFlow makes.

Dify cannot run here; this double replays what the pinned version does (read from
langgenius/dify, see docs/dify.md "Automatic wiring"):

* Auth (``api/extensions/ext_login.py``): ``Authorization: Bearer <ADMIN_API_KEY>`` plus an
  ``X-WORKSPACE-ID`` of an existing workspace acts as that workspace's owner. A header
  without a space or with another scheme → 401 "Invalid Authorization header format...";
  a wrong key, or the admin key without/with an unknown workspace → the session-token path
  fails → 401 ``{"code": "unauthorized", "message": "Invalid Authorization token.",
  "status": 401}``.
* Errors as ``{"code", "message", "status"}``; a ``ValueError`` in a service is 400
  ``invalid_param``; duplicate dataset name 409 ``dataset_name_duplicate``.
* External knowledge API create (``ExternalDatasetService.check_endpoint_and_api_key``):
  probes ``POST {endpoint}/retrieval`` with ``Authorization: Bearer <api_key>`` and no body;
  a 502 / 404 / 403 answer refuses the registration with 400. Update does not probe.
* Model credentials: secret inputs come back obfuscated (first 6 + 12 ``*`` + last 2).
* Tool providers: ``api/get`` masks ``api_key_value``; ``add`` of an existing provider is
  400 "provider ... already exists".
* DSL import: 200 ``completed``/``completed-with-warnings``, 202 ``pending`` when the
  imported version is newer than the current one or of an older major (then ``confirm``),
  400 ``failed``.

The routes are one table (:attr:`FakeDifyConsole.routes`): other contract tests add theirs
with :meth:`FakeDifyConsole.add_route`. Run it on a port (:meth:`start`) or in-process
(:meth:`transport`); the registration probe goes through ``probe_transport`` when given
(e.g. an ``httpx.ASGITransport`` of LLMFlow's real app), else over the network.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import yaml
from local_server import LocalServer
from packaging.version import Version
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CURRENT_DSL_VERSION = "0.6.0"
HIDDEN_VALUE = "[__HIDDEN__]"
Handler = Callable[["FakeDifyConsole", "Workspace", Request], Awaitable[Response]]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status)


def obfuscated(token: str) -> str:
    """Dify's ``encrypter.obfuscated_token``."""
    if not token:
        return token
    if len(token) <= 8:
        return "*" * 20
    return token[:6] + "*" * 12 + token[-2:]


class DifyValueError(Exception):
    """A service-level ``ValueError``: Dify answers 400 ``invalid_param``."""


@dataclass
class Workspace:
    """One Dify workspace (tenant in Dify's words) and what it holds."""

    id: str
    external_apis: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    credentials: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_imports: dict[str, dict[str, Any]] = field(default_factory=dict)


class FakeDifyConsole(LocalServer):
    """Dify's ``/console/api`` for one instance with one or more workspaces."""

    def __init__(
        self,
        admin_key: str,
        workspaces: list[str] | None = None,
        *,
        probe_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.admin_key = admin_key
        self.workspaces = {w: Workspace(w) for w in workspaces or [str(uuid.uuid4())]}
        self.probe_transport = probe_transport
        # The DSL version the replayed Dify runs (``CURRENT_APP_DSL_VERSION``).
        self.dsl_version = CURRENT_DSL_VERSION
        self.calls: list[tuple[str, str]] = []
        self.probes: list[tuple[str, int]] = []
        self._ids = itertools.count(1)
        self.routes: list[tuple[str, str, Handler]] = [
            ("/datasets/external-knowledge-api", "GET", _list_external_apis),
            ("/datasets/external-knowledge-api", "POST", _create_external_api),
            ("/datasets/external-knowledge-api/{api_id}", "PATCH", _update_external_api),
            ("/datasets", "GET", _list_datasets),
            ("/datasets/external", "POST", _create_external_dataset),
            ("/datasets/{dataset_id}", "PATCH", _update_dataset),
            ("/datasets/{dataset_id}", "DELETE", _delete_dataset),
            (
                "/workspaces/current/model-providers/{provider:path}/models/credentials",
                "GET",
                _get_credentials,
            ),
            (
                "/workspaces/current/model-providers/{provider:path}/models/credentials",
                "POST",
                _create_credentials,
            ),
            (
                "/workspaces/current/model-providers/{provider:path}/models/credentials",
                "PUT",
                _update_credentials,
            ),
            ("/workspaces/current/model-providers/{provider:path}/models", "GET", _list_models),
            ("/workspaces/current/tools/api", "GET", _list_tools),
            ("/workspaces/current/tool-provider/api/get", "GET", _get_tool),
            ("/workspaces/current/tool-provider/api/schema", "POST", _parse_schema),
            ("/workspaces/current/tool-provider/api/add", "POST", _add_tool),
            ("/workspaces/current/tool-provider/api/update", "POST", _update_tool),
            ("/apps", "GET", _list_apps),
            ("/apps/imports", "POST", _import_app),
            ("/apps/imports/{import_id}/confirm", "POST", _confirm_import),
            ("/apps/{app_id}", "DELETE", _delete_app),
        ]
        self._build()

    def add_route(self, path: str, method: str, handler: Handler) -> None:
        """Add (or override) a console route; ``path`` is relative to ``/console/api``."""
        self.routes = [r for r in self.routes if (r[0], r[1]) != (path, method)]
        self.routes.insert(0, (path, method, handler))
        self._build()

    def _build(self) -> None:
        table: dict[str, dict[str, Handler]] = {}
        for path, method, handler in self.routes:
            table.setdefault(path, {})[method] = handler
        self.app = Starlette(
            routes=[
                Route(f"/console/api{path}", self._endpoint(methods), methods=list(methods))
                for path, methods in table.items()
            ]
        )

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport for ``DifyConsole(..., transport=...)``."""
        return httpx.ASGITransport(app=self.app)

    def new_id(self) -> str:
        return str(uuid.UUID(int=next(self._ids)))

    def _endpoint(self, methods: dict[str, Handler]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            self.calls.append((request.method, request.url.path))
            header = request.headers.get("authorization", "")
            if header:
                if " " not in header or header.split(" ", 1)[0].lower() != "bearer":
                    return _error(
                        401,
                        "unauthorized",
                        "Invalid Authorization header format. Expected 'Bearer <api-key>' format.",
                    )
                token = header.split(" ", 1)[1].strip()
            else:
                token = request.query_params.get("_token", "")
            workspace = self.workspaces.get(request.headers.get("x-workspace-id", ""))
            if not token or token != self.admin_key or workspace is None:
                # The admin-key branch did not match: Dify verifies the token as a session
                # JWT, which an API key or a missing workspace never is.
                return _error(401, "unauthorized", "Invalid Authorization token.")
            try:
                return await methods[request.method](self, workspace, request)
            except DifyValueError as exc:
                return _error(400, "invalid_param", str(exc))

        return endpoint

    async def probe(self, endpoint: str, api_key: str) -> None:
        """``check_endpoint_and_api_key``: POST {endpoint}/retrieval, no body."""
        url = f"{endpoint}/retrieval"
        if not url.startswith(("http://", "https://")):
            raise DifyValueError(f"invalid endpoint: {url} must start with http:// or https://")
        try:
            async with httpx.AsyncClient(transport=self.probe_transport, timeout=10) as client:
                response = await client.post(url, headers={"Authorization": f"Bearer {api_key}"})
        except httpx.HTTPError as exc:
            raise DifyValueError(f"failed to connect to the endpoint: {url}") from exc
        self.probes.append((url, response.status_code))
        if response.status_code == 502:
            raise DifyValueError(f"Bad Gateway: failed to connect to the endpoint: {url}")
        if response.status_code == 404:
            raise DifyValueError(f"Not Found: failed to connect to the endpoint: {url}")
        if response.status_code == 403:
            raise DifyValueError(f"Forbidden: Authorization failed with api_key: {api_key}")


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise DifyValueError("invalid JSON body") from exc
    if not isinstance(data, dict):
        raise DifyValueError("the body must be an object")
    return data


def _page(request: Request, items: list[dict[str, Any]]) -> JSONResponse:
    page = int(request.query_params.get("page", 1))
    limit = int(request.query_params.get("limit", 20))
    chunk = items[(page - 1) * limit : page * limit]
    return JSONResponse(
        {
            "data": chunk,
            "has_more": len(chunk) == limit,
            "limit": limit,
            "total": len(items),
            "page": page,
        }
    )


# ------------------------------------------------------------------ external knowledge


def _external_api_view(ws: Workspace, api: dict[str, Any]) -> dict[str, Any]:
    bindings = [
        {"id": d["id"], "name": d["name"]}
        for d in ws.datasets.values()
        if d["external_knowledge_info"]["external_knowledge_api_id"] == api["id"]
    ]
    return {**api, "tenant_id": ws.id, "dataset_bindings": bindings}


def _check_api_payload(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    name = body.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 40:
        raise DifyValueError("name: String should have between 1 and 40 characters")
    settings = body.get("settings")
    if not isinstance(settings, dict) or not settings:
        raise DifyValueError("api list is empty")
    if not settings.get("endpoint"):
        raise DifyValueError("endpoint is required")
    if not settings.get("api_key"):
        raise DifyValueError("api_key is required")
    return name, settings


async def _list_external_apis(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    items = [_external_api_view(ws, a) for a in reversed(list(ws.external_apis.values()))]
    return _page(request, items)


async def _create_external_api(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    name, settings = _check_api_payload(await _body(request))
    body = await request.json()
    await fake.probe(str(settings["endpoint"]), str(settings["api_key"]))
    api = {
        "id": fake.new_id(),
        "name": name,
        "description": body.get("description") or "",
        "settings": settings,
        "created_by": "owner",
        "created_at": "2026-11-22T00:00:00",
    }
    ws.external_apis[api["id"]] = api
    return JSONResponse(_external_api_view(ws, api), 201)


async def _update_external_api(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    name, settings = _check_api_payload(await _body(request))
    api = ws.external_apis.get(request.path_params["api_id"])
    if api is None:
        raise DifyValueError("api template not found")
    if settings.get("api_key") == HIDDEN_VALUE:
        settings["api_key"] = api["settings"]["api_key"]
    api.update(name=name, description=(await request.json()).get("description") or "")
    api["settings"] = settings
    return JSONResponse(_external_api_view(ws, api))


async def _list_datasets(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    return _page(request, list(ws.datasets.values()))


async def _create_external_dataset(
    fake: FakeDifyConsole, ws: Workspace, request: Request
) -> Response:
    body = await _body(request)
    for key in ("external_knowledge_api_id", "external_knowledge_id", "name"):
        if not isinstance(body.get(key), str):
            raise DifyValueError(f"{key}: Field required")
    if not 1 <= len(body["name"]) <= 100:
        raise DifyValueError("name: String should have between 1 and 100 characters")
    if any(d["name"] == body["name"] for d in ws.datasets.values()):
        return _error(409, "dataset_name_duplicate", "The dataset name already exists.")
    api = ws.external_apis.get(body["external_knowledge_api_id"])
    if api is None:
        raise DifyValueError("api template not found")
    dataset = {
        "id": fake.new_id(),
        "name": body["name"],
        "description": body.get("description") or "",
        "provider": "external",
        "permission": "only_me",
        "indexing_technique": None,
        "external_retrieval_model": body.get("external_retrieval_model"),
        "external_knowledge_info": {
            "external_knowledge_id": body["external_knowledge_id"],
            "external_knowledge_api_id": api["id"],
            "external_knowledge_api_name": api["name"],
            "external_knowledge_api_endpoint": api["settings"]["endpoint"],
        },
    }
    ws.datasets[dataset["id"]] = dataset
    return JSONResponse(dataset, 201)


async def _update_dataset(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    """``DatasetService.update_dataset`` for an external dataset: both external ids are
    required on every update; ``permission`` is one of the three values."""
    dataset = ws.datasets.get(request.path_params["dataset_id"])
    if dataset is None:
        return _error(404, "not_found", "Dataset not found.")
    body = await _body(request)
    name = body.get("name", dataset["name"])
    if any(d["name"] == name and d["id"] != dataset["id"] for d in ws.datasets.values()):
        raise DifyValueError("Dataset name already exists")
    permission = body.get("permission")
    if permission not in (None, "only_me", "all_team_members", "partial_members"):
        raise DifyValueError(f"permission: Input should be a valid permission: {permission}")
    if permission == "partial_members" and not body.get("partial_member_list"):
        raise DifyValueError("Invalid parameter: partial_member_list is required")
    if dataset["provider"] == "external":
        if not body.get("external_knowledge_id"):
            raise DifyValueError("External knowledge id is required.")
        if not body.get("external_knowledge_api_id"):
            raise DifyValueError("External knowledge api id is required.")
        info = dataset["external_knowledge_info"]
        info["external_knowledge_id"] = body["external_knowledge_id"]
        info["external_knowledge_api_id"] = body["external_knowledge_api_id"]
    dataset.update(name=name, description=body.get("description", dataset["description"]))
    if permission:
        dataset["permission"] = permission
    if body.get("external_retrieval_model"):
        dataset["external_retrieval_model"] = body["external_retrieval_model"]
    return JSONResponse(dataset)


async def _delete_dataset(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    if ws.datasets.pop(request.path_params["dataset_id"], None) is None:
        return _error(404, "not_found", "Dataset not found.")
    return Response(status_code=204)


# ---------------------------------------------------------------------- model providers

MODEL_TYPES = ("llm", "text-embedding", "rerank", "speech2text", "moderation", "tts")


def _model_args(source: dict[str, Any]) -> tuple[str, str]:
    model, model_type = source.get("model"), source.get("model_type")
    if not model:
        raise DifyValueError("model: Field required")
    if model_type not in MODEL_TYPES:
        raise DifyValueError(f"model_type: Input should be one of {MODEL_TYPES}")
    return str(model), str(model_type)


async def _list_models(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    provider = request.path_params["provider"]
    data = [
        {
            "model": m,
            "label": {"en_US": m},
            "model_type": t,
            "fetch_from": "customizable-model",
            "status": "active",
            "load_balancing_enabled": False,
        }
        for (p, m, t) in ws.credentials
        if p == provider
    ]
    return JSONResponse({"data": data})


async def _get_credentials(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    model, model_type = _model_args(dict(request.query_params))
    current = ws.credentials.get((request.path_params["provider"], model, model_type))
    creds = dict(current["credentials"]) if current else {}
    if "api_key" in creds:
        creds["api_key"] = obfuscated(str(creds["api_key"]))
    return JSONResponse(
        {
            "credentials": creds,
            "current_credential_id": current["id"] if current else None,
            "current_credential_name": current["name"] if current else None,
            "load_balancing": {"enabled": False, "configs": []},
            "available_credentials": (
                [{"credential_id": current["id"], "credential_name": current["name"]}]
                if current
                else []
            ),
        }
    )


def _validate_credentials(provider: str, creds: dict[str, Any]) -> None:
    if provider.startswith("langgenius/openai_api_compatible") and not str(
        creds.get("endpoint_url", "")
    ).startswith(("http://", "https://")):
        raise DifyValueError("Credentials validation failed: endpoint_url is required")


async def _create_credentials(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    model, model_type = _model_args(body)
    provider = request.path_params["provider"]
    if not isinstance(body.get("credentials"), dict):
        raise DifyValueError("credentials: Field required")
    if len(body.get("name") or "") > 30:
        raise DifyValueError("name: String should have at most 30 characters")
    _validate_credentials(provider, body["credentials"])
    ws.credentials[(provider, model, model_type)] = {
        "id": fake.new_id(),
        "name": body.get("name") or "API KEY 1",
        "credentials": dict(body["credentials"]),
    }
    return JSONResponse({"result": "success"}, 201)


async def _update_credentials(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    model, model_type = _model_args(body)
    provider = request.path_params["provider"]
    current = ws.credentials.get((provider, model, model_type))
    if current is None or current["id"] != body.get("credential_id"):
        raise DifyValueError("Credential record not found.")
    creds = dict(body.get("credentials") or {})
    if creds.get("api_key") == HIDDEN_VALUE:
        creds["api_key"] = current["credentials"].get("api_key")
    _validate_credentials(provider, creds)
    current["credentials"] = creds
    if body.get("name"):
        current["name"] = body["name"]
    return JSONResponse({"result": "success"})


# --------------------------------------------------------------------------------- tools


def _parse_openapi(schema: str) -> dict[str, Any]:
    try:
        document = yaml.safe_load(schema)
    except yaml.YAMLError as exc:
        raise DifyValueError("invalid schema, please check the url you provided") from exc
    if not isinstance(document, dict) or "openapi" not in document or not document.get("paths"):
        raise DifyValueError("invalid schema type")
    if not document.get("servers"):
        raise DifyValueError("No server found in the openapi yaml.")
    return document


def _operations(document: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch"):
                out.append({"operation_id": op.get("operationId") or path, "method": method})
    return out


async def _list_tools(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    return JSONResponse(
        [
            {"id": t["id"], "name": name, "type": "api", "tools": t["tools"]}
            for name, t in ws.tools.items()
        ]
    )


async def _get_tool(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    provider = request.query_params.get("provider", "")
    tool = ws.tools.get(provider)
    if tool is None:
        raise DifyValueError("you have not added provider " + provider)
    creds = dict(tool["credentials"])
    if creds.get("api_key_value"):
        creds["api_key_value"] = obfuscated(str(creds["api_key_value"]))
    return JSONResponse(
        {
            "schema_type": tool["schema_type"],
            "schema": tool["schema"],
            "tools": tool["tools"],
            "icon": tool["icon"],
            "description": "",
            "credentials": creds,
            "privacy_policy": tool.get("privacy_policy") or "",
            "custom_disclaimer": tool.get("custom_disclaimer") or "",
            "labels": tool.get("labels") or [],
        }
    )


async def _parse_schema(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    document = _parse_openapi(str(body.get("schema") or ""))
    return JSONResponse(
        {
            "schema_type": "openapi",
            "parameters_schema": _operations(document),
            "credentials_schema": [],
            "warning": {},
        }
    )


def _tool_args(body: dict[str, Any], *, update: bool) -> None:
    required = ["credentials", "schema_type", "schema", "provider", "icon"]
    if update:
        required += ["original_provider"]
    for key in required:
        if body.get(key) in (None, ""):
            raise DifyValueError(f"{key}: Missing required parameter in the JSON body")
    if update:
        for key in ("privacy_policy", "custom_disclaimer"):
            if key not in body:
                raise DifyValueError(f"{key}: Missing required parameter in the JSON body")


async def _add_tool(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    _tool_args(body, update=False)
    name = str(body["provider"]).strip()
    if name in ws.tools:
        raise DifyValueError(f"provider {name} already exists")
    document = _parse_openapi(str(body["schema"]))
    ws.tools[name] = {**body, "id": fake.new_id(), "tools": _operations(document)}
    return JSONResponse({"result": "success"})


async def _update_tool(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    _tool_args(body, update=True)
    original = ws.tools.pop(str(body["original_provider"]), None)
    if original is None:
        raise DifyValueError(f"api provider {body['original_provider']} does not exists")
    document = _parse_openapi(str(body["schema"]))
    creds = dict(body["credentials"])
    if creds.get("api_key_value") == obfuscated(str(original["credentials"].get("api_key_value"))):
        creds["api_key_value"] = original["credentials"]["api_key_value"]
    ws.tools[str(body["provider"])] = {
        **body,
        "credentials": creds,
        "id": original["id"],
        "tools": _operations(document),
    }
    return JSONResponse({"result": "success"})


# ---------------------------------------------------------------------------------- apps


def _version_status(current_version: str, imported: str) -> str:
    """``services/dsl_version.check_version_compatibility``."""
    current, version = Version(current_version), Version(imported)
    if version > current or version.major < current.major:
        return "pending"
    if version.minor < current.minor:
        return "completed-with-warnings"
    return "completed"


def _import_result(current: str, http_status: int, /, **fields: Any) -> JSONResponse:
    body = {
        "current_dsl_version": current,
        "id": fields.pop("id"),
        "status": fields.pop("status"),
        "app_id": fields.pop("app_id", None),
        "app_mode": fields.pop("app_mode", None),
        "imported_dsl_version": fields.pop("imported_dsl_version", ""),
        "error": fields.pop("error", ""),
    }
    return JSONResponse(body, http_status)


def _store_app(
    fake: FakeDifyConsole, ws: Workspace, data: dict[str, Any], app_id: str | None, name: str | None
) -> dict[str, Any]:
    app_data = data["app"]
    mode = app_data.get("mode")
    if mode in ("workflow", "advanced-chat") and not isinstance(data.get("workflow"), dict):
        raise DifyValueError("Missing workflow data for workflow/advanced chat app")
    if mode in ("chat", "agent-chat", "completion") and not isinstance(
        data.get("model_config"), dict
    ):
        raise DifyValueError("Missing model_config for chat/agent-chat/completion app")
    app = ws.apps.get(app_id or "") or {"id": fake.new_id(), "mode": mode}
    app.update(
        name=name or app_data.get("name", ""),
        description=app_data.get("description", ""),
        dsl=data,
    )
    ws.apps[app["id"]] = app
    return app


async def _import_app(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    body = await _body(request)
    import_id = str(uuid.uuid4())
    if body.get("mode") not in ("yaml-content", "yaml-url"):
        raise DifyValueError(f"Invalid import_mode: {body.get('mode')}")
    content = body.get("yaml_content")
    if not content:
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error="yaml_content is required when import_mode is yaml-content",
        )
    try:
        data = yaml.safe_load(content)
    except yaml.YAMLError as exc:
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error=f"Invalid YAML format: {exc}",
        )
    if not isinstance(data, dict):
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error="Invalid YAML format: content must be a mapping",
        )
    version = data.get("version") or "0.1.0"
    if not isinstance(version, str):
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error="Invalid version type, expected str",
        )
    if not data.get("app"):
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error="Missing app data in YAML content",
        )
    app_id = body.get("app_id")
    if app_id:
        app = ws.apps.get(app_id)
        if app is None:
            return _import_result(
                fake.dsl_version, 400, id=import_id, status="failed", error="App not found"
            )
        if app["mode"] not in ("workflow", "advanced-chat"):
            return _import_result(
                fake.dsl_version,
                400,
                id=import_id,
                status="failed",
                error="Only workflow or advanced chat apps can be overwritten",
            )
    status = _version_status(fake.dsl_version, version)
    if status == "pending":
        ws.pending_imports[import_id] = {"data": data, "app_id": app_id, "name": body.get("name")}
        return _import_result(
            fake.dsl_version,
            202,
            id=import_id,
            status=status,
            app_id=app_id,
            imported_dsl_version=version,
        )
    try:
        app = _store_app(fake, ws, data, app_id, body.get("name"))
    except DifyValueError as exc:
        return _import_result(fake.dsl_version, 400, id=import_id, status="failed", error=str(exc))
    return _import_result(
        fake.dsl_version,
        200,
        id=import_id,
        status=status,
        app_id=app["id"],
        app_mode=app["mode"],
        imported_dsl_version=version,
    )


async def _confirm_import(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    import_id = request.path_params["import_id"]
    pending = ws.pending_imports.pop(import_id, None)
    if pending is None:
        return _import_result(
            fake.dsl_version,
            400,
            id=import_id,
            status="failed",
            error="Import information expired or does not exist",
        )
    app = _store_app(fake, ws, pending["data"], pending["app_id"], pending["name"])
    return _import_result(
        fake.dsl_version,
        200,
        id=import_id,
        status="completed",
        app_id=app["id"],
        app_mode=app["mode"],
        imported_dsl_version=str(pending["data"].get("version")),
    )


async def _list_apps(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    items = [{k: v for k, v in app.items() if k != "dsl"} for app in ws.apps.values()]
    return _page(request, items)


async def _delete_app(fake: FakeDifyConsole, ws: Workspace, request: Request) -> Response:
    if ws.apps.pop(request.path_params["app_id"], None) is None:
        return _error(404, "app_not_found", "App not found.")
    return Response(status_code=204)
