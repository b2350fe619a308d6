"""The research agent as an OpenAI chat model (``llmflow-agent-research``) for the gateway.

Dify's OpenAI-API-compatible provider, the openai SDK and any chat UI talk to it like to any
model: ``POST /v1/chat/completions`` with ``messages`` (and ``stream``). The answer is a
``chat.completion`` (or ``chat.completion.chunk`` events); LLMFlow's extras ride in one
documented field, ``llmflow``: ``{thread_id, status, citations, pending, tool_rounds,
knowledge_bases}`` — on the completion, and on the streamed chunk that carries
``finish_reason``. Clients that do not know it ignore it.

Optional request fields: ``knowledge_bases`` (names; default: every knowledge base the
credential may read).

A run that pauses for approval answers with text that says what waits and how to decide
(``POST /v1/agents/research/threads/{thread_id}/resume``), ``status: awaiting_approval``.

The agent's LLM does not stream here: the graph runs to its answer, then the answer is sent
(streamed in word pieces when asked), so the first streamed byte comes when the research
is done.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from llmflow.agents.service import AgentRun, ResearchAgents
from llmflow.errors import InvalidRequest
from llmflow.gateway.inprocess import InProcessCall

PIECE_WORDS = 4
"""Words per streamed content chunk."""


class ResearchAgentModel:
    """:class:`~llmflow.gateway.inprocess.InProcessModel` over :class:`ResearchAgents`."""

    def __init__(self, agents: Callable[[], Awaitable[ResearchAgents]]) -> None:
        # looked up per request, not held: the runtime owns (and may rebuild) the agent
        self.agents = agents

    async def _run(self, call: InProcessCall, body: dict[str, Any]) -> AgentRun:
        kbs = body.get("knowledge_bases")
        if kbs is not None and (
            not isinstance(kbs, list) or not all(isinstance(k, str) for k in kbs)
        ):
            raise InvalidRequest("'knowledge_bases' must be a list of knowledge base names")
        agents = await self.agents()
        return await agents.start(
            call.principal,
            body.get("messages") or [],
            knowledge_bases=kbs,
            classification=call.classification,
            restore=call.restore,
        )

    async def complete(self, call: InProcessCall, body: dict[str, Any]) -> dict[str, Any]:
        run = await self._run(call, body)
        return chat_completion(run, call.model)

    async def stream(
        self, call: InProcessCall, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        run = await self._run(call, body)  # refusals and failures before the first byte
        return _aiter(completion_chunks(run, call.model))


async def _aiter(chunks: Sequence[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for chunk in chunks:
        yield chunk


def _extras(run: AgentRun) -> dict[str, Any]:
    return {
        "thread_id": run.thread_id,
        "status": run.status,
        "citations": run.citations,
        "pending": run.pending,
        "tool_rounds": run.tool_rounds,
        "knowledge_bases": run.knowledge_bases,
    }


def _usage(run: AgentRun) -> dict[str, int]:
    prompt = run.usage.get("prompt_tokens", 0)
    completion = run.usage.get("completion_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_completion(run: AgentRun, model: str) -> dict[str, Any]:
    """OpenAI's ``chat.completion`` for a run; ``usage`` sums the agent's LLM calls."""
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex[:24],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": run.answer},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(run),
        "llmflow": _extras(run),
    }


def completion_chunks(run: AgentRun, model: str) -> list[dict[str, Any]]:
    """OpenAI's ``chat.completion.chunk`` events for a run: the role, the answer in word
    pieces, a last choice chunk with ``finish_reason`` (and the ``llmflow`` extras), then a
    ``choices: []`` chunk with ``usage`` (stream_options.include_usage)."""
    cid, created = "chatcmpl-" + uuid.uuid4().hex[:24], int(time.time())

    def chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
            **extra,
        }

    words = run.answer.split(" ")
    pieces = [
        " ".join(words[i : i + PIECE_WORDS]) + (" " if i + PIECE_WORDS < len(words) else "")
        for i in range(0, len(words), PIECE_WORDS)
    ]
    out = [
        chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    ]
    out += [
        chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        for piece in pieces
        if piece
    ]
    out.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}], llmflow=_extras(run)))
    out.append(chunk([], usage=_usage(run)))
    return out
