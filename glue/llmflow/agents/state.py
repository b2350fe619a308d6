"""The research agent's state (checkpointed) and its per-run context (never checkpointed).

The state holds only JSON-like values — OpenAI chat messages, citations, counters — so that a
checkpoint written by one process can be resumed by another (LangGraph's serializer stores
them as they are). Who is calling is *not* state: the verified principal arrives with every
invocation in :class:`ResearchContext`, so a resumed run acts for the caller who resumed it,
and the tenant can never be read back from something a client could have written.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypedDict

if TYPE_CHECKING:
    from llmflow.agents.config import AgentSettings
    from llmflow.agents.llm import ChatModel
    from llmflow.agents.tools import ResearchTools
    from llmflow.auth.principal import Principal

Message = dict[str, Any]
"""One OpenAI chat message: ``{"role": ..., "content": ..., "tool_calls"?, "tool_call_id"?}``."""


def merge_citations(
    left: list[dict[str, Any]], right: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Citations in the order first seen, one per chunk."""
    seen = {c.get("chunk_id") for c in left}
    out = list(left)
    for citation in right:
        if citation.get("chunk_id") not in seen:
            seen.add(citation.get("chunk_id"))
            out.append(citation)
    return out


def add_usage(left: dict[str, int], right: dict[str, int]) -> dict[str, int]:
    """Token counts summed over every LLM call of the run."""
    return {k: left.get(k, 0) + right.get(k, 0) for k in {*left, *right}}


class ResearchState(TypedDict, total=False):
    messages: Annotated[list[Message], operator.add]
    """The conversation as the model sees it, minus the system prompt (added per call)."""
    knowledge_bases: list[str]
    """The knowledge bases this run may read (a subset of the caller's grant)."""
    instructions: str
    """System text the client sent (a Dify app's prompt), appended to the agent's own."""
    citations: Annotated[list[dict[str, Any]], merge_citations]
    usage: Annotated[dict[str, int], add_usage]
    tool_rounds: int
    """Model turns that called tools so far (bounded by ``agents.max_tool_rounds``)."""
    approvals: dict[str, bool]
    """Tool call id → approved, for the tool calls of the latest model turn."""
    classification: str
    """The most sensitive data classification the run has read; the LLM calls declare it."""
    started_by: str
    """Subject of the principal that started the run (who may resume it besides editors)."""


@dataclass(frozen=True, slots=True)
class ResearchContext:
    """What one invocation (start or resume) brings along: never stored in a checkpoint."""

    principal: Principal
    tools: ResearchTools
    llm: ChatModel
    settings: AgentSettings
    restore: Callable[[str], str] = field(default=lambda text: text)
    """Puts back values the gateway's PII guard pseudonymised in the question, so that a
    search for a pseudonymised name searches for the name (identity when not needed)."""
