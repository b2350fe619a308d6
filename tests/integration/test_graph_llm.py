"""LLM graph extraction at ingest, against a scripted OpenAI-compatible server that replays
the chat-completions contract (no LLM weights exist on this machine): triplets land in the
graph, tokens come from the server's usage, caps hold, and a failing endpoint costs only the
LLM triplets, never the ingest."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from llmflow.gateway.scripted import ScriptedUpstream, serve
from llmflow.graph.extract import node_id
from llmflow.ingest.pipeline import Upload

pytestmark = pytest.mark.integration

DOC = "# 보수규정\n\n제4조(산정방법) 통상임금은 기본급과 직무수당으로 산정한다.\n\n" + "\n\n".join(
    f"제{n}조(지급) 보수는 매월 {n}일에 지급한다." for n in range(5, 9)
)


def triplets(body: dict[str, Any]) -> dict[str, Any]:
    text = body["messages"][-1]["content"]
    found = [
        {"subject": {"type": "TERM", "name": "통상임금"}, "relation": {"type": "DEFINES"},
         "object": {"type": "TERM", "name": "기본급"}},
        {"subject": {"type": "BOGUS", "name": "x"}, "relation": {"type": "DEFINES"},
         "object": {"type": "TERM", "name": "y"}},  # off-schema: pruned
    ] if "통상임금" in text else []  # fmt: skip
    return {"content": json.dumps({"triplets": found}, ensure_ascii=False)}


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    up = ScriptedUpstream(chat_script=triplets)
    with serve(up) as running:
        yield running


@pytest.fixture
def llm_on(runtime: Any, upstream: ScriptedUpstream, monkeypatch: pytest.MonkeyPatch) -> Any:
    llm = runtime.settings.graph.llm
    monkeypatch.setattr(llm, "base_url", upstream.url + "/v1")
    monkeypatch.setattr(llm, "model", "tiny")
    return llm


async def ingest(rt: Any, tenant: str) -> dict[str, Any]:
    await rt.knowledge_bases.create(tenant, "rules", exist_ok=True)
    jobs = await rt.ingest.submit(tenant, "rules", [Upload("pay.md", DOC.encode())])
    await rt.jobs.drain()
    [job] = await rt.ingest.jobs(tenant, [jobs[0]["job_id"]])
    assert job["status"] == "succeeded", job
    stats: dict[str, Any] = job["stats"]
    return stats


async def test_triplets_join_the_graph_and_the_cost_is_reported(
    runtime: Any, upstream: ScriptedUpstream, llm_on: Any
) -> None:
    stats = await ingest(runtime, "graph-llm-a")
    chunks = stats["chunks"]
    assert stats["graph_llm_calls"] == stats["graph_llm_chunks"] == chunks
    assert stats["graph_llm_prompt_tokens"] > 0 and stats["graph_llm_completion_tokens"] > 0
    assert stats["graph_llm_triplets"] == 1 and stats["graph_llm_skipped_chunks"] == 0
    sent = [b for path, b in upstream.requests if path == "/v1/chat/completions"]
    assert len(sent) == chunks and all(b["model"] == "tiny" for b in sent)
    store = await runtime.graph_store()
    kb = (await runtime.knowledge_bases.get("graph-llm-a", "rules")).id
    [edge] = [
        e
        for e in await store.neighbours(
            "graph-llm-a", [kb], [node_id("e", "통상임금")], ["RELATED_TO"], "out", 50
        )
        if e.props.get("source") == "llm"
    ]
    assert edge.dst == node_id("e", "기본급") and edge.props["relation"] == "DEFINES"


async def test_caps_limit_calls_per_document(
    runtime: Any, upstream: ScriptedUpstream, llm_on: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llm_on, "max_chunks_per_document", 2)
    stats = await ingest(runtime, "graph-llm-b")
    assert stats["graph_llm_calls"] == 2
    assert stats["graph_llm_skipped_chunks"] == stats["chunks"] - 2
    monkeypatch.setattr(llm_on, "max_chunks_per_document", 100)
    monkeypatch.setattr(llm_on, "max_tokens_per_document", 1)  # spent after the first call
    stats = await ingest(runtime, "graph-llm-c")
    assert stats["graph_llm_calls"] == 1


async def test_a_failing_endpoint_costs_the_llm_triplets_not_the_ingest(
    runtime: Any, upstream: ScriptedUpstream, llm_on: Any
) -> None:
    upstream.fail_with = 500
    stats = await ingest(runtime, "graph-llm-d")
    assert stats["graph_llm_triplets"] == 0 and stats["graph_llm_failed_calls"] >= 1
    assert stats["graph_nodes"] > 0  # the deterministic graph is there
