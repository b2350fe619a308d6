"""The research agent's own REST surface: start a run, read a thread, approve or reject.

The chat surface (``model: llmflow-agent-research`` on ``/v1/chat/completions``) starts runs
too; when one pauses for approval (a sensitive tool call, LangGraph ``interrupt``), this is
where it is decided: ``POST /v1/agents/research/threads/{thread_id}/resume``. Threads belong
to the caller's tenant; another tenant's thread id is a 404.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, Field

from llmflow.api.authz import authorize, record_change
from llmflow.api.deps import PrincipalDep, RuntimeDep
from llmflow.api.problems import problem_responses
from llmflow.auth.policy import model_resource
from llmflow.auth.principal import Principal
from llmflow.errors import Conflict
from llmflow.runtime import Runtime

router = APIRouter(prefix="/v1/agents/research", tags=["agents"])

ThreadId = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$", description="the run's thread id")]


class ChatMessage(BaseModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class RunRequest(BaseModel):
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    knowledge_bases: list[str] | None = Field(
        default=None, max_length=20, description="default: every knowledge base you may read"
    )


class ResumeRequest(BaseModel):
    approve: bool = Field(description="decision for every pending tool call")
    decisions: dict[str, bool] | None = Field(
        default=None, description="per tool_call_id decisions, overriding 'approve'"
    )
    comment: str | None = Field(default=None, max_length=2000, description="kept in the audit")


class PendingCall(BaseModel):
    tool_call_id: str
    tool: str
    arguments: str
    reason: str


class AgentRunOut(BaseModel):
    thread_id: str
    status: Literal["completed", "awaiting_approval"]
    answer: str
    citations: list[dict[str, Any]]
    pending: list[PendingCall]
    usage: dict[str, int]
    tool_rounds: int
    knowledge_bases: list[str]


ClassificationHeader = Annotated[
    Literal["public", "internal", "confidential", "secret"],
    Header(alias="X-Data-Classification", description="classification of the question"),
]


async def _may_use_agent(
    rt: Runtime, principal: Principal, classification: str, request: Request
) -> None:
    """The same ``model.use`` decision the gateway asks for the agent model."""
    name = rt.settings.agents.model_name
    await authorize(
        rt,
        principal,
        "model.use",
        model_resource(principal.tenant_id, name, "internal"),
        {"data_classification": classification},
        request=request,
    )


@router.post(
    "/runs", response_model=AgentRunOut, responses=problem_responses(401, 403, 404, 422, 502, 503)
)
async def start_run(
    body: RunRequest,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
    classification: ClassificationHeader = "internal",
) -> dict[str, Any]:
    """Research a question; answers, or pauses with ``status: awaiting_approval``."""
    await _may_use_agent(rt, principal, classification, request)
    agents = await rt.agents()
    run = await agents.start(
        principal,
        [m.model_dump() for m in body.messages],
        knowledge_bases=body.knowledge_bases,
        classification=classification,
    )
    return run.to_dict()


@router.get(
    "/threads/{thread_id}", response_model=AgentRunOut, responses=problem_responses(401, 404)
)
async def get_thread(
    thread_id: ThreadId, rt: RuntimeDep, principal: PrincipalDep
) -> dict[str, Any]:
    """Where a thread of your tenant stands (its answer, or what awaits approval)."""
    agents = await rt.agents()
    return (await agents.thread(principal, thread_id)).to_dict()


@router.post(
    "/threads/{thread_id}/resume",
    response_model=AgentRunOut,
    responses=problem_responses(401, 403, 404, 409, 422, 502, 503),
)
async def resume_thread(
    thread_id: ThreadId,
    body: ResumeRequest,
    request: Request,
    rt: RuntimeDep,
    principal: PrincipalDep,
) -> dict[str, Any]:
    """Approve or reject the tool calls a thread waits on; the run goes on and answers (or
    pauses again). The decision is audited. 409 when the thread waits for nothing."""
    await _may_use_agent(rt, principal, "internal", request)
    agents = await rt.agents()
    pending = (await agents.thread(principal, thread_id)).pending
    if not pending:
        raise Conflict(f"agent thread {thread_id!r} is not waiting for an approval")
    # recorded before the approved calls run: the decision is the change
    await record_change(
        rt,
        principal,
        "agent.tool_approval",
        "agent_thread",
        thread_id,
        request=request,
        details={
            "approve": body.approve,
            "decisions": body.decisions or {},
            "tools": [p["tool"] for p in pending],
            "comment": body.comment or "",
        },
    )
    run = await agents.resume(
        principal, thread_id, {"approve": body.approve, "decisions": body.decisions or {}}
    )
    return run.to_dict()


@router.delete("/threads/{thread_id}", status_code=204, responses=problem_responses(401, 403, 404))
async def delete_thread(
    thread_id: ThreadId, request: Request, rt: RuntimeDep, principal: PrincipalDep
) -> Response:
    """Forget a thread (its checkpoints); its starter or an editor of the tenant may."""
    agents = await rt.agents()
    await agents.delete(principal, thread_id)
    await record_change(rt, principal, "agent.thread_delete", "agent_thread", thread_id,
                        request=request)  # fmt: skip
    return Response(status_code=204)
