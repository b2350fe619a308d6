"""Automatic wiring of one tenant's Dify workspace to LLMFlow: observe → plan → apply.

What a wired workspace holds (each entry of the plan is one of these):

1. ``external-knowledge-api``: LLMFlow retrieval registered as Dify External Knowledge API
   (``{retrieval_endpoint}/retrieval``) with a tenant-bound LLMFlow API key (role
   ``reader``, all of the tenant's knowledge bases).
2. ``external-dataset``: one Dify knowledge base per LLMFlow knowledge base
   (``external_knowledge_id`` = the LLMFlow name); links of deleted knowledge bases go.
3. ``model``: the gateway's LLM, embedding and rerank models and the LLMFlow agents in the
   OpenAI-API-compatible provider (credential form of ``platform/dify/model-providers.yaml``)
   with a tenant-bound key of role ``model``.
4. ``api-tool``: LLMFlow's tools OpenAPI document as one custom tool provider (key role
   ``reader``).
5. ``app``: the DSL templates of ``platform/dify/apps``, rendered with the tenant's dataset
   ids and model names.

Keys: LLMFlow stores only key hashes, so the wiring never knows a key it issued earlier.
Each consumer group (knowledge, models, tools) has a named key (``dify:<slot>``); when a
consumer must be created or changed, the plan *rotates* that slot: a new key, every
consumer of the slot rewritten with it, the old keys revoked last. A workspace that matches
plans only ``unchanged`` entries. Key values exist only in memory during ``apply`` and
never appear in a plan, its JSON, or a log line.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import yaml

from llmflow.dify.client import DifyConsole, DifyError
from llmflow.dify.console_api import OPENAI_COMPATIBLE_PROVIDER, DifyConsoleApi
from llmflow.dify.templates import AppTemplate, RenderContext, marker_of, render
from llmflow.errors import Unauthorized
from llmflow.knowledge import KnowledgeBaseInfo
from llmflow.tenancy.reconciler import Operation, PlannedChange

if TYPE_CHECKING:
    from llmflow.tenancy.dify_settings import DifySettings

SYSTEM = "dify"
HIDDEN_VALUE = "[__HIDDEN__]"
"""The value Dify shows in place of a secret it does not return (``constants.HIDDEN_VALUE``)."""

SLOT_ROLES: dict[str, list[str]] = {
    "external-knowledge": ["reader"],
    "gateway": ["model"],
    "tools": ["reader"],
}
"""Key slots and the LLMFlow API-key roles each needs."""

SECRET_CREDENTIALS = frozenset({"api_key"})
"""Credential fields the provider form declares ``secret-input`` (Dify obfuscates them)."""


class KeyIssuer(Protocol):
    """The part of :class:`llmflow.auth.apikeys.ApiKeys` the wiring uses."""

    async def create(
        self,
        tenant_id: str,
        knowledge_bases: list[str] | None = None,
        name: str = "",
        roles: list[str] | None = None,
    ) -> Any: ...

    async def authenticate(self, key: str) -> Any: ...

    async def revoke(self, key_id: str) -> None: ...

    async def list(self, tenant_id: str | None = None) -> list[dict[str, Any]]: ...


class KnowledgeSource(Protocol):
    """The part of :class:`llmflow.knowledge.KnowledgeBases` the wiring uses."""

    async def list(self, tenant_id: str) -> list[KnowledgeBaseInfo]: ...


@dataclass(frozen=True)
class ModelSpec:
    """One model of the OpenAI-API-compatible provider and its credential form values."""

    model: str
    model_type: str
    credentials: dict[str, Any]


@dataclass(frozen=True)
class WiringConfig:
    """Everything the wiring writes that is the same for every tenant."""

    retrieval_endpoint: str
    models: tuple[ModelSpec, ...] = ()
    tools_schema: str | None = None
    templates: tuple[AppTemplate, ...] = ()
    llm_model: str | None = None
    agent_model: str | None = None
    top_k: int = 5
    tool_provider: str = "llmflow"
    external_api_name: str = "llmflow"
    credential_name: str = "llmflow"


@dataclass(frozen=True)
class WiringTarget:
    """One tenant's workspace: the console client, and whether the workspace is shared."""

    tenant: str
    api: DifyConsoleApi
    shared: bool = False
    label: str = ""

    def key_name(self, slot: str) -> str:
        return f"dify:{slot}"

    @property
    def external_api_name(self) -> str:
        return f"llmflow-{self.tenant}"[:40] if self.shared else "llmflow"

    @property
    def dataset_permission(self) -> str:
        """Who in the workspace may use the linked knowledge bases: everyone when the
        workspace is the tenant's own; in the shared workspace only its owner (the wiring),
        since Dify sends no end-user identity to the data plane and any member could
        otherwise query another tenant's knowledge through that tenant's key."""
        return "only_me" if self.shared else "all_team_members"

    def dataset_name(self, kb: str) -> str:
        return f"{self.tenant}:{kb}"[:100] if self.shared else kb

    @property
    def tool_provider(self) -> str:
        return f"llmflow-{self.tenant}" if self.shared else "llmflow"

    def template_name(self, name: str) -> str:
        return f"{name}@{self.tenant}" if self.shared else name


@dataclass
class DifyState:
    """What the tenant's workspace and LLMFlow hold now."""

    keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    knowledge_bases: list[KnowledgeBaseInfo] = field(default_factory=list)
    external_api: dict[str, Any] | None = None
    external_key_valid: bool | None = None
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: dict[tuple[str, str], dict[str, Any] | None] = field(default_factory=dict)
    tool: dict[str, Any] | None = None
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)


def load_models(
    providers_file: Path,
    gateway_endpoint: str | None = None,
    agent_models: Sequence[str] = (),
) -> tuple[ModelSpec, ...]:
    """The models of ``model-providers.yaml`` (plus the agents as LLMs), key left out.

    ``api_key`` is filled at apply time from the rotated key of the ``gateway`` slot.
    """
    document = yaml.safe_load(providers_file.read_text(encoding="utf-8"))
    if document.get("provider") and OPENAI_COMPATIBLE_PROVIDER.split("/")[0] not in str(
        document["provider"]
    ):
        raise ValueError(f"{providers_file}: unexpected provider {document['provider']!r}")
    out: list[ModelSpec] = []
    first_llm: dict[str, Any] | None = None
    for entry in document.get("models", []):
        creds = {k: v for k, v in dict(entry["credentials"]).items() if k != "api_key"}
        if gateway_endpoint:
            creds["endpoint_url"] = gateway_endpoint
        out.append(ModelSpec(str(entry["model"]), str(entry["model_type"]), creds))
        if entry["model_type"] == "llm" and first_llm is None:
            first_llm = creds
    for agent in agent_models:
        if first_llm is None or any(m.model == agent for m in out):
            continue
        creds = dict(first_llm)
        creds.update(
            display_name=f"{agent} (LLMFlow agent)",
            endpoint_model_name=agent,
        )
        out.append(ModelSpec(agent, "llm", creds))
    return tuple(out)


def read_schema(source: str) -> str:
    """The tools OpenAPI document from a URL (``http(s)://``) or a file, as text."""
    if source.startswith(("http://", "https://")):
        response = httpx.get(source, timeout=30.0)
        response.raise_for_status()
        return response.text
    return Path(source).read_text(encoding="utf-8")


def _canonical_schema(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return yaml.safe_load(text)


def _change(
    target: WiringTarget,
    kind: str,
    name: str,
    operation: Operation,
    detail: str = "",
    payload: Any = None,
) -> PlannedChange:
    return PlannedChange(SYSTEM, kind, name, operation, target.tenant, detail, payload)


def _required(api_id: str | None) -> str:
    """The external knowledge API id a dataset change needs (planned before it)."""
    if api_id is None:
        raise DifyError(
            0,
            "no_external_api",
            "the external knowledge API is missing: its plan entry must come first",
            method="POST",
            path="/datasets/external",
        )
    return api_id


class DifySync:
    """Observe, plan and apply the wiring of one tenant's Dify workspace."""

    def __init__(
        self,
        target: WiringTarget,
        config: WiringConfig,
        keys: KeyIssuer,
        knowledge: KnowledgeSource,
    ) -> None:
        self.target = target
        self.config = config
        self.keys = keys
        self.knowledge = knowledge

    # ------------------------------------------------------------------------ observe

    async def observe(self) -> DifyState:
        """Read the tenant's keys and knowledge bases, and the workspace's wiring."""
        t, api = self.target, self.target.api
        state = DifyState()
        active = [k for k in await self.keys.list(t.tenant) if not k.get("revoked_at")]
        for slot in SLOT_ROLES:
            state.keys[slot] = [k for k in active if k.get("name") == t.key_name(slot)]
        state.knowledge_bases = await self.knowledge.list(t.tenant)
        for item in await api.list_external_knowledge_apis():
            if item.get("name") == t.external_api_name:
                state.external_api = item
                break
        if state.external_api is not None:
            state.external_key_valid = await self._key_matches(
                (state.external_api.get("settings") or {}).get("api_key"),
                state.keys["external-knowledge"],
            )
            api_id = state.external_api.get("id")
            for dataset in await api.list_datasets():
                info = dataset.get("external_knowledge_info") or {}
                if dataset.get("provider") == "external" and (
                    info.get("external_knowledge_api_id") == api_id
                ):
                    state.datasets[str(info.get("external_knowledge_id"))] = dataset
        present = {
            (str(m.get("model")), str(m.get("model_type")))
            for m in await api.list_provider_models(OPENAI_COMPATIBLE_PROVIDER)
        }
        for spec in self.config.models:
            key = (spec.model, spec.model_type)
            state.models[key] = (
                await api.get_model_credentials(OPENAI_COMPATIBLE_PROVIDER, *key)
                if key in present
                else None
            )
        if self.config.tools_schema:
            state.tool = await api.get_api_tool_provider(t.tool_provider)
        if self.config.templates:
            for app in await api.list_apps():
                marker = marker_of(app.get("description"))
                if marker is not None:
                    state.apps[marker[0]] = {**app, "_digest": marker[1]}
        return state

    async def _key_matches(self, key: Any, slot_keys: Sequence[dict[str, Any]]) -> bool | None:
        """Whether a key Dify shows is one of the slot's active keys (None: Dify hides it)."""
        if not isinstance(key, str) or not key or key == HIDDEN_VALUE or "*" in key:
            return None
        try:
            principal = await self.keys.authenticate(key)
        except Unauthorized:  # unknown, revoked or not an LLMFlow key
            return False
        subject = str(getattr(principal, "subject", ""))
        return getattr(principal, "tenant_id", None) == self.target.tenant and any(
            subject == f"apikey:{k.get('id')}" for k in slot_keys
        )

    # --------------------------------------------------------------------------- plan

    def plan(self, state: DifyState) -> list[PlannedChange]:
        """Every object of the wiring with its operation, in apply order."""
        t, c = self.target, self.config
        changes: list[PlannedChange] = []

        # 1. external knowledge API + 2. datasets
        endpoint = c.retrieval_endpoint.rstrip("/")
        ek: PlannedChange
        if state.external_api is None:
            ek = _change(
                t,
                "external-knowledge-api",
                t.external_api_name,
                Operation.CREATE,
                f"endpoint {endpoint}/retrieval",
            )
        else:
            settings = state.external_api.get("settings") or {}
            reasons = []
            if str(settings.get("endpoint", "")).rstrip("/") != endpoint:
                reasons.append("endpoint")
            if state.external_key_valid is False:
                reasons.append("api_key is not an active key of the tenant")
            if not state.keys["external-knowledge"]:
                reasons.append("no active LLMFlow key")
            ek = _change(
                t,
                "external-knowledge-api",
                t.external_api_name,
                Operation.UPDATE if reasons else Operation.UNCHANGED,
                ", ".join(reasons),
                payload={"id": state.external_api.get("id")},
            )
        changes += self._slot("external-knowledge", [ek], state)
        wanted = {kb.name: kb for kb in state.knowledge_bases}
        for name in sorted(wanted):
            if name in state.datasets:
                dataset = state.datasets[name]
                permission = dataset.get("permission")
                changes.append(
                    _change(
                        t,
                        "external-dataset",
                        t.dataset_name(name),
                        Operation.UNCHANGED
                        if permission == t.dataset_permission
                        else Operation.UPDATE,
                        ""
                        if permission == t.dataset_permission
                        else f"permission {permission} → {t.dataset_permission}",
                        payload={"kb": name, "id": dataset.get("id")},
                    )
                )
            else:
                changes.append(
                    _change(
                        t,
                        "external-dataset",
                        t.dataset_name(name),
                        Operation.CREATE,
                        f"external_knowledge_id {name}",
                        payload={"kb": name},
                    )
                )
        for name in sorted(set(state.datasets) - set(wanted)):
            dataset = state.datasets[name]
            changes.append(
                _change(
                    t,
                    "external-dataset",
                    str(dataset.get("name")),
                    Operation.DELETE,
                    "the LLMFlow knowledge base is gone",
                    payload={"id": dataset.get("id"), "kb": name},
                )
            )

        # 3. models
        model_changes: list[PlannedChange] = []
        for spec in c.models:
            current = state.models.get((spec.model, spec.model_type))
            name = f"{spec.model_type}/{spec.model}"
            if current is None:
                model_changes.append(
                    _change(
                        t, "model", name, Operation.CREATE, OPENAI_COMPATIBLE_PROVIDER, payload=spec
                    )
                )
                continue
            shown = current.get("credentials") or {}
            paths = sorted(
                k
                for k, v in spec.credentials.items()
                if k not in SECRET_CREDENTIALS and str(shown.get(k, "")) != str(v)
            )
            if not shown.get("api_key"):
                paths.append("api_key")
            model_changes.append(
                _change(
                    t,
                    "model",
                    name,
                    Operation.UPDATE if paths else Operation.UNCHANGED,
                    ", ".join(paths[:4]),
                    payload={"spec": spec, "credential_id": current.get("current_credential_id")},
                )
            )
        changes += self._slot("gateway", model_changes, state)

        # 4. custom tools
        if c.tools_schema:
            if state.tool is None:
                tool = _change(t, "api-tool", t.tool_provider, Operation.CREATE, "OpenAPI")
            else:
                reasons = []
                if _canonical_schema(state.tool.get("schema")) != _canonical_schema(c.tools_schema):
                    reasons.append("schema")
                creds = state.tool.get("credentials") or {}
                if (
                    creds.get("auth_type") != "api_key_header"
                    or str(creds.get("api_key_header", "")).lower() != "authorization"
                ):
                    reasons.append("credentials")
                tool = _change(
                    t,
                    "api-tool",
                    t.tool_provider,
                    Operation.UPDATE if reasons else Operation.UNCHANGED,
                    ", ".join(reasons),
                )
            changes += self._slot("tools", [tool], state)

        # 5. apps
        dataset_ids = [
            str(state.datasets[n].get("id")) for n in sorted(wanted) if n in state.datasets
        ]
        # New or removed links change the ids a knowledge template is rendered with.
        datasets_pending = any(
            ch.operation in (Operation.CREATE, Operation.DELETE)
            for ch in changes
            if ch.kind == "external-dataset"
        )
        for template in c.templates:
            marker_name = t.template_name(template.name)
            rendered = render(template, self._render_context(dataset_ids), marker_name)
            current_app = state.apps.get(marker_name)
            if current_app is None:
                op, detail = Operation.CREATE, f"DSL {template.mode}"
            elif current_app.get("_digest") != rendered.digest or (
                template.uses_knowledge and datasets_pending
            ):
                op, detail = Operation.UPDATE, "template or knowledge bases changed"
            else:
                op, detail = Operation.UNCHANGED, ""
            changes.append(
                _change(
                    t,
                    "app",
                    marker_name,
                    op,
                    detail,
                    payload={"template": template, "app": current_app},
                )
            )
        return changes

    def _render_context(self, dataset_ids: Sequence[str]) -> RenderContext:
        return RenderContext(dataset_ids, self.config.llm_model, self.config.agent_model)

    def _slot(
        self, slot: str, consumers: list[PlannedChange], state: DifyState
    ) -> list[PlannedChange]:
        """The slot's consumers, preceded by a key rotation and followed by revocations
        when any consumer changes (or the slot has no active key)."""
        t = self.target
        active = state.keys.get(slot, [])
        if not active and consumers:
            consumers = [
                c
                if c.pending
                else _change(
                    t, c.kind, c.name, Operation.UPDATE, "no active LLMFlow key", c.payload
                )
                for c in consumers
            ]
        if not any(c.pending for c in consumers):
            return consumers
        rotate = _change(
            t,
            "api-key",
            t.key_name(slot),
            Operation.CREATE,
            f"roles {','.join(SLOT_ROLES[slot])}; value never shown",
            payload={"slot": slot},
        )
        rewritten = [
            c
            if c.pending
            else _change(
                t, c.kind, c.name, Operation.UPDATE, f"new {t.key_name(slot)} key", c.payload
            )
            for c in consumers
        ]
        revoke = [
            _change(
                t,
                "api-key",
                f"{t.key_name(slot)} ({k.get('prefix')})",
                Operation.DELETE,
                "replaced by the new key",
                payload={"revoke": k.get("id")},
            )
            for k in active
        ]
        return [rotate, *rewritten, *revoke]

    # -------------------------------------------------------------------------- apply

    async def apply(self, changes: Sequence[PlannedChange]) -> list[PlannedChange]:
        """Perform the pending entries in order; returns those performed.

        Dify echoes a refused key in its error (the registration probe's "Authorization
        failed with api_key: …"): keys issued here are masked out of any error raised.
        """
        issued: dict[str, str] = {}
        try:
            return await self._apply(changes, issued)
        except DifyError as exc:
            message = exc.message
            for value in issued.values():
                message = message.replace(value, "***")
            raise DifyError(
                exc.status, exc.code, message, method=exc.method, path=exc.path
            ) from None

    async def _apply(
        self, changes: Sequence[PlannedChange], issued: dict[str, str]
    ) -> list[PlannedChange]:
        t, c, api = self.target, self.config, self.target.api
        dataset_ids: dict[str, str] = {}
        ext_id: str | None = None
        done: list[PlannedChange] = []
        for change in changes:
            if change.kind == "external-knowledge-api" and change.payload:
                ext_id = change.payload.get("id")
            if not change.pending:
                continue
            if change.kind == "api-key" and change.operation is Operation.CREATE:
                slot = change.payload["slot"]
                key = await self.keys.create(
                    t.tenant, None, name=t.key_name(slot), roles=SLOT_ROLES[slot]
                )
                issued[slot] = key.key
            elif change.kind == "api-key":
                await self.keys.revoke(change.payload["revoke"])
            elif change.kind == "external-knowledge-api":
                endpoint = c.retrieval_endpoint.rstrip("/")
                key_value = issued["external-knowledge"]
                if change.operation is Operation.CREATE:
                    created = await api.create_external_knowledge_api(
                        t.external_api_name,
                        endpoint,
                        key_value,
                        description=f"LLMFlow retrieval for tenant {t.tenant}",
                    )
                    ext_id = str(created.get("id"))
                else:
                    ext_id = str(change.payload["id"])
                    await api.update_external_knowledge_api(
                        ext_id,
                        t.external_api_name,
                        endpoint,
                        key_value,
                        description=f"LLMFlow retrieval for tenant {t.tenant}",
                    )
            elif change.kind == "external-dataset":
                kb_name = change.payload["kb"]
                if change.operation is Operation.DELETE:
                    await api.delete_dataset(str(change.payload["id"]))
                elif change.operation is Operation.UPDATE:
                    await api.update_external_dataset(
                        str(change.payload["id"]),
                        _required(ext_id),
                        kb_name,
                        permission=t.dataset_permission,
                    )
                else:
                    ext_id = _required(ext_id)
                    created = await api.create_external_dataset(
                        change.name,
                        ext_id,
                        kb_name,
                        {
                            "top_k": c.top_k,
                            "score_threshold": 0.0,
                            "score_threshold_enabled": False,
                        },
                        description=f"LLMFlow knowledge base {kb_name}",
                    )
                    dataset_ids[kb_name] = str(created.get("id"))
                    if created.get("permission") != t.dataset_permission:
                        await api.update_external_dataset(
                            dataset_ids[kb_name],
                            ext_id,
                            kb_name,
                            permission=t.dataset_permission,
                        )
            elif change.kind == "model":
                spec: ModelSpec = (
                    change.payload
                    if isinstance(change.payload, ModelSpec)
                    else change.payload["spec"]
                )
                creds = {**spec.credentials, "api_key": issued["gateway"]}
                credential_id = (
                    None
                    if isinstance(change.payload, ModelSpec)
                    else change.payload.get("credential_id")
                )
                if credential_id:
                    await api.update_model_credential(
                        OPENAI_COMPATIBLE_PROVIDER,
                        spec.model,
                        spec.model_type,
                        str(credential_id),
                        creds,
                        c.credential_name,
                    )
                else:
                    await api.create_model_credential(
                        OPENAI_COMPATIBLE_PROVIDER,
                        spec.model,
                        spec.model_type,
                        creds,
                        c.credential_name,
                    )
            elif change.kind == "api-tool":
                await self._apply_tool(change, issued["tools"])
            elif change.kind == "app":
                await self._apply_app(change, dataset_ids)
            done.append(change)
        return done

    async def _apply_tool(self, change: PlannedChange, key: str) -> None:
        t, api = self.target, self.target.api
        schema = self.config.tools_schema or ""
        await api.parse_api_schema(schema)  # Dify's own parser refuses a bad document first
        body: dict[str, Any] = {
            "provider": t.tool_provider,
            "icon": {"background": "#E0F2FE", "content": "🔎"},
            "credentials": {
                "auth_type": "api_key_header",
                "api_key_header": "Authorization",
                "api_key_header_prefix": "bearer",
                "api_key_value": key,
            },
            "schema_type": "openapi",
            "schema": schema,
            "privacy_policy": "",
            "custom_disclaimer": "",
            "labels": ["search"],
        }
        if change.operation is Operation.CREATE:
            await api.add_api_tool_provider(body)
        else:
            await api.update_api_tool_provider({**body, "original_provider": t.tool_provider})

    async def _apply_app(self, change: PlannedChange, created_ids: Mapping[str, str]) -> None:
        api = self.target.api
        template: AppTemplate = change.payload["template"]
        current = change.payload.get("app")
        state_ids = await self._dataset_ids() if template.uses_knowledge else []
        rendered = render(
            template,
            self._render_context(state_ids or list(created_ids.values())),
            self.target.template_name(template.name),
        )
        app_id: str | None = None
        if current is not None:
            if template.mode in ("workflow", "advanced-chat"):
                app_id = str(current.get("id"))
            else:  # Dify overwrites only workflow apps: replace the others
                await api.delete_app(str(current.get("id")))
        name = f"{template.app_name} ({self.target.tenant})" if self.target.shared else None
        result = await api.import_app(rendered.yaml_content, app_id=app_id, name=name)
        if result.get("status") == "pending":
            result = await api.confirm_import(str(result.get("id")))
        if result.get("status") == "failed":
            raise DifyError(
                400, "import_failed", str(result.get("error")), method="POST", path="/apps/imports"
            )

    async def _dataset_ids(self) -> list[str]:
        """The ids of the tenant's linked datasets as Dify lists them now."""
        api, t = self.target.api, self.target
        ext = [
            a
            for a in await api.list_external_knowledge_apis()
            if a.get("name") == t.external_api_name
        ]
        if not ext:
            return []
        kbs = {kb.name for kb in await self.knowledge.list(t.tenant)}
        out = []
        for dataset in await api.list_datasets():
            info = dataset.get("external_knowledge_info") or {}
            if (
                info.get("external_knowledge_api_id") == ext[0].get("id")
                and info.get("external_knowledge_id") in kbs
            ):
                out.append(str(dataset.get("id")))
        return sorted(out)

    async def sync(
        self, *, dry_run: bool = False
    ) -> tuple[list[PlannedChange], list[PlannedChange]]:
        """Plan, and unless ``dry_run`` apply: ``(plan, performed)``."""
        plan = self.plan(await self.observe())
        if dry_run:
            return plan, []
        return plan, await self.apply(plan)


def build_config(settings: DifySettings) -> WiringConfig:
    """The tenant-independent part of the wiring from :class:`DifySettings`."""
    from llmflow.dify.templates import load_templates

    models = load_models(settings.providers_file, settings.gateway_endpoint, settings.agent_models)
    llm = settings.llm_model or next((m.model for m in models if m.model_type == "llm"), None)
    return WiringConfig(
        retrieval_endpoint=settings.retrieval_endpoint,
        models=models,
        tools_schema=read_schema(settings.tools_openapi) if settings.tools_openapi else None,
        templates=tuple(load_templates(settings.templates_dir)),
        llm_model=llm,
        agent_model=settings.agent_models[0] if settings.agent_models else None,
        top_k=settings.top_k,
    )


def build_sync(
    settings: DifySettings,
    tenant: str,
    namespace: str,
    keys: KeyIssuer,
    knowledge: KnowledgeSource,
    *,
    config: WiringConfig | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> DifySync | None:
    """The wiring of ``tenant`` per the mode, or ``None`` when its workspace is unknown.

    Checks the licence first: ``licensed-multi-workspace`` without it raises.
    """
    settings.check_licence()
    admin_key = settings.admin_key()
    workspace = settings.workspace_id(tenant)
    if admin_key is None or workspace is None:
        return None
    console = DifyConsole.with_admin_key(
        settings.base_url(tenant, namespace),
        admin_key,
        workspace,
        timeout=httpx.Timeout(settings.timeout_s, connect=5.0),
        transport=transport,
    )
    target = WiringTarget(
        tenant, DifyConsoleApi(console), shared=settings.mode == "shared", label=workspace
    )
    return DifySync(target, config or build_config(settings), keys, knowledge)
