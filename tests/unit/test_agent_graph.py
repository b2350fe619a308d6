"""The research agent's control flow against a scripted OpenAI-compatible LLM.

No LLM weights exist on this machine, so the LLM is ``ScriptedUpstream`` on a real local port
replaying OpenAI's tool-calling contract (``tools`` in, ``tool_calls`` out, one ``tool``
message per call id back — a request that breaks the contract is refused with 400 as OpenAI
refuses it). The agent's own HTTP client, graph, checkpointer (in memory here; PostgreSQL
in tests/integration/test_agent_api.py) and human-in-the-loop interrupt are the real ones;
the tools are a fake implementing the agent's ``ResearchTools`` protocol.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from llmflow.agents.config import AgentSettings
from llmflow.agents.llm import AgentLLMError, OpenAIChatModel
from llmflow.agents.service import ResearchAgents
from llmflow.agents.tools import Passage
from llmflow.auth.principal import Principal
from llmflow.errors import Forbidden, InvalidRequest, NotFound
from llmflow.gateway.scripted import ScriptedUpstream, serve, tool_contract_problem

ALICE = Principal("t1", "alice", roles=frozenset({"reader"}))
EDITOR = Principal("t1", "erin", roles=frozenset({"reader", "editor"}))
MALLORY = Principal("t2", "mallory", roles=frozenset({"reader", "editor"}))


@dataclass
class FakeTools:
    """``ResearchTools`` over two tenants' tiny corpora; records every call it serves."""

    calls: list[tuple[str, str, str, tuple[str, ...], dict[str, Any]]] = field(default_factory=list)
    fail_search: bool = False

    corpus: ClassVar[dict[str, dict[str, list[Passage]]]] = {
        "t1": {
            "regs": [
                Passage("c1", "제3조 휴가는 제5조에 따른다.", "doc-1", "취업규칙", "rules.pdf",
                        2, "제3조", "regs", 0.9),
                Passage("c2", "제5조 연차휴가는 15일로 한다.", "doc-1", "취업규칙", "rules.pdf",
                        3, "제5조", "regs", 0.8),
            ],
            "hr-secret": [
                Passage("s1", "임원 보수 기준", "doc-9", "보수규정", "pay.pdf", 1, "제1조",
                        "hr-secret", 0.7),
            ],
        },
        "t2": {"t2-kb": [Passage("x1", "other tenant", "doc-x", "x", "x", 1, "", "t2-kb")]},
    }  # fmt: skip
    classes: ClassVar[dict[str, str]] = {
        "regs": "internal",
        "hr-secret": "confidential",
        "t2-kb": "internal",
    }

    def _record(self, tool: str, p: Principal, kbs: Sequence[str], **args: Any) -> None:
        self.calls.append((tool, p.tenant_id, p.subject, tuple(kbs), args))

    def _passages(self, p: Principal, kbs: Sequence[str]) -> list[Passage]:
        return [x for kb in kbs for x in self.corpus.get(p.tenant_id, {}).get(kb, [])]

    async def knowledge_bases(self, principal: Principal) -> dict[str, str]:
        return {kb: self.classes[kb] for kb in self.corpus.get(principal.tenant_id, {})}

    async def search(
        self, principal: Principal, kb_names: Sequence[str], query: str, top_k: int
    ) -> list[Passage]:
        self._record("search", principal, kb_names, query=query, top_k=top_k)
        if self.fail_search:
            raise Forbidden("search on knowledge base 'regs' denied: policy says no")
        return [x for x in self._passages(principal, kb_names) if query in x.text][:top_k]

    async def neighbourhood(
        self, principal: Principal, kb_names: Sequence[str], node: str, hops: int, limit: int
    ) -> dict[str, Any]:
        self._record("neighbourhood", principal, kb_names, node=node, hops=hops)
        return {"nodes": [{"id": "n1", "label": "Section", "name": node}], "edges": []}

    async def follow_reference(
        self, principal: Principal, kb_names: Sequence[str], chunk_id: str, reference: str | None
    ) -> list[Passage]:
        self._record("follow_reference", principal, kb_names, chunk_id=chunk_id)
        return [x for x in self._passages(principal, kb_names) if x.section == reference]

    async def section(
        self, principal: Principal, kb_names: Sequence[str], document_id: str, section: str | None
    ) -> list[Passage]:
        self._record("section", principal, kb_names, document_id=document_id, section=section)
        return [x for x in self._passages(principal, kb_names) if x.document_id == document_id]


def call(name: str, args: dict[str, Any] | str, cid: str) -> dict[str, Any]:
    arguments = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ScriptedUpstream]:
    with serve(ScriptedUpstream("llm")) as upstream:
        yield upstream


@pytest.fixture
def llm(llm_server: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    llm_server.requests.clear()
    yield llm_server
    llm_server.chat_script = None


def script(upstream: ScriptedUpstream, *turns: dict[str, Any]) -> None:
    """The LLM answers with these assistant messages, one per request, in order."""
    queue = list(turns)

    def next_turn(body: dict[str, Any]) -> dict[str, Any]:
        assert queue, "the agent asked the LLM more often than scripted"
        return queue.pop(0)

    upstream.chat_script = next_turn


async def agents_for(
    upstream: ScriptedUpstream, tools: FakeTools, **settings: Any
) -> AsyncIterator[ResearchAgents]:
    config = AgentSettings(
        llm_base_url=upstream.url + "/v1", llm_model="tiny-chat", checkpoints="memory", **settings
    )
    agents = await ResearchAgents.open(config, tools, OpenAIChatModel(config), None)
    try:
        yield agents
    finally:
        await agents.close()


def chat_requests(upstream: ScriptedUpstream) -> list[dict[str, Any]]:
    return [b for p, b in upstream.requests if p == "/v1/chat/completions"]


def tool_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [json.loads(m["content"]) for m in body["messages"] if m["role"] == "tool"]


async def test_search_then_answer_with_citations(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(
        llm,
        {"content": None, "tool_calls": [call("hybrid_search", {"query": "연차"}, "call_1")]},
        {"content": "연차휴가는 15일입니다 [취업규칙 제5조]."},
    )
    async for agents in agents_for(llm, tools):
        run = await agents.start(ALICE, [{"role": "user", "content": "연차휴가는 며칠?"}])
    assert run.status == "completed"
    assert run.answer == "연차휴가는 15일입니다 [취업규칙 제5조]."
    assert [c["chunk_id"] for c in run.citations] == ["c2"]
    assert run.citations[0] | {"document_id": "doc-1", "page": 3} == run.citations[0]
    assert run.tool_rounds == 1
    first, second = chat_requests(llm)
    assert first["model"] == "tiny-chat" and first["tool_choice"] == "auto"
    assert {t["function"]["name"] for t in first["tools"]} == {
        "hybrid_search", "graph_neighbourhood", "follow_reference", "fetch_section"
    }  # fmt: skip
    assert (
        first["messages"][0]["role"] == "system" and "hr-secret" in first["messages"][0]["content"]
    )
    (result,) = tool_messages(second)
    assert [r["chunk_id"] for r in result["results"]] == ["c2"]
    # the tool ran as the caller, over the caller's knowledge bases
    assert tools.calls == [("search", "t1", "alice", ("hr-secret", "regs"),
                            {"query": "연차", "top_k": 5})]  # fmt: skip
    assert run.usage["prompt_tokens"] > 0 and run.usage["completion_tokens"] > 0


async def test_tool_errors_are_fed_back_to_the_model(llm: ScriptedUpstream) -> None:
    tools = FakeTools(fail_search=True)
    script(
        llm,
        {
            "content": None,
            "tool_calls": [
                call("hybrid_search", {"query": "연차"}, "a"),
                call("no_such_tool", {}, "b"),
                call("follow_reference", "{not json", "c"),
                call("hybrid_search", {"query": "x", "knowledge_bases": ["t2-kb"]}, "d"),
            ],
        },
        {"content": "죄송합니다, 찾을 수 없습니다."},
    )
    async for agents in agents_for(llm, tools):
        run = await agents.start(ALICE, [{"role": "user", "content": "연차?"}])
    assert run.status == "completed" and run.answer == "죄송합니다, 찾을 수 없습니다."
    errors = [m["error"] for m in tool_messages(chat_requests(llm)[1])]
    assert len(errors) == 4  # one tool message per call id, in order (else the LLM says 400)
    assert "policy says no" in errors[0]
    assert "no tool 'no_such_tool'" in errors[1]
    assert "not valid JSON" in errors[2]
    assert "not available to this run" in errors[3]  # another tenant's KB is not even tried
    assert [c[0] for c in tools.calls] == ["search"]


async def test_tool_rounds_are_bounded(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(
        llm,
        {"content": None, "tool_calls": [call("hybrid_search", {"query": "제3조"}, "r1")]},
        {"content": None, "tool_calls": [call("follow_reference",
                                              {"chunk_id": "c1", "reference": "제5조"}, "r2")]},
        {"content": "제5조에 따라 15일.",
         "tool_calls": [call("hybrid_search", {"query": "z"}, "r3")]},
    )  # fmt: skip
    async for agents in agents_for(llm, tools, max_tool_rounds=2):
        run = await agents.start(ALICE, [{"role": "user", "content": "휴가 규정은?"}])
    requests = chat_requests(llm)
    assert len(requests) == 3
    assert "tools" in requests[1] and "tools" not in requests[2]  # budget spent: answer now
    assert "No more tool calls" in requests[2]["messages"][0]["content"]
    assert run.answer == "제5조에 따라 15일." and run.tool_rounds == 2
    assert [c["chunk_id"] for c in run.citations] == ["c1", "c2"]
    assert [c[0] for c in tools.calls] == ["search", "follow_reference"]


async def test_sensitive_call_waits_for_approval_then_runs(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    fetch = call("fetch_section", {"document_id": "doc-9", "knowledge_bases": ["hr-secret"]}, "f1")
    script(
        llm,
        {"content": None, "tool_calls": [fetch, call("hybrid_search", {"query": "보수"}, "f2")]},
        {"content": "임원 보수 기준은 보수규정 제1조에 있습니다."},
    )
    async for agents in agents_for(llm, tools):
        paused = await agents.start(ALICE, [{"role": "user", "content": "임원 보수?"}])
        assert paused.status == "awaiting_approval"
        (pending,) = paused.pending
        assert pending["tool"] == "fetch_section" and pending["tool_call_id"] == "f1"
        assert "hr-secret (confidential)" in pending["reason"]
        assert paused.thread_id in paused.answer and "/resume" in paused.answer
        assert tools.calls == []  # nothing ran before the decision, not even the search
        assert (await agents.thread(ALICE, paused.thread_id)).status == "awaiting_approval"

        with pytest.raises(NotFound):  # another tenant cannot see or decide the thread
            await agents.resume(MALLORY, paused.thread_id, {"approve": True})
        done = await agents.resume(EDITOR, paused.thread_id, {"approve": True})
    assert done.status == "completed" and done.answer.startswith("임원 보수 기준")
    assert [(c[0], c[2]) for c in tools.calls] == [("section", "erin"), ("search", "erin")]
    assert {c["chunk_id"] for c in done.citations} == {"s1"}
    assert len(chat_requests(llm)) == 2  # the first turn was not asked again on resume


async def test_threads_can_be_deleted_by_their_tenant_only(llm: ScriptedUpstream) -> None:
    script(llm, {"content": "답"})
    async for agents in agents_for(llm, FakeTools()):
        run = await agents.start(ALICE, [{"role": "user", "content": "q"}])
        with pytest.raises(NotFound):
            await agents.delete(MALLORY, run.thread_id)
        with pytest.raises(Forbidden):
            await agents.delete(Principal("t1", "bob", roles=frozenset({"reader"})), run.thread_id)
        await agents.delete(ALICE, run.thread_id)
        with pytest.raises(NotFound):
            await agents.thread(ALICE, run.thread_id)


async def test_rejected_call_is_not_run_and_the_model_is_told(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(
        llm,
        {"content": None, "tool_calls": [call("fetch_section", {"document_id": "doc-9"}, "f1")]},
        {"content": "승인되지 않아 답할 수 없습니다."},
    )
    async for agents in agents_for(llm, tools):
        paused = await agents.start(ALICE, [{"role": "user", "content": "임원 보수?"}])
        # no knowledge_bases argument: the call may read every KB of the run, incl. hr-secret
        assert paused.status == "awaiting_approval"
        done = await agents.resume(ALICE, paused.thread_id, {"approve": False})
    assert done.answer == "승인되지 않아 답할 수 없습니다."
    assert tools.calls == []
    (rejected,) = tool_messages(chat_requests(llm)[1])
    assert "did not approve" in rejected["error"]


async def test_only_the_starter_or_an_editor_may_decide(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(llm, {"content": None, "tool_calls": [call("fetch_section", {"document_id": "d"}, "x")]})
    colleague = Principal("t1", "bob", roles=frozenset({"reader"}))
    async for agents in agents_for(llm, tools):
        paused = await agents.start(ALICE, [{"role": "user", "content": "q"}])
        with pytest.raises(Forbidden):
            await agents.resume(colleague, paused.thread_id, {"approve": True})


async def test_sensitive_rules_come_from_settings(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(
        llm,
        {"content": None, "tool_calls": [call("fetch_section", {"document_id": "doc-9"}, "f")]},
        {"content": "done"},
    )
    async for agents in agents_for(llm, tools, sensitive_tools=[]):  # no approval configured
        run = await agents.start(ALICE, [{"role": "user", "content": "q"}])
    assert run.status == "completed" and [c[0] for c in tools.calls] == ["section"]

    script(llm, {"content": None, "tool_calls": [call("hybrid_search", {"query": "q"}, "s")]})
    rules = [{"name": "hybrid_search"}]  # every call of the tool, whatever it reads
    async for agents in agents_for(llm, tools, sensitive_tools=rules):
        run = await agents.start(ALICE, [{"role": "user", "content": "q"}])
    assert run.status == "awaiting_approval"
    assert run.pending[0]["reason"] == "hybrid_search is marked sensitive"


async def test_conversation_and_knowledge_base_checks(llm: ScriptedUpstream) -> None:
    tools = FakeTools()
    script(llm, {"content": "답"})
    async for agents in agents_for(llm, tools):
        with pytest.raises(Forbidden):  # a KB of another tenant is simply not readable
            await agents.start(ALICE, [{"role": "user", "content": "q"}], knowledge_bases=["t2-kb"])
        with pytest.raises(InvalidRequest):
            await agents.start(ALICE, [{"role": "assistant", "content": "hi"}])
        with pytest.raises(InvalidRequest):
            await agents.start(Principal("t3", "nobody"), [{"role": "user", "content": "q"}])
        run = await agents.start(
            ALICE,
            [
                {"role": "system", "content": "Answer in Korean."},
                {"role": "user", "content": [{"type": "text", "text": "연차?"}]},
            ],
            knowledge_bases=["regs"],
        )
    assert run.knowledge_bases == ["regs"]
    (body,) = chat_requests(llm)
    system, user = body["messages"]
    assert "Answer in Korean." in system["content"] and user == {"role": "user", "content": "연차?"}
    assert "hr-secret" not in system["content"]


async def test_llm_failure_is_an_agent_error(llm: ScriptedUpstream) -> None:
    llm.fail_with = 503
    try:
        async for agents in agents_for(llm, FakeTools()):
            with pytest.raises(AgentLLMError, match="answered 503"):
                await agents.start(ALICE, [{"role": "user", "content": "q"}])
    finally:
        llm.fail_with = None


def test_scripted_llm_enforces_the_tool_message_contract() -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    asked = {"role": "assistant", "content": None, "tool_calls": [call("f", {}, "1")]}
    ok = {
        "messages": [
            {"role": "user", "content": "q"},
            asked,
            {"role": "tool", "tool_call_id": "1", "content": "{}"},
        ],
        "tools": tools,
    }
    assert tool_contract_problem(ok) is None
    missing = {
        "messages": [{"role": "user", "content": "q"}, asked, {"role": "user", "content": "again"}]
    }
    assert "must be followed by tool messages" in (tool_contract_problem(missing) or "")
    stray = {"messages": [{"role": "tool", "tool_call_id": "9", "content": "{}"}]}
    assert "answers no preceding tool call" in (tool_contract_problem(stray) or "")
    bad_tools = {
        "messages": [],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": []}}],
    }
    assert "object schema" in (tool_contract_problem(bad_tools) or "")  # fmt: skip


async def test_scripted_tool_call_stream_parses_with_the_openai_sdk(
    llm: ScriptedUpstream,
) -> None:
    """The double streams tool calls as OpenAI does: the official SDK assembles them."""
    import openai

    script(
        llm, {"content": None, "tool_calls": [call("hybrid_search", {"query": "연차 휴가"}, "s1")]}
    )
    client = openai.AsyncOpenAI(base_url=llm.url + "/v1", api_key="x")
    async with client.chat.completions.stream(
        model="tiny-chat", messages=[{"role": "user", "content": "q"}]
    ) as stream:
        final = await stream.get_final_completion()
    await client.close()
    message = final.choices[0].message
    assert final.choices[0].finish_reason == "tool_calls"
    assert message.tool_calls is not None
    (tool_call,) = message.tool_calls
    assert tool_call.id == "s1" and tool_call.function.name == "hybrid_search"  # type: ignore[union-attr]
    assert json.loads(tool_call.function.arguments) == {"query": "연차 휴가"}  # type: ignore[union-attr]
