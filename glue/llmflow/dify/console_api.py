"""Typed calls of Dify's console API that the automatic wiring needs, one method per call.

Every method names the exact call (method, path under ``/console/api``, body) as Dify
:data:`~llmflow.dify.client.DIFY_VERSION` defines it. Read from langgenius/dify:

* ``api/extensions/ext_login.py`` — the admin API key: ``Authorization: Bearer
  <ADMIN_API_KEY>`` + ``X-WORKSPACE-ID`` loads the workspace *owner*; a wrong key or a
  missing workspace header falls through to session-token verification → 401
  ``{"code": "unauthorized", ...}``.
* ``api/controllers/console/datasets/external.py`` and
  ``api/services/external_knowledge_service.py`` — external knowledge API templates and
  external datasets; creating a template probes ``POST {endpoint}/retrieval`` with the key
  and no body (502/404/403 from the endpoint refuse the registration).
* ``api/controllers/console/workspace/models.py`` — per-model credentials of a (plugin)
  provider (``ModelType`` values ``llm``, ``text-embedding``, ``rerank``; credential names
  at most 30 characters).
* ``api/controllers/console/workspace/tool_providers.py`` — API-based custom tools.
* ``api/controllers/console/app/app_import.py`` and ``api/services/app_dsl_service.py`` —
  DSL import (200 completed, 202 pending → confirm, 400 failed).

Secrets passed to these methods go only into request bodies; nothing here logs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from llmflow.dify.client import DifyConsole, DifyError

OPENAI_COMPATIBLE_PROVIDER = "langgenius/openai_api_compatible/openai_api_compatible"
"""The plugin provider id of "OpenAI-API-compatible" (plugin/provider/provider name)."""

MODEL_TYPES = ("llm", "text-embedding", "rerank")
"""Dify's ``ModelType`` values for the three kinds the gateway serves."""

PAGE_LIMIT = 100
"""Dify caps list pages at 100 (``max_per_page=100``)."""


def _items(body: Any) -> list[dict[str, Any]]:
    if isinstance(body, Mapping):
        data = body.get("data")
        if isinstance(data, list):
            return [cast(dict[str, Any], d) for d in data if isinstance(d, Mapping)]
    if isinstance(body, list):
        return [cast(dict[str, Any], d) for d in body if isinstance(d, Mapping)]
    return []


class DifyConsoleApi:
    """The console calls of the wiring over one :class:`DifyConsole` (admin key + workspace)."""

    def __init__(self, console: DifyConsole) -> None:
        self.console = console

    async def _pages(self, path: str, params: Mapping[str, Any] | None = None) -> list[Any]:
        """Every item of a paginated list (``{data, has_more, page, limit}``)."""
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self.console.request(
                "GET", path, params={**(params or {}), "page": page, "limit": PAGE_LIMIT}
            )
            items = _items(body)
            out += items
            if not (isinstance(body, Mapping) and body.get("has_more")) or not items:
                return out
            page += 1

    # ------------------------------------------------------------ external knowledge API

    async def list_external_knowledge_apis(self) -> list[dict[str, Any]]:
        """``GET /datasets/external-knowledge-api?page=&limit=`` → ``{data: [{id, name,
        description, settings: {endpoint, api_key}, dataset_bindings, ...}], has_more}``."""
        return await self._pages("/datasets/external-knowledge-api")

    async def create_external_knowledge_api(
        self, name: str, endpoint: str, api_key: str, description: str = ""
    ) -> dict[str, Any]:
        """``POST /datasets/external-knowledge-api`` ``{name (1..40), description,
        settings: {endpoint, api_key}}`` → 201 with the template.

        Dify first probes ``POST {endpoint}/retrieval`` (``Authorization: Bearer
        <api_key>``, no body); a 502, 404 or 403 answer becomes a 400 here.
        """
        body = {
            "name": name,
            "description": description,
            "settings": {"endpoint": endpoint, "api_key": api_key},
        }
        return cast(
            dict[str, Any],
            await self.console.request("POST", "/datasets/external-knowledge-api", json=body),
        )

    async def update_external_knowledge_api(
        self, api_id: str, name: str, endpoint: str, api_key: str, description: str = ""
    ) -> dict[str, Any]:
        """``PATCH /datasets/external-knowledge-api/{id}`` with the same body as create →
        200 (no probe on update in this version: only ``validate_api_list``)."""
        body = {
            "name": name,
            "description": description,
            "settings": {"endpoint": endpoint, "api_key": api_key},
        }
        return cast(
            dict[str, Any],
            await self.console.request(
                "PATCH", f"/datasets/external-knowledge-api/{api_id}", json=body
            ),
        )

    # ------------------------------------------------------------------------ datasets

    async def list_datasets(self) -> list[dict[str, Any]]:
        """``GET /datasets?page=&limit=&include_all=true`` → ``{data: [{id, name, provider,
        permission, external_knowledge_info: {external_knowledge_id,
        external_knowledge_api_id, ...}}]}`` (``include_all``: the owner sees every dataset,
        not only those shared with it)."""
        return await self._pages("/datasets", {"include_all": "true"})

    async def create_external_dataset(
        self,
        name: str,
        api_id: str,
        external_knowledge_id: str,
        retrieval: Mapping[str, Any],
        description: str = "",
    ) -> dict[str, Any]:
        """``POST /datasets/external`` ``{external_knowledge_api_id, external_knowledge_id,
        name (1..100), description (≤400), external_retrieval_model: {top_k,
        score_threshold, score_threshold_enabled}}`` → 201 dataset detail."""
        body = {
            "external_knowledge_api_id": api_id,
            "external_knowledge_id": external_knowledge_id,
            "name": name,
            "description": description,
            "external_retrieval_model": dict(retrieval),
        }
        return cast(
            dict[str, Any], await self.console.request("POST", "/datasets/external", json=body)
        )

    async def update_external_dataset(
        self,
        dataset_id: str,
        api_id: str,
        external_knowledge_id: str,
        *,
        permission: str,
        name: str | None = None,
    ) -> dict[str, Any]:
        """``PATCH /datasets/{id}`` ``{permission, external_knowledge_id,
        external_knowledge_api_id, name?}`` → 200 dataset detail.

        ``DatasetService._update_external_dataset`` requires both external ids on every
        update of an external dataset; ``permission`` is ``only_me``,
        ``all_team_members`` or ``partial_members``.
        """
        body: dict[str, Any] = {
            "permission": permission,
            "external_knowledge_id": external_knowledge_id,
            "external_knowledge_api_id": api_id,
        }
        if name:
            body["name"] = name
        return cast(
            dict[str, Any],
            await self.console.request("PATCH", f"/datasets/{dataset_id}", json=body),
        )

    async def delete_dataset(self, dataset_id: str) -> None:
        """``DELETE /datasets/{id}`` → 204 (removes the external binding with it)."""
        await self.console.request("DELETE", f"/datasets/{dataset_id}")

    # ------------------------------------------------------------------ model providers

    async def list_provider_models(self, provider: str) -> list[dict[str, Any]]:
        """``GET /workspaces/current/model-providers/{provider}/models`` → ``{data: [{model,
        model_type, fetch_from, status, ...}]}`` (customisable models the workspace holds)."""
        body = await self.console.request(
            "GET", f"/workspaces/current/model-providers/{provider}/models"
        )
        return _items(body)

    async def get_model_credentials(
        self, provider: str, model: str, model_type: str
    ) -> dict[str, Any]:
        """``GET /workspaces/current/model-providers/{provider}/models/credentials
        ?model=&model_type=`` → ``{credentials (secret inputs obfuscated),
        current_credential_id, current_credential_name, load_balancing,
        available_credentials}``."""
        body = await self.console.request(
            "GET",
            f"/workspaces/current/model-providers/{provider}/models/credentials",
            params={"model": model, "model_type": model_type},
        )
        return cast(dict[str, Any], body or {})

    async def create_model_credential(
        self,
        provider: str,
        model: str,
        model_type: str,
        credentials: Mapping[str, Any],
        name: str | None = None,
    ) -> None:
        """``POST /workspaces/current/model-providers/{provider}/models/credentials``
        ``{model, model_type, credentials, name (≤30)}`` → 201 ``{result: success}``; Dify
        validates the credentials through the plugin (one call to the endpoint)."""
        body: dict[str, Any] = {
            "model": model,
            "model_type": model_type,
            "credentials": dict(credentials),
        }
        if name:
            body["name"] = name[:30]
        await self.console.request(
            "POST", f"/workspaces/current/model-providers/{provider}/models/credentials", json=body
        )

    async def update_model_credential(
        self,
        provider: str,
        model: str,
        model_type: str,
        credential_id: str,
        credentials: Mapping[str, Any],
        name: str | None = None,
    ) -> None:
        """``PUT /workspaces/current/model-providers/{provider}/models/credentials``
        ``{model, model_type, credential_id, credentials, name}`` → 200."""
        body: dict[str, Any] = {
            "model": model,
            "model_type": model_type,
            "credential_id": credential_id,
            "credentials": dict(credentials),
        }
        if name:
            body["name"] = name[:30]
        await self.console.request(
            "PUT", f"/workspaces/current/model-providers/{provider}/models/credentials", json=body
        )

    # ----------------------------------------------------------------- custom API tools

    async def list_api_tool_providers(self) -> list[dict[str, Any]]:
        """``GET /workspaces/current/tools/api`` → a list of providers (``name``, ``id``,
        ``type: api``, ``tools`` ...)."""
        return _items(await self.console.request("GET", "/workspaces/current/tools/api"))

    async def get_api_tool_provider(self, provider: str) -> dict[str, Any] | None:
        """``GET /workspaces/current/tool-provider/api/get?provider=`` → ``{schema_type,
        schema, tools, icon, description, credentials (masked), privacy_policy,
        custom_disclaimer, labels}``; ``None`` when Dify answers 400 (unknown provider)."""
        try:
            body = await self.console.request(
                "GET", "/workspaces/current/tool-provider/api/get", params={"provider": provider}
            )
        except DifyError as exc:
            if exc.status in (400, 404):
                return None
            raise
        return cast(dict[str, Any], body)

    async def parse_api_schema(self, schema: str) -> dict[str, Any]:
        """``POST /workspaces/current/tool-provider/api/schema`` ``{schema}`` →
        ``{schema_type, parameters_schema, credentials_schema, warning}``."""
        return cast(
            dict[str, Any],
            await self.console.request(
                "POST", "/workspaces/current/tool-provider/api/schema", json={"schema": schema}
            ),
        )

    async def add_api_tool_provider(self, body: Mapping[str, Any]) -> None:
        """``POST /workspaces/current/tool-provider/api/add`` ``{provider, icon,
        credentials: {auth_type, api_key_header, api_key_header_prefix, api_key_value},
        schema_type: openapi, schema, privacy_policy, custom_disclaimer, labels}`` →
        ``{result: success}``."""
        await self.console.request(
            "POST", "/workspaces/current/tool-provider/api/add", json=dict(body)
        )

    async def update_api_tool_provider(self, body: Mapping[str, Any]) -> None:
        """``POST /workspaces/current/tool-provider/api/update``: the add body plus
        ``original_provider`` (``privacy_policy`` and ``custom_disclaimer`` required)."""
        await self.console.request(
            "POST", "/workspaces/current/tool-provider/api/update", json=dict(body)
        )

    # ------------------------------------------------------------------------------ apps

    async def list_apps(self) -> list[dict[str, Any]]:
        """``GET /apps?page=&limit=`` → ``{data: [{id, name, mode, description, ...}]}``."""
        return await self._pages("/apps")

    async def import_app(
        self, yaml_content: str, *, app_id: str | None = None, name: str | None = None
    ) -> dict[str, Any]:
        """``POST /apps/imports`` ``{mode: yaml-content, yaml_content, app_id?, name?}`` →
        ``{id, status, app_id, app_mode, current_dsl_version, imported_dsl_version,
        error}``; 202 when ``status`` is ``pending`` (needs :meth:`confirm_import`)."""
        body: dict[str, Any] = {"mode": "yaml-content", "yaml_content": yaml_content}
        if app_id:
            body["app_id"] = app_id
        if name:
            body["name"] = name
        return cast(dict[str, Any], await self.console.request("POST", "/apps/imports", json=body))

    async def confirm_import(self, import_id: str) -> dict[str, Any]:
        """``POST /apps/imports/{import_id}/confirm`` → the completed import (or 400)."""
        return cast(
            dict[str, Any],
            await self.console.request("POST", f"/apps/imports/{import_id}/confirm"),
        )

    async def delete_app(self, app_id: str) -> None:
        """``DELETE /apps/{app_id}`` → 204."""
        await self.console.request("DELETE", f"/apps/{app_id}")
