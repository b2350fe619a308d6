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
