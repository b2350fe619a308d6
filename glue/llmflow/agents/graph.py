"""The research agent's graph: nodes as plain functions, wired in :func:`build_research_graph`.

::

    START → call_model ─(tool calls?)─► review ─► run_tools ─► call_model …
                  └────(an answer)────► END

* ``call_model`` asks the LLM (OpenAI function calling) with the tools offered while
  ``tool_rounds < agents.max_tool_rounds``; after that without tools, so the run always ends
  with an answer.
* ``review`` pauses the run (LangGraph ``interrupt``) when a tool call is marked sensitive
  (``agents.sensitive_tools``); the resume value approves or rejects the pending calls.
* ``run_tools`` executes the approved calls as the caller's principal; an error, a rejected
  call or an unknown tool becomes the tool message the model reads next, so the model can
  correct itself instead of the run failing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from llmflow.agents.config import CLASSIFICATIONS, SensitiveTool
from llmflow.agents.state import ResearchContext, ResearchState
from llmflow.agents.tools import (
    TOOL_NAMES,
    Passage,
    ToolArgumentError,
    int_arg,
    kb_arg,
    optional_text,
    parse_arguments,
    required_text,
    tool_specs,
)
from llmflow.errors import LLMFlowError

log = logging.getLogger(__name__)

_TEXT_ARGS = ("query", "node", "chunk_id", "reference", "document_id", "section")


# -- nodes --------------------------------------------------------------------------------
async def call_model(state: ResearchState, runtime: Runtime[ResearchContext]) -> dict[str, Any]:
    """One LLM turn; tools are offered only while the tool budget lasts."""
    ctx = runtime.context
    settings = ctx.settings
    may_use_tools = state.get("tool_rounds", 0) < settings.max_tool_rounds
    system = settings.system_prompt
    system += "\n\nKnowledge bases of this conversation: " + ", ".join(
        state.get("knowledge_bases", [])
    )
    if state.get("instructions"):
        system += "\n\nInstructions from the application:\n" + state["instructions"]
    if not may_use_tools:
        system += "\n\nNo more tool calls are possible: answer now from the passages above."
    turn = await ctx.llm.complete(
        [{"role": "system", "content": system}, *state.get("messages", [])],
        tool_specs() if may_use_tools else None,
        classification=state.get("classification", "internal"),
    )
    message = dict(turn.message)
    calls = message.get("tool_calls") or []
    if not may_use_tools and calls:
        # a model that calls tools it was not offered gets no more rounds: its text stands
        log.warning("the agent's LLM called tools after the budget was spent; ignored")
        message.pop("tool_calls", None)
    elif len(calls) > settings.max_tool_calls_per_round:
        message["tool_calls"] = calls[: settings.max_tool_calls_per_round]
    if message.get("content") is None and not message.get("tool_calls"):
        message["content"] = ""
    return {"messages": [message], "usage": turn.usage}


def after_model(state: ResearchState) -> Literal["review", "__end__"]:
    """Tool calls go to review; an answer ends the run."""
    last = state["messages"][-1]
    return "review" if last.get("tool_calls") else "__end__"


async def review(state: ResearchState, runtime: Runtime[ResearchContext]) -> dict[str, Any]:
    """Approve the latest tool calls; pause for a person when one of them is sensitive.

    LangGraph re-runs this node from the top on resume, so everything before ``interrupt``
    is a pure function of the state (plus one classification lookup).
    """
    ctx = runtime.context
    calls: list[dict[str, Any]] = state["messages"][-1].get("tool_calls") or []
    classes = await ctx.tools.knowledge_bases(ctx.principal)
    pending = []
    for call in calls:
        reason = approval_reason(
            call, state.get("knowledge_bases", []), classes, ctx.settings.sensitive_tools
        )
        if reason is not None:
            pending.append(
                {
                    "tool_call_id": call["id"],
                    "tool": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                    "reason": reason,
                }
            )
    approvals = {call["id"]: True for call in calls}
    if pending:
        answer = interrupt({"kind": "tool_approval", "pending": pending})
        approvals.update(decisions(answer, [p["tool_call_id"] for p in pending]))
    return {"approvals": approvals}


async def run_tools(state: ResearchState, runtime: Runtime[ResearchContext]) -> dict[str, Any]:
    """Execute the approved tool calls of the latest turn, one tool message per call."""
    ctx = runtime.context
    calls: list[dict[str, Any]] = state["messages"][-1].get("tool_calls") or []
    approvals = state.get("approvals", {})
    classes = await ctx.tools.knowledge_bases(ctx.principal)
    classification = state.get("classification", "internal")
    messages: list[dict[str, Any]] = []
    citations: list[dict[str, Any]] = []
    for call in calls:
        name = call["function"]["name"]
        content: dict[str, Any]
        if not approvals.get(call["id"], False):
            content = {"error": f"a reviewer did not approve this {name} call; go on without it"}
        else:
            try:
                content, passages, read = await execute_tool(call, state, ctx)
                citations.extend(p.citation() for p in passages)
                classification = most_sensitive(
                    [classification, *(classes.get(kb, "internal") for kb in read)]
                )
            except ToolArgumentError as exc:
                content = {"error": f"invalid arguments for {name}: {exc}"}
            except LLMFlowError as exc:
                content = {"error": f"{name} failed: {exc.detail}"}
            except Exception as exc:  # a tool failure is the model's to work around
                log.exception("agent tool %s failed", name)
                content = {"error": f"{name} failed ({type(exc).__name__}); try another way"}
        messages.append(
            {
                "role": "tool",
                "tool_call_id": call["id"],
                "content": json.dumps(content, ensure_ascii=False),
            }
        )
    return {
        "messages": messages,
        "citations": citations,
        "tool_rounds": state.get("tool_rounds", 0) + 1,
        "approvals": {},
        "classification": classification,
    }


# -- the graph ----------------------------------------------------------------------------
ResearchGraph = StateGraph[ResearchState, ResearchContext, ResearchState, ResearchState]


def build_research_graph() -> ResearchGraph:
    """The graph, uncompiled: the caller compiles it with its checkpointer."""
    graph = StateGraph(ResearchState, context_schema=ResearchContext)
    graph.add_node("call_model", call_model)
    graph.add_node("review", review)
    graph.add_node("run_tools", run_tools)
    graph.add_edge(START, "call_model")
    graph.add_conditional_edges("call_model", after_model, ["review", END])
    graph.add_edge("review", "run_tools")
    graph.add_edge("run_tools", "call_model")
    return graph


def recursion_limit(max_tool_rounds: int) -> int:
    """LangGraph steps a run needs at most: three nodes per tool round, one final turn."""
    return 3 * max_tool_rounds + 5


# -- helpers ------------------------------------------------------------------------------
async def execute_tool(
    call: dict[str, Any], state: ResearchState, ctx: ResearchContext
) -> tuple[dict[str, Any], list[Passage], list[str]]:
    """Run one tool call as the caller: (what the model reads, passages cited, KBs read)."""
    name = call["function"]["name"]
    if name not in TOOL_NAMES:
        raise ToolArgumentError(f"there is no tool {name!r}; the tools are {list(TOOL_NAMES)}")
    args = restore_args(parse_arguments(call["function"]["arguments"]), ctx.restore)
    kbs = kb_arg(args, state.get("knowledge_bases", []))
    settings, principal, tools = ctx.settings, ctx.principal, ctx.tools
    limit = settings.tool_result_chars
    if name == "graph_neighbourhood":
        node = required_text(args, "node")
        hops = int_arg(args, "hops", 1, 1, 2)
        subgraph = await tools.neighbourhood(principal, kbs, node, hops, 50)
        return {"subgraph": subgraph}, [], kbs
    if name == "hybrid_search":
        query = required_text(args, "query")
        top_k = int_arg(args, "top_k", settings.search_top_k, 1, 20)
        passages = await tools.search(principal, kbs, query, top_k)
    elif name == "follow_reference":
        chunk_id = required_text(args, "chunk_id")
        reference = optional_text(args, "reference")
        passages = await tools.follow_reference(principal, kbs, chunk_id, reference)
    else:
        document_id = required_text(args, "document_id")
        section = optional_text(args, "section")
        passages = await tools.section(principal, kbs, document_id, section)
    return {"results": [p.for_model(limit) for p in passages]}, passages, kbs


def restore_args(args: dict[str, Any], restore: Callable[[str], str]) -> dict[str, Any]:
    return {k: restore(v) if k in _TEXT_ARGS and isinstance(v, str) else v for k, v in args.items()}


def approval_reason(
    call: dict[str, Any],
    run_kbs: Sequence[str],
    classes: dict[str, str],
    rules: Sequence[SensitiveTool],
) -> str | None:
    """Why a call needs a person's approval, or None. A call whose knowledge bases cannot
    be read from its arguments counts as reading every knowledge base of the run."""
    name = call["function"]["name"]
    for rule in rules:
        if rule.name != name:
            continue
        if rule.classifications is None:
            return f"{name} is marked sensitive"
        try:
            kbs = kb_arg(parse_arguments(call["function"]["arguments"]), run_kbs)
        except ToolArgumentError:
            kbs = list(run_kbs)
        hits = sorted(kb for kb in kbs if classes.get(kb, "internal") in rule.classifications)
        if hits:
            labels = ", ".join(f"{kb} ({classes.get(kb)})" for kb in hits)
            return f"{name} reads classified knowledge bases: {labels}"
    return None


def decisions(answer: Any, pending_ids: Sequence[str]) -> dict[str, bool]:
    """The resume value as call id → approved. ``True``/``False`` or ``{"approve": bool}``
    decide every pending call; ``{"decisions": {id: bool}}`` decides per call (undecided
    calls are rejected: approval is never assumed)."""
    if isinstance(answer, bool):
        return dict.fromkeys(pending_ids, answer)
    default = False
    per_call: dict[str, Any] = {}
    if isinstance(answer, dict):
        default = answer.get("approve") is True
        raw = answer.get("decisions")
        per_call = raw if isinstance(raw, dict) else {}
    return {cid: per_call.get(cid, default) is True for cid in pending_ids}


def most_sensitive(classifications: Sequence[str]) -> str:
    ranked = [c for c in classifications if c in CLASSIFICATIONS]
    return max(ranked, key=CLASSIFICATIONS.index) if ranked else "internal"
