"""Dify logs and annotations as training examples.

``DifyDouble`` replays the list endpoints of Dify 1.14.2 (a server that cannot run here):
console ``/console/api/apps/{app_id}/chat-conversations`` (page/limit, ``{page, limit, total,
has_more, data}``), ``.../chat-messages`` (``conversation_id`` required, ``first_id``
pagination backwards: the newest ``limit`` messages older than ``first_id``, returned oldest
first, ``{limit, has_more, data}``), ``.../annotations`` and the service API's
``/v1/conversations`` (``user`` required, ``last_id``), ``/v1/messages`` and
``/v1/apps/annotations`` (``has_more = len(page) == limit``). Field names follow Dify's
``fields/conversation_fields.py`` (``message_detail_fields``), ``fields/message_fields.py``
and ``fields/annotation_fields.py`` (``answer`` is the annotation's content); errors are
``{"code", "message", "status"}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llmflow.dify.client import DifyConsole, DifyError, DifyService
from llmflow.training.datasets.dify import (
    DifyLogFetcher,
    examples_from_annotations,
    examples_from_export,
    examples_from_messages,
)
from llmflow.training.datasets.errors import DatasetFormatError

ADMIN_KEY, WORKSPACE, APP, APP_KEY = "admin-secret", "ws-1", "app-1", "app-key-1"


def message(conv: str, n: int, query: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"{conv}-m{n}",
        "conversation_id": conv,
        "parent_message_id": f"{conv}-m{n - 1}" if n > 1 else None,
        "inputs": {},
        "query": query,
        "message": [{"role": "user", "text": query}],
        "message_tokens": 10,
        "answer": answer,
        "answer_tokens": 12,
        "provider_response_latency": 0.8,
        "from_source": "api",
        "from_end_user_id": "eu-1",
        "from_account_id": None,
        "feedbacks": [],
        "feedback": None,
        "workflow_run_id": None,
        "annotation": None,
        "annotation_hit_history": None,
        "created_at": 1_763_000_000 + n * 60 + (0 if conv == "c1" else 10_000),
        "agent_thoughts": [],
        "message_files": [],
        "metadata": {},
        "status": "normal",
        "error": None,
        **extra,
    }


CONVERSATIONS = {
    "c1": [
        message("c1", 1, "연차는 며칠인가요?", "연 15일입니다."),
        message("c1", 2, "이월도 되나요?", "최대 5일까지 이월됩니다."),
        message("c1", 3, "반차는요?", "반차는 0.5일로 계산됩니다."),
    ],
    "c2": [
        message(
            "c2",
            1,
            "What is the VPN address?",
            "I am not sure.",
            annotation={
                "id": "a9",
                "question": "What is the VPN address?",
                "content": "Use vpn.corp.example and your SSO login.",
                "account": None,
                "created_at": 1_763_000_000,
            },
            feedbacks=[{"rating": "dislike", "content": None, "from_source": "user"}],
        ),
        message(
            "c2",
            2,
            "And the port?",
            "Port 22.",
            feedbacks=[{"rating": "dislike", "content": "wrong", "from_source": "admin"}],
        ),
    ],
    "c3": [message("c3", 1, "오류 테스트", "", status="error", error="model timeout")],
}
ANNOTATIONS = [
    {
        "id": f"a{i}",
        "question": f"질문 {i}",
        "answer": f"답변 {i}",
        "hit_count": i,
        "created_at": 1_763_000_000 + i,
    }
    for i in range(5)
] + [{"id": "a5", "question": "빈 답", "answer": "", "hit_count": 0, "created_at": 1}]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status)


def _limit(request: Request) -> int:
    return int(request.query_params.get("limit", "20"))


class DifyDouble(LocalServer):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.app = Starlette(
            routes=[
                Route("/console/api/apps/{app_id}/chat-conversations", self.conversations),
                Route("/console/api/apps/{app_id}/chat-messages", self.console_messages),
                Route("/console/api/apps/{app_id}/annotations", self.annotations),
                Route("/v1/conversations", self.service_conversations),
                Route("/v1/messages", self.service_messages),
                Route("/v1/apps/annotations", self.annotations),
            ]
        )

    def _console_auth(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {ADMIN_KEY}":
            return _error(401, "unauthorized", "Invalid Authorization token.")
        if request.headers.get("x-workspace-id") != WORKSPACE:
            return _error(401, "unauthorized", "Invalid workspace.")
        if request.path_params["app_id"] != APP:
            return _error(404, "app_not_found", "App not found.")
        return None

    def _service_auth(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {APP_KEY}":
            return _error(401, "unauthorized", "Access token is invalid")
        return None

    async def conversations(self, request: Request) -> JSONResponse:
        self.calls.append(str(request.url.path) + "?" + str(request.query_params))
        if (problem := self._console_auth(request)) is not None:
            return problem
        page, limit = int(request.query_params.get("page", "1")), _limit(request)
        ids = sorted(CONVERSATIONS)
        items = [
            {
                "id": c,
                "status": "normal",
                "from_source": "api",
                "name": c,
                "summary": "",
                "message_count": len(CONVERSATIONS[c]),
                "annotated": c == "c2",
            }
            for c in ids[(page - 1) * limit : page * limit]
        ]
        return JSONResponse(
            {
                "page": page,
                "limit": limit,
                "total": len(ids),
                "has_more": page * limit < len(ids),
                "data": items,
            }
        )

    def _history(self, request: Request) -> JSONResponse:
        conv = request.query_params.get("conversation_id")
        if not conv:
            return _error(400, "invalid_param", "conversation_id is required")
        if conv not in CONVERSATIONS:
            return _error(404, "not_found", "Conversation Not Exists.")
        messages = CONVERSATIONS[conv]
        first_id = request.query_params.get("first_id")
        if first_id:
            idx = next(i for i, m in enumerate(messages) if m["id"] == first_id)
            messages = messages[:idx]
        limit = _limit(request)
        page = messages[-limit:]
        return JSONResponse({"limit": limit, "has_more": len(messages) > len(page), "data": page})

    async def console_messages(self, request: Request) -> JSONResponse:
        if (problem := self._console_auth(request)) is not None:
            return problem
        return self._history(request)

    async def annotations(self, request: Request) -> JSONResponse:
        if "app_id" in request.path_params:
            problem = self._console_auth(request)
        else:
            problem = self._service_auth(request)
        if problem is not None:
            return problem
        page, limit = int(request.query_params.get("page", "1")), _limit(request)
        items = ANNOTATIONS[(page - 1) * limit : page * limit]
        return JSONResponse(
            {
                "data": items,
                "has_more": len(items) == limit,
                "limit": limit,
                "total": len(ANNOTATIONS),
                "page": page,
            }
        )

    async def service_conversations(self, request: Request) -> JSONResponse:
        if (problem := self._service_auth(request)) is not None:
            return problem
        if not request.query_params.get("user"):
            return _error(400, "invalid_param", "user is required")
        ids = sorted(CONVERSATIONS)
        last_id = request.query_params.get("last_id")
        if last_id:
            ids = ids[ids.index(last_id) + 1 :]
        limit = _limit(request)
        items = [
            {
                "id": c,
                "name": c,
                "inputs": {},
                "status": "normal",
                "introduction": "",
                "created_at": 1,
                "updated_at": 2,
            }
            for c in ids[:limit]
        ]
        return JSONResponse({"limit": limit, "has_more": len(ids) > limit, "data": items})

    async def service_messages(self, request: Request) -> JSONResponse:
        if (problem := self._service_auth(request)) is not None:
            return problem
        if not request.query_params.get("user"):
            return _error(400, "invalid_param", "user is required")
        return self._history(request)


@pytest.fixture(scope="module")
def dify_server() -> Iterator[DifyDouble]:
    server = DifyDouble()
    server.start()
    yield server
    server.stop()


async def test_console_logs_become_conversations_with_annotations_preferred(
    dify_server: DifyDouble,
) -> None:
    console = DifyConsole.with_admin_key(dify_server.url, ADMIN_KEY, WORKSPACE)
    ticks: list[int] = []
    try:
        items = await DifyLogFetcher(page_limit=2, progress=ticks.append).console_messages(
            console, APP
        )
    finally:
        await console.aclose()
    assert len(items) == 6 and sum(ticks) == 6  # two pages of conversations, c1 in two pages
    assert any("page=2" in c for c in dify_server.calls)
    rows = examples_from_messages(items)
    by_ref = {e.ref: e for e in rows.examples}
    c1 = by_ref["conversation c1"]
    assert [t.content for t in c1.turns[::2]] == [
        "연차는 며칠인가요?",
        "이월도 되나요?",
        "반차는요?",
    ]
    # the operator's annotation replaces a disliked answer; the next disliked one ends it
    c2 = by_ref["conversation c2"]
    assert c2.response == "Use vpn.corp.example and your SSO login." and len(c2.turns) == 2
    assert {(r.ref, r.reason) for r in rows.rejected} == {
        ("message c2-m2", "disliked"),
        ("message c3-m1", "dify_error"),
    }
    per_message = examples_from_messages(items, "message")
    assert len(per_message.examples) == 4


async def test_service_api_logs_of_one_user_and_annotations(dify_server: DifyDouble) -> None:
    service = DifyService.with_key(dify_server.url, APP_KEY)
    try:
        fetcher = DifyLogFetcher(page_limit=2)
        items = await fetcher.service_messages(service, "eu-1")
        annotations = await fetcher.service_annotations(service)
    finally:
        await service.aclose()
    assert sorted(m["id"] for m in items) == sorted(
        m["id"] for conv in CONVERSATIONS.values() for m in conv
    )
    assert len(annotations) == 6
    rows = examples_from_annotations(annotations)
    assert len(rows.examples) == 5 and rows.rejected[0].reason == "empty_output"


async def test_dify_errors_surface_with_their_code(dify_server: DifyDouble) -> None:
    console = DifyConsole.with_admin_key(dify_server.url, "wrong", WORKSPACE)
    try:
        with pytest.raises(DifyError) as info:
            await DifyLogFetcher().console_annotations(console, APP)
    finally:
        await console.aclose()
    assert info.value.status == 401 and info.value.code == "unauthorized"


def test_saved_exports_are_recognised_by_shape() -> None:
    page = {"limit": 20, "has_more": False, "data": CONVERSATIONS["c1"]}
    assert len(examples_from_export(page).examples) == 1
    assert len(examples_from_export([page, {"data": CONVERSATIONS["c3"]}]).rejected) == 1
    assert len(examples_from_export({"data": ANNOTATIONS, "page": 1}).examples) == 5
    with pytest.raises(DatasetFormatError, match="not a Dify export"):
        examples_from_export({"data": [{"foo": 1}]})
    with pytest.raises(DatasetFormatError, match="holds no messages"):
        examples_from_export({"data": []})
