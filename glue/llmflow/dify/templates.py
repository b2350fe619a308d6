"""LLMFlow's Dify app templates (``platform/dify/apps/*.yml``): load, check, render.

The templates are Dify app DSL in the format Dify 1.14.2 exports
(``api/services/app_dsl_service.py``: ``version``/``kind``/``app`` plus ``workflow`` for
``workflow``/``advanced-chat`` apps or ``model_config`` for ``chat``/``agent-chat``). The
checks here are the contract the importer relies on, so a broken template fails in CI and
not in a tenant's Dify: required keys, known node types, edges between existing nodes, one
start node, model providers that the wiring registers.

Rendering fills what only exists per tenant: the external dataset ids of knowledge-retrieval
nodes (plain UUIDs; Dify's importer accepts them unencrypted) and the model names. The
rendered document carries a content hash in its description so that the wiring can tell an
app it imported from one that drifted, without exporting it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

from llmflow.dify.console_api import OPENAI_COMPATIBLE_PROVIDER

DSL_VERSION = "0.6.0"
"""``CURRENT_APP_DSL_VERSION`` of Dify's ``api/constants/dsl_version.py`` that we export."""

APP_MODES = ("workflow", "advanced-chat", "chat", "agent-chat", "completion")
GRAPH_MODES = ("workflow", "advanced-chat")
NODE_TYPES = frozenset(
    {
        "start",
        "end",
        "answer",
        "llm",
        "knowledge-retrieval",
        "question-classifier",
        "if-else",
        "code",
        "template-transform",
        "http-request",
        "tool",
        "variable-aggregator",
        "assigner",
        "iteration",
        "iteration-start",
        "loop",
        "loop-start",
        "loop-end",
        "parameter-extractor",
        "document-extractor",
        "list-operator",
        "agent",
    }
)
"""Built-in node types (``BuiltinNodeTypes``) a template may use."""

MODEL_NODE_TYPES = ("llm", "question-classifier", "parameter-extractor")
MARKER_RE = re.compile(
    r"\[llmflow-template (?P<name>[a-z0-9@-]+) sha256:(?P<digest>[0-9a-f]{12})\]"
)
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "platform" / "dify" / "apps"


class TemplateError(ValueError):
    """A template that breaks the DSL contract (the message names the file and the key)."""


@dataclass(frozen=True)
class AppTemplate:
    """One template file: its name (file stem) and the parsed DSL document."""

    name: str
    path: Path
    document: dict[str, Any]

    @property
    def mode(self) -> str:
        return str(self.document["app"]["mode"])

    @property
    def app_name(self) -> str:
        return str(self.document["app"]["name"])

    @property
    def uses_knowledge(self) -> bool:
        """Whether the template has a knowledge-retrieval node (rendered per tenant)."""
        return any(n["data"]["type"] == "knowledge-retrieval" for n in _nodes(self.document))


@dataclass(frozen=True)
class RenderContext:
    """What differs per tenant: linked dataset ids and the model names to use."""

    dataset_ids: Sequence[str] = ()
    llm_model: str | None = None
    agent_model: str | None = None


@dataclass(frozen=True)
class RenderedApp:
    """A template ready to import: YAML text, its digest and the marker it carries."""

    name: str
    app_name: str
    mode: str
    yaml_content: str
    digest: str

    @property
    def marker(self) -> str:
        return f"[llmflow-template {self.name} sha256:{self.digest}]"


def _nodes(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    graph = document.get("workflow", {}).get("graph", {})
    return cast(list[dict[str, Any]], graph.get("nodes", []))


def _require(mapping: Any, key: str, where: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise TemplateError(f"{where}: missing key {key!r}")
    return mapping[key]


def validate(document: Any, where: str, providers: Sequence[str] = ()) -> None:
    """Raise :class:`TemplateError` unless ``document`` satisfies the DSL contract.

    ``providers`` are the model provider names the wiring registers (from
    ``platform/dify/model-providers.yaml``); every model a template names must use one.
    """
    if not isinstance(document, Mapping):
        raise TemplateError(f"{where}: the document must be a mapping")
    if _require(document, "kind", where) != "app":
        raise TemplateError(f"{where}: kind must be 'app'")
    if str(_require(document, "version", where)) != DSL_VERSION:
        raise TemplateError(f"{where}: version must be {DSL_VERSION!r} (Dify 1.14.2 DSL)")
    app = _require(document, "app", where)
    for key in ("name", "mode", "icon", "description"):
        _require(app, key, f"{where}: app")
    mode = app["mode"]
    if mode not in APP_MODES:
        raise TemplateError(f"{where}: app.mode {mode!r} is not one of {APP_MODES}")
    models: list[tuple[str, Any]] = []
    if mode in GRAPH_MODES:
        workflow = _require(document, "workflow", where)
        graph = _require(workflow, "graph", f"{where}: workflow")
        nodes = _require(graph, "nodes", f"{where}: workflow.graph")
        edges = _require(graph, "edges", f"{where}: workflow.graph")
        ids: set[str] = set()
        types: list[str] = []
        for index, node in enumerate(nodes):
            at = f"{where}: node[{index}]"
            node_id = str(_require(node, "id", at))
            if node_id in ids:
                raise TemplateError(f"{at}: duplicate node id {node_id!r}")
            ids.add(node_id)
            data = _require(node, "data", at)
            node_type = _require(data, "type", f"{at}.data")
            _require(data, "title", f"{at}.data")
            if node_type not in NODE_TYPES:
                raise TemplateError(f"{at}: unknown node type {node_type!r}")
            types.append(node_type)
            if node_type in MODEL_NODE_TYPES:
                models.append((f"{at}.data.model", _require(data, "model", f"{at}.data")))
            if node_type == "knowledge-retrieval":
                _require(data, "query_variable_selector", f"{at}.data")
                _require(data, "dataset_ids", f"{at}.data")
                if _require(data, "retrieval_mode", f"{at}.data") not in ("single", "multiple"):
                    raise TemplateError(f"{at}: retrieval_mode must be single or multiple")
            if node_type == "llm" and data.get("context", {}).get("enabled"):
                selector = data["context"].get("variable_selector") or []
                if not selector or selector[0] not in {str(n.get("id")) for n in nodes}:
                    raise TemplateError(f"{at}: context.variable_selector names no node")
        if types.count("start") != 1:
            raise TemplateError(f"{where}: a graph needs exactly one start node")
        terminal = "end" if mode == "workflow" else "answer"
        if terminal not in types:
            raise TemplateError(f"{where}: a {mode} graph needs an {terminal!r} node")
        for index, edge in enumerate(edges):
            at = f"{where}: edge[{index}]"
            for end in ("source", "target"):
                if str(_require(edge, end, at)) not in ids:
                    raise TemplateError(f"{at}: {end} {edge[end]!r} is not a node")
        linked = {str(e["source"]) for e in edges} | {str(e["target"]) for e in edges}
        lonely = ids - linked
        if lonely and len(ids) > 1:
            raise TemplateError(f"{where}: nodes without edges: {sorted(lonely)}")
    else:
        config = _require(document, "model_config", where)
        models.append((f"{where}: model_config.model", _require(config, "model", where)))
        if mode == "agent-chat":
            agent = _require(config, "agent_mode", f"{where}: model_config")
            if agent.get("strategy") not in ("react", "function_call"):
                raise TemplateError(f"{where}: agent_mode.strategy must be react/function_call")
    for at, model in models:
        provider = _require(model, "provider", at)
        _require(model, "name", at)
        if providers and provider not in providers:
            raise TemplateError(f"{at}: provider {provider!r} is not registered ({providers})")


def load_templates(
    directory: Path | None = None, providers: Sequence[str] = (OPENAI_COMPATIBLE_PROVIDER,)
) -> list[AppTemplate]:
    """Every ``*.yml`` template of ``directory`` (sorted), each validated."""
    directory = directory or DEFAULT_DIR
    out: list[AppTemplate] = []
    for path in sorted(directory.glob("*.yml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        validate(document, path.name, providers)
        out.append(AppTemplate(path.stem, path, cast(dict[str, Any], document)))
    return out


def render(
    template: AppTemplate, context: RenderContext, marker_name: str | None = None
) -> RenderedApp:
    """The template with the tenant's dataset ids and model names, and its marker.

    ``marker_name`` names the app in its marker (default: the template name; the shared
    mode adds the tenant so that each tenant's copy is found again).
    """
    document = copy.deepcopy(template.document)
    for node in _nodes(document):
        data = node["data"]
        if data["type"] == "knowledge-retrieval":
            data["dataset_ids"] = sorted(context.dataset_ids)
        if data["type"] in MODEL_NODE_TYPES and context.llm_model:
            data["model"]["name"] = context.llm_model
    config = document.get("model_config")
    if isinstance(config, dict) and template.mode == "agent-chat" and context.agent_model:
        config["model"]["name"] = context.agent_model
    elif isinstance(config, dict) and context.llm_model:
        config["model"]["name"] = context.llm_model
    digest = hashlib.sha256(
        json.dumps(document, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()[:12]
    name = marker_name or template.name
    rendered = RenderedApp(name, template.app_name, template.mode, "", digest)
    description = str(document["app"].get("description") or "").strip()
    document["app"]["description"] = f"{description} {rendered.marker}".strip()
    # No line folding: the marker must stay on one line for :func:`marker_of`.
    text = yaml.safe_dump(document, allow_unicode=True, sort_keys=False, width=1_000_000)
    return RenderedApp(name, template.app_name, template.mode, text, digest)


def marker_of(description: str | None) -> tuple[str, str] | None:
    """``(template name, digest)`` of an app's description, if it came from a template."""
    match = MARKER_RE.search(description or "")
    return (match.group("name"), match.group("digest")) if match else None
