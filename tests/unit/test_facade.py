"""The ERP facade's pure parts: callback signatures, request fingerprints, Dify's SSE and
blocking shapes (replayed by tests/dify_service_fake.py), our stream frames."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dify_service_fake import FakeDifyService

from llmflow.dify.client import DifyService
from llmflow.dify.facade import (
    FacadeSettings,
    RunRequest,
    dify_events,
    frame,
    parse_blocking,
    request_hash,
    sign_callback,
    verify_callback,
)


@pytest.fixture(scope="module")
def dify() -> Iterator[FakeDifyService]:
    server = FakeDifyService()
    server.start()
    yield server
    server.stop()


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    body = b'{"id":"r1","status":"succeeded"}'
    ts = int(time.time())
    sig = sign_callback("whsec_x", ts, body)
    expected = hmac.new(b"whsec_x", f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    assert sig == "v1=" + expected
    assert verify_callback("whsec_x", str(ts), body, sig)
    assert not verify_callback("whsec_y", str(ts), body, sig)
    assert not verify_callback("whsec_x", str(ts), body + b" ", sig)
    assert not verify_callback(
        "whsec_x", str(ts - 3600), body, sign_callback("whsec_x", ts - 3600, body)
    )
    assert verify_callback("whsec_x", str(ts), body, f"v1=deadbeef,{sig}")  # rotation: any of


def test_request_fingerprint() -> None:
    a = RunRequest(inputs={"x": 1, "y": "가"})
    b = RunRequest(inputs={"y": "가", "x": 1})
    assert request_hash("po", a) == request_hash("po", b)  # key order does not matter
    assert request_hash("po", a) != request_hash("other", a)
    assert request_hash("po", a) != request_hash("po", RunRequest(inputs={"x": 2, "y": "가"}))
    assert request_hash("po", a) != request_hash(
        "po", a.model_copy(update={"response_mode": "async"})
    )


def test_blocking_shapes() -> None:
    status, result, ids = parse_blocking(
        "workflow",
        {
            "task_id": "t",
            "workflow_run_id": "w",
            "data": {
                "id": "w",
                "status": "failed",
                "outputs": None,
                "error": "boom",
                "elapsed_time": 1.0,
                "total_tokens": 3,
                "total_steps": 2,
            },
        },
    )
    assert status == "failed" and result["dify_error"] == "boom" and ids["workflow_run_id"] == "w"
    status, result, ids = parse_blocking(
        "chat",
        {
            "event": "message",
            "message_id": "m",
            "conversation_id": "c",
            "answer": "네",
            "metadata": {"usage": {"total_tokens": 5}, "retriever_resources": [{"position": 1}]},
        },
    )
    assert status == "succeeded" and result["answer"] == "네" and ids["message_id"] == "m"
    assert result["citations"] == [{"position": 1}]


async def _events(
    dify: FakeDifyService, path: str, body: dict[str, Any], key: str
) -> list[dict[str, Any]]:
    service = DifyService.with_key(dify.url, key)
    try:
        async with service.stream("POST", path, json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            return [e async for e in dify_events(response)]
    finally:
        await service.aclose()


async def test_difys_workflow_stream_is_parsed(dify: FakeDifyService) -> None:
    app = dify.add_app("workflow")
    body = {"inputs": {"a": "가나다라마바사아자차"}, "response_mode": "streaming", "user": "u"}
    events = await _events(dify, "/workflows/run", body, app.key)
    kinds = [e["event"] for e in events]
    assert (
        kinds[0] == "ping" and kinds[1] == "workflow_started" and kinds[-1] == "workflow_finished"
    )
    text = "".join(e["data"]["text"] for e in events if e["event"] == "text_chunk")
    assert text == "요약: 가나다라마바사아자차"


async def test_difys_chat_stream_is_parsed(dify: FakeDifyService) -> None:
    app = dify.add_app("chat")
    body = {"inputs": {}, "query": "안녕하세요", "response_mode": "streaming", "user": "u"}
    events = await _events(dify, "/chat-messages", body, app.key)
    assert (
        "".join(e.get("answer", "") for e in events if e["event"] == "message")
        == "답변: 안녕하세요"
    )
    assert events[-1]["event"] == "message_end" and events[-1]["metadata"]["usage"]


async def test_difys_errors_are_in_difys_shape(dify: FakeDifyService) -> None:
    chat = dify.add_app("chat")
    async with httpx.AsyncClient(base_url=dify.url) as client:
        wrong_route = await client.post(
            "/v1/workflows/run",
            json={"inputs": {}, "user": "u"},
            headers={"Authorization": f"Bearer {chat.key}"},
        )
        bad_key = await client.post(
            "/v1/workflows/run",
            json={"inputs": {}, "user": "u"},
            headers={"Authorization": "Bearer app-nope"},
        )
    assert wrong_route.status_code == 400 and wrong_route.json()["code"] == "not_workflow_app"
    assert bad_key.status_code == 401 and bad_key.json()["code"] == "unauthorized"


def test_frames_are_sse() -> None:
    raw = frame("run.delta", {"text": "가"})
    assert raw == 'event: run.delta\ndata: {"text": "가"}\n\n'.encode()
    assert json.loads(raw.decode().split("data: ")[1]) == {"text": "가"}


def test_callback_url_rules() -> None:
    from llmflow.dify.facade import FacadeService
    from llmflow.errors import InvalidRequest

    service = FacadeService.__new__(FacadeService)
    service.settings = FacadeSettings(callback_hosts=["erp.corp"])
    service.check_callback("https://erp.corp/cb")
    for bad in (None, "http://erp.corp/cb", "https://evil.test/cb", "file:///etc/passwd"):
        with pytest.raises(InvalidRequest):
            service.check_callback(bad)


def test_difys_workflow_run_record_is_read() -> None:
    """``GET /v1/workflows/run/{id}`` as Dify answers it (running, finished, unknown)."""
    from llmflow.dify.client import DifyError
    from llmflow.dify.facade import workflow_run_state

    base: dict[str, Any] = {
        "id": "w",
        "workflow_id": "f",
        "inputs": {},
        "error": None,
        "total_steps": 3,
    }
    assert workflow_run_state({**base, "status": "running", "outputs": None}, "w") is None
    status, result, error = workflow_run_state(
        {**base, "status": "succeeded", "outputs": {"a": 1}, "total_tokens": 9}, "w"
    ) or ("", {}, None)
    assert status == "succeeded" and result["outputs"] == {"a": 1} and error is None
    assert result["usage"]["total_tokens"] == 9
    # Releases before 1.x marshalled the outputs column as its JSON text.
    state = workflow_run_state({**base, "status": "succeeded", "outputs": '{"a": 2}'}, "w")
    assert state is not None and state[1]["outputs"] == {"a": 2}
    stopped = workflow_run_state({**base, "status": "stopped", "outputs": None}, "w")
    assert stopped is not None and stopped[0] == "failed"
    assert stopped[2] == {"code": "dify_run_stopped", "message": "stopped"}
    failed = workflow_run_state({**base, "status": "failed", "error": "boom"}, "w")
    assert failed is not None and failed[2] == {"code": "dify_run_failed", "message": "boom"}
    # An unknown id: 404 today, 200 with every field null in old releases.
    with pytest.raises(DifyError) as exc:
        workflow_run_state({"id": None, "status": None}, "w")
    assert exc.value.status == 404


def test_difys_message_list_is_read() -> None:
    """``GET /v1/messages``: the answer is written when the message ends."""
    from llmflow.dify.client import DifyError
    from llmflow.dify.facade import message_state

    item = {"id": "m", "conversation_id": "c", "query": "q", "answer": "", "status": "normal"}
    assert message_state({"data": [item]}, "m") is None
    done = {**item, "answer": "네", "message_tokens": 3, "answer_tokens": 2}
    state = message_state({"data": [{**item, "id": "other"}, done]}, "m")
    assert state is not None and state[0] == "succeeded"
    assert state[1]["answer"] == "네" and state[1]["usage"]["total_tokens"] == 5
    error = message_state({"data": [{**item, "status": "error", "error": "quota"}]}, "m")
    assert error is not None and error[2] == {"code": "dify_run_failed", "message": "quota"}
    with pytest.raises(DifyError):
        message_state({"data": [], "has_more": False, "limit": 100}, "m")


async def test_an_async_runs_stream_gives_difys_ids_first(dify: FakeDifyService) -> None:
    from llmflow.dify.facade import DifyStreamOutcome

    app = dify.add_app("workflow")
    body = {"inputs": {"a": "가나"}, "response_mode": "streaming", "user": "u"}
    events = await _events(dify, "/workflows/run", body, app.key)
    outcome = DifyStreamOutcome("workflow")
    news = [outcome.feed(e) for e in events]
    first = next(i for i, e in enumerate(events) if e["event"] == "workflow_started")
    assert news[first] is True and not any(news[first + 1 :])  # ids once, at the first event
    assert set(outcome.ids) == {"task_id", "workflow_run_id"}
    assert outcome.finished
    assert outcome.outcome()[:2] == (
        "succeeded",
        {
            "outputs": {"summary": "요약: 가나"},
            "usage": {"total_tokens": 42, "total_steps": 3, "elapsed_s": 0.42},
        },
    )

    chat = dify.add_app("chat")
    body = {"inputs": {}, "query": "안녕", "response_mode": "streaming", "user": "u"}
    said = DifyStreamOutcome("chat")
    for event in await _events(dify, "/chat-messages", body, chat.key):
        said.feed(event)
    assert {"conversation_id", "message_id", "task_id"} <= set(said.ids)
    status, result, _ = said.outcome()
    assert status == "succeeded" and result["answer"] == "답변: 안녕"
    assert result["citations"][0]["document_name"] == "규정.pdf"


def test_a_stream_cut_before_the_end_is_not_a_result() -> None:
    import httpx as _httpx

    from llmflow.dify.facade import DifyStreamOutcome

    started = DifyStreamOutcome("workflow")
    started.feed({"event": "workflow_started", "task_id": "t", "workflow_run_id": "w", "data": {}})
    started.broken(_httpx.ReadError("gone"))
    assert not started.finished  # Dify goes on with the run: its record is read instead
    never = DifyStreamOutcome("workflow")
    never.broken(_httpx.ConnectError("refused"))
    status, _, error = never.outcome()
    assert status == "failed" and error is not None and error["code"] == "dify_unreachable"
    cut = DifyStreamOutcome("chat")
    cut.feed({"event": "message", "message_id": "m", "conversation_id": "c", "answer": "네"})
    assert (cut.outcome()[2] or {}).get("code") == "dify_stream_incomplete"
