"""The research agent as a service: start a run, read a thread, resume after approval.

Checkpoints live in PostgreSQL (``langgraph-checkpoint-postgres``' ``AsyncPostgresSaver`` on
a psycopg pool over the platform database — the embedded server in embedded mode, the DSN
in cluster mode), so a run paused for approval can be resumed by another request, another
replica or after a restart.

Threads are tenant-scoped by construction: the checkpoint key is ``<tenant>/<thread id>``
with the tenant taken from the verified principal, so a thread id of another tenant names
nothing (404), whoever asks.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.types import Command, Interrupt

from llmflow.agents.config import CLASSIFICATIONS, AgentSettings
from llmflow.agents.graph import build_research_graph, recursion_limit
from llmflow.agents.llm import ChatModel, OpenAIChatModel
from llmflow.agents.state import Message, ResearchContext, ResearchState
from llmflow.agents.tools import ResearchTools
from llmflow.auth.principal import EDITOR
from llmflow.errors import Conflict, Forbidden, InvalidRequest, NotFound, ServiceUnavailable

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

RunStatus = Literal["completed", "awaiting_approval"]


@dataclass(slots=True)
class AgentRun:
    """Where a thread stands after a call: its answer, or the tool calls awaiting approval."""

    thread_id: str
    status: RunStatus
    answer: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    pending: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    tool_rounds: int = 0
    knowledge_bases: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "status": self.status,
            "answer": self.answer,
            "citations": self.citations,
            "pending": self.pending,
            "usage": self.usage,
            "tool_rounds": self.tool_rounds,
            "knowledge_bases": self.knowledge_bases,
        }


def _identity(text: str) -> str:
    return text


class ResearchAgents:
    """The compiled research graph with its checkpointer, tools and LLM."""

    def __init__(
        self,
        settings: AgentSettings,
        tools: ResearchTools,
        llm: ChatModel | None,
        checkpointer: BaseCheckpointSaver[Any],
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.settings = settings
        self.tools = tools
        self.llm = llm
        self.graph = build_research_graph().compile(checkpointer=checkpointer)
        self._on_close = list(on_close)

    @classmethod
    async def open(
        cls,
        settings: AgentSettings,
        tools: ResearchTools,
        llm: ChatModel | None,
        conninfo: str | None,
    ) -> ResearchAgents:
        """Set up the checkpointer (``setup()`` creates or migrates LangGraph's tables)."""
        closers: list[Callable[[], Awaitable[None]]] = []
        checkpointer: BaseCheckpointSaver[Any]
        if settings.checkpoints == "postgres":
            if not conninfo:
                raise ServiceUnavailable("agent checkpoints need the PostgreSQL connection info")
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            # the saver's own connection settings: autocommit, no server-side prepared
            # statements (safe behind PgBouncer), rows as dicts
            pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                conninfo,
                min_size=1,
                max_size=settings.checkpoint_pool_size,
                kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
                open=False,
            )
            await pool.open(wait=True, timeout=30)
            closers.append(pool.close)
            saver = AsyncPostgresSaver(pool)
            await saver.setup()
            checkpointer = saver
        else:
            from langgraph.checkpoint.memory import InMemorySaver

            checkpointer = InMemorySaver()
        if isinstance(llm, OpenAIChatModel):
            closers.append(llm.aclose)
        return cls(settings, tools, llm, checkpointer, closers)

    async def close(self) -> None:
        for close in reversed(self._on_close):
            try:
                await close()
            except Exception:
                log.exception("closing the research agent's resources failed")
        self._on_close = []

    # -- runs -----------------------------------------------------------------------------
    async def start(
        self,
        principal: Principal,
        messages: Sequence[Any],
        *,
        knowledge_bases: Sequence[str] | None = None,
        classification: str = "internal",
        restore: Callable[[str], str] = _identity,
    ) -> AgentRun:
        """A new thread for this conversation, run until it answers or needs approval."""
        conversation, instructions = client_conversation(messages)
        available = await self.tools.knowledge_bases(principal)
        if knowledge_bases:
            outside = [kb for kb in knowledge_bases if kb not in available]
            if outside:
                raise Forbidden(
                    f"knowledge base {outside[0]!r} is not readable with this credential"
                )
            kbs = list(dict.fromkeys(knowledge_bases))
        else:
            kbs = sorted(available)
        if not kbs:
            raise InvalidRequest(
                "no knowledge base is readable with this credential: the agent has nothing "
                "to research"
            )
        if classification not in CLASSIFICATIONS:
            raise InvalidRequest(f"unknown data classification {classification!r}")
        thread_id = uuid.uuid4().hex
        state: ResearchState = {
            "messages": conversation,
            "knowledge_bases": kbs,
            "instructions": instructions,
            "citations": [],
            "usage": {},
            "tool_rounds": 0,
            "approvals": {},
            "classification": classification,
            "started_by": principal.subject,
        }
        return await self._invoke(principal, thread_id, state, restore)

    async def resume(self, principal: Principal, thread_id: str, answer: Any) -> AgentRun:
        """Continue a thread paused for approval; ``answer`` approves or rejects (see
        :func:`llmflow.agents.graph.decisions`). The started run's tenant must be the
        caller's; its starter or an editor of the tenant may decide."""
        snapshot = await self.graph.aget_state(self._config(principal, thread_id))
        if not snapshot.values:
            raise NotFound(f"no agent thread {thread_id!r} in this tenant")
        if not snapshot.interrupts:
            raise Conflict(f"agent thread {thread_id!r} is not waiting for an approval")
        if snapshot.values.get("started_by") != principal.subject and EDITOR not in principal.roles:
            raise Forbidden("only the thread's starter or an editor of the tenant may approve")
        return await self._invoke(principal, thread_id, Command(resume=answer), _identity)

    async def thread(self, principal: Principal, thread_id: str) -> AgentRun:
        """Where a thread of the caller's tenant stands."""
        snapshot = await self.graph.aget_state(self._config(principal, thread_id))
        if not snapshot.values:
            raise NotFound(f"no agent thread {thread_id!r} in this tenant")
        return self._outcome(thread_id, snapshot.values, snapshot.interrupts)

    async def delete(self, principal: Principal, thread_id: str) -> None:
        """Forget a thread of the caller's tenant (its checkpoints and pending writes)."""
        config = self._config(principal, thread_id)
        snapshot = await self.graph.aget_state(config)
        if not snapshot.values:
            raise NotFound(f"no agent thread {thread_id!r} in this tenant")
        if snapshot.values.get("started_by") != principal.subject and EDITOR not in principal.roles:
            raise Forbidden("only the thread's starter or an editor of the tenant may delete it")
        checkpointer = self.graph.checkpointer
        if isinstance(checkpointer, BaseCheckpointSaver):
            await checkpointer.adelete_thread(config["configurable"]["thread_id"])

    async def _invoke(
        self,
        principal: Principal,
        thread_id: str,
        payload: ResearchState | Command[Any],
        restore: Callable[[str], str],
    ) -> AgentRun:
        if self.llm is None:
            raise ServiceUnavailable(
                "the research agent has no LLM: set agents.llm_base_url "
                "(LLMFLOW_AGENTS__LLM_BASE_URL) to the gateway's /v1 URL"
            )
        context = ResearchContext(principal, self.tools, self.llm, self.settings, restore)
        result = await self.graph.ainvoke(
            payload, self._config(principal, thread_id), context=context, version="v2"
        )
        values: dict[str, Any] = dict(result.value) if isinstance(result.value, dict) else {}
        return self._outcome(thread_id, values, result.interrupts)

    def _config(self, principal: Principal, thread_id: str) -> RunnableConfig:
        if not thread_id or len(thread_id) > 128:
            raise InvalidRequest("invalid thread id")
        return {
            "configurable": {"thread_id": f"{principal.tenant_id}/{thread_id}"},
            "recursion_limit": recursion_limit(self.settings.max_tool_rounds),
        }

    def _outcome(
        self, thread_id: str, values: dict[str, Any], interrupts: Sequence[Interrupt]
    ) -> AgentRun:
        pending = [
            p for i in interrupts if isinstance(i.value, dict) for p in i.value.get("pending", [])
        ]
        messages: list[Message] = values.get("messages", [])
        run = AgentRun(
            thread_id=thread_id,
            status="awaiting_approval" if pending else "completed",
            answer="",
            citations=list(values.get("citations", [])),
            pending=pending,
            usage=dict(values.get("usage", {})),
            tool_rounds=int(values.get("tool_rounds", 0)),
            knowledge_bases=list(values.get("knowledge_bases", [])),
        )
        if pending:
            run.answer = approval_message(thread_id, pending)
        elif messages and messages[-1].get("role") == "assistant":
            run.answer = str(messages[-1].get("content") or "")
        return run


def approval_message(thread_id: str, pending: Sequence[dict[str, Any]]) -> str:
    """What a chat client shows when the run paused: what waits, and how to decide."""
    lines = [
        "The research needs an approval before it can go on:",
        *(f"- {p['tool']}({p['arguments']}): {p['reason']}" for p in pending),
        f"Thread: {thread_id}. Approve or reject with POST "
        f"/v1/agents/research/threads/{thread_id}/resume "
        '{"approve": true} (or false); the answer comes with that call.',
    ]
    return "\n".join(lines)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: keep the text parts
        return "\n".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def client_conversation(messages: Sequence[Any]) -> tuple[list[Message], str]:
    """The client's chat as the agent's conversation: user and assistant texts, with system
    (and ``developer``) messages gathered as instructions. Tool messages of a client's own
    tool loop are not this agent's and are left out."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list of chat messages")
    instructions: list[str] = []
    out: list[Message] = []
    for message in messages:
        if not isinstance(message, dict):
            raise InvalidRequest("every message must be an object with 'role' and 'content'")
        role, text = message.get("role"), _text(message.get("content")).strip()
        if role in ("system", "developer"):
            if text:
                instructions.append(text)
        elif role in ("user", "assistant") and text:
            out.append({"role": role, "content": text})
    if not out or out[-1]["role"] != "user":
        raise InvalidRequest("the conversation must end with a user message")
    return out, "\n\n".join(instructions)


async def open_research_agents(rt: Runtime) -> ResearchAgents:
    """The runtime's research agent: its settings, the runtime's tools, the gateway LLM and
    checkpoints in the runtime's PostgreSQL."""
    from llmflow.agents.runtime_tools import RuntimeResearchTools

    settings: AgentSettings = rt.settings.agents
    llm = OpenAIChatModel(settings) if settings.llm_base_url else None
    return await ResearchAgents.open(settings, RuntimeResearchTools(rt), llm, rt.db.conninfo)
