"""The gateway's in-process model kind and the agent's OpenAI shapes, without engines.

The shapes are checked with the official openai SDK's own types (what Dify's
OpenAI-API-compatible provider and every OpenAI client parse).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import ValidationError

from llmflow.agents.graph import decisions, restore_args
from llmflow.agents.openai_model import chat_completion, completion_chunks
from llmflow.agents.service import AgentRun
from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.inprocess import InProcessCall, InProcessModels

RUN = AgentRun(
    thread_id="a" * 32,
    status="completed",
    answer="연차휴가는 15일입니다 (취업규칙 제5조, 3쪽).",
    citations=[{"document_id": "d1", "chunk_id": "c2", "page": 3, "title": "취업규칙"}],
    usage={"prompt_tokens": 120, "completion_tokens": 30},
    tool_rounds=1,
    knowledge_bases=["regs"],
)


def test_agent_routes_validate() -> None:
    ok = GatewaySettings.model_validate(
        {"models": [{"name": "llmflow-agent-research", "provider": "agent", "handler": "research"}]}
    )
    assert ok.route("llmflow-agent-research") is not None
    bad: list[dict[str, Any]] = [
        {"name": "a", "provider": "agent"},  # no handler
        {"name": "a", "provider": "agent", "handler": "research",
         "backends": [{"url": "http://vllm:8000"}]},  # an agent has no upstream
        {"name": "a", "provider": "agent", "handler": "research", "kind": "embedding"},
        {"name": "a"},  # a proxied model needs a backend
        {"name": "a", "handler": "research", "backends": [{"url": "http://vllm:8000"}]},
    ]  # fmt: skip
    for route in bad:
        with pytest.raises(ValidationError):
            GatewaySettings.model_validate({"models": [route]})


async def test_inprocess_models_are_built_once_on_first_use() -> None:
    built: list[str] = []

    class Model:
        async def complete(self, call: InProcessCall, body: dict[str, Any]) -> dict[str, Any]:
            return {}

        async def stream(self, call: InProcessCall, body: dict[str, Any]) -> Any:
            return iter(())

    async def factory() -> Model:
        built.append("research")
        return Model()

    models = InProcessModels()
    models.provide("research", factory)
    models.provide("research", factory)  # a second registration keeps the first
    assert built == []
    first, second = await models.get("research"), await models.get("research")
    assert first is second and built == ["research"]
    with pytest.raises(LookupError):
        await models.get("other")


def test_chat_completion_parses_as_openai_and_carries_the_extras() -> None:
    body = chat_completion(RUN, "llmflow-agent-research")
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == RUN.answer
    assert parsed.usage is not None and parsed.usage.total_tokens == 150
    extras = (parsed.model_extra or {})["llmflow"]
    assert extras["thread_id"] == RUN.thread_id and extras["citations"] == RUN.citations
    json.dumps(body)  # plain JSON


def test_chunks_parse_as_openai_and_rebuild_the_answer() -> None:
    chunks = [ChatCompletionChunk.model_validate(c) for c in completion_chunks(RUN, "m")]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == RUN.answer
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert (finish[0].model_extra or {})["llmflow"]["status"] == "completed"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert len({c.id for c in chunks}) == 1


def test_resume_values_never_assume_approval() -> None:
    assert decisions(True, ["a", "b"]) == {"a": True, "b": True}
    assert decisions({"approve": True}, ["a"]) == {"a": True}
    assert decisions({"approve": True, "decisions": {"b": False}}, ["a", "b"]) == {
        "a": True, "b": False
    }  # fmt: skip
    assert decisions({"decisions": {"a": True}}, ["a", "b"]) == {"a": True, "b": False}
    assert decisions("yes", ["a"]) == {"a": False}
    assert decisions({"approve": "true"}, ["a"]) == {"a": False}


def test_pseudonyms_are_restored_only_in_tool_text_arguments() -> None:
    def restore(text: str) -> str:
        return text.replace("<PERSON_1>", "김도현")

    args = {"query": "<PERSON_1> 연차", "top_k": 3, "knowledge_bases": ["<PERSON_1>"]}
    assert restore_args(args, restore) == {
        "query": "김도현 연차", "top_k": 3, "knowledge_bases": ["<PERSON_1>"]
    }  # fmt: skip
