"""The app templates of platform/dify/apps against Dify 1.14.2's DSL contract."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmflow.dify.console_api import OPENAI_COMPATIBLE_PROVIDER
from llmflow.dify.templates import (
    DEFAULT_DIR,
    DSL_VERSION,
    NODE_TYPES,
    RenderContext,
    TemplateError,
    load_templates,
    marker_of,
    render,
    validate,
)

REPO = Path(__file__).resolve().parents[2]
PROVIDERS = yaml.safe_load((REPO / "platform" / "dify" / "model-providers.yaml").read_text())


def _doc(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEFAULT_DIR / f"{name}.yml").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_three_templates_pass_the_contract() -> None:
    # model-providers.yaml names the plugin; Dify's provider id is plugin/provider.
    assert OPENAI_COMPATIBLE_PROVIDER.startswith(PROVIDERS["provider"] + "/")
    templates = {t.name: t for t in load_templates(providers=[OPENAI_COMPATIBLE_PROVIDER])}
    assert set(templates) == {"rag-chatbot", "document-summary", "research-agent"}
    assert templates["rag-chatbot"].mode == "advanced-chat"
    assert templates["rag-chatbot"].uses_knowledge
    assert templates["document-summary"].mode == "workflow"
    assert templates["research-agent"].mode == "agent-chat"
    for t in templates.values():
        assert t.document["version"] == DSL_VERSION and t.document["kind"] == "app"


def test_models_are_those_model_providers_yaml_registers() -> None:
    names = {m["model"] for m in PROVIDERS["models"] if m["model_type"] == "llm"}
    for t in load_templates():
        nodes = t.document.get("workflow", {}).get("graph", {}).get("nodes", [])
        models = [n["data"]["model"] for n in nodes if "model" in n["data"]]
        if "model_config" in t.document:
            models.append(t.document["model_config"]["model"])
        assert models, t.name
        for model in models:
            assert model["provider"].startswith(PROVIDERS["provider"])
            assert model["name"] in names | {"llmflow-agent-research"}


def test_rag_chatbot_cites_its_sources() -> None:
    doc = _doc("rag-chatbot")
    nodes = {n["id"]: n["data"] for n in doc["workflow"]["graph"]["nodes"]}
    assert nodes["retrieval"]["type"] == "knowledge-retrieval"
    assert nodes["llm"]["context"] == {
        "enabled": True,
        "variable_selector": ["retrieval", "result"],
    }
    assert "{{#context#}}" in nodes["llm"]["prompt_template"][0]["text"]
    assert doc["workflow"]["features"]["retriever_resource"]["enabled"] is True
    assert all(n["type"] in NODE_TYPES for n in nodes.values())


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("kind"), "missing key 'kind'"),
        (lambda d: d.__setitem__("version", "0.1.5"), "version must be"),
        (lambda d: d["app"].__setitem__("mode", "chatbot"), "app.mode"),
        (
            lambda d: d["workflow"]["graph"]["edges"][0].__setitem__("target", "nowhere"),
            "is not a node",
        ),
        (
            lambda d: d["workflow"]["graph"]["nodes"][1]["data"].__setitem__("type", "magic"),
            "unknown node type",
        ),
        (
            lambda d: d["workflow"]["graph"]["nodes"].append(
                copy.deepcopy(d["workflow"]["graph"]["nodes"][0])
            ),
            "duplicate node id",
        ),
        (
            lambda d: d["workflow"]["graph"]["nodes"][2]["data"]["model"].__setitem__(
                "provider", "openai"
            ),
            "is not registered",
        ),
        (
            lambda d: d["workflow"]["graph"]["nodes"][2]["data"]["context"].__setitem__(
                "variable_selector", ["ghost", "result"]
            ),
            "names no node",
        ),
        (lambda d: d["workflow"]["graph"]["nodes"].pop(3), "needs an 'answer' node"),
    ],
)
def test_contract_violations_are_caught(mutate: Any, message: str) -> None:
    doc = _doc("rag-chatbot")
    mutate(doc)
    with pytest.raises(TemplateError, match=message):
        validate(doc, "rag-chatbot.yml", ["langgenius/openai_api_compatible/openai_api_compatible"])


def test_agent_template_needs_a_strategy() -> None:
    doc = _doc("research-agent")
    doc["model_config"]["agent_mode"]["strategy"] = "magic"
    with pytest.raises(TemplateError, match="strategy"):
        validate(doc, "research-agent.yml")


def test_render_fills_datasets_models_and_a_stable_marker() -> None:
    (rag,) = [t for t in load_templates() if t.name == "rag-chatbot"]
    ids = ["00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001"]
    one = render(rag, RenderContext(ids, llm_model="qwen2.5-72b-instruct"))
    again = render(rag, RenderContext(list(reversed(ids)), llm_model="qwen2.5-72b-instruct"))
    other = render(rag, RenderContext(ids[:1], llm_model="qwen2.5-72b-instruct"))
    assert one.yaml_content == again.yaml_content and one.digest == again.digest
    assert other.digest != one.digest
    doc = yaml.safe_load(one.yaml_content)
    nodes = {n["id"]: n["data"] for n in doc["workflow"]["graph"]["nodes"]}
    assert nodes["retrieval"]["dataset_ids"] == sorted(ids)
    assert nodes["llm"]["model"]["name"] == "qwen2.5-72b-instruct"
    assert marker_of(doc["app"]["description"]) == ("rag-chatbot", one.digest)
    validate(doc, "rendered")
    # The file itself is untouched (rendering works on a copy).
    assert rag.document["workflow"]["graph"]["nodes"][1]["data"]["dataset_ids"] == []
