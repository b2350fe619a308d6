"""A fast, scripted OpenAI-compatible upstream (vLLM's API surface) on a real local port.

Used by the gateway's tests and by ``llmflow bench gateway``: it answers instantly and
deterministically, so the gateway's own behaviour and overhead can be isolated. The chat
answer echoes the last user message (pseudonyms and all), streams word by word, reports
usage unless told not to, and records what it received. Behaviour switches live on
``ScriptedUpstream`` (``fail_with``, ``report_usage``, ``flat_errors``, ``delay_s``).
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class ScriptedUpstream:
    name: str = "upstream"
    fail_with: int | None = None
    report_usage: bool = True
    flat_errors: bool = False
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    record: bool = True
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    adapters: set[str] = field(default_factory=set)
    url: str = ""

    # -- helpers ----------------------------------------------------------------------
    def _error(self, status: int, message: str) -> JSONResponse:
        if self.flat_errors:  # vLLM before its OpenAI-shaped errors
            body: dict[str, Any] = {"object": "error", "message": message, "code": status}
        else:
            body = {"error": {"message": message, "type": "BadRequestError", "code": status}}
        return JSONResponse(body, status_code=status)

    @staticmethod
    def _answer(body: dict[str, Any]) -> str:
        if "messages" in body:
            user = [m for m in body["messages"] if m.get("role") == "user"]
            content = user[-1]["content"] if user else ""
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return f"echo: {content}"
        prompt = body.get("prompt", "")
        return f"echo: {prompt if isinstance(prompt, str) else ' '.join(prompt)}"

    # -- endpoints --------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        body = await request.json()
        if self.record:
            self.requests.append((request.url.path, body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail_with is not None:
            return self._error(self.fail_with, f"{self.name} is failing on purpose")
        model = body.get("model", "")
        if model.startswith("missing"):
            return self._error(404, f"The model `{model}` does not exist.")
        if "lora" in model and model not in self.adapters:
            return self._error(404, f"adapter {model} is not loaded")
        chat = request.url.path.endswith("chat/completions")
        answer = self._answer(body)
        words = answer.split(" ")
        prompt_tokens = len(json.dumps(body.get("messages", body.get("prompt", ""))).split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        }
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            return StreamingResponse(
                self._stream(model, words, chat, usage if include else None),
                media_type="text/event-stream",
            )
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": answer}}
            if chat
            else {"index": 0, "text": answer}
        )
        choice["finish_reason"] = "stop"
        out: dict[str, Any] = {
            "id": "cmpl-scripted",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
        }
        if self.report_usage:
            out["usage"] = usage
        return JSONResponse(out)

    async def _stream(
        self, model: str, words: list[str], chat: bool, usage: dict[str, Any] | None
    ) -> AsyncIterator[bytes]:
        for i, word in enumerate(words):
            piece = word if i == 0 else " " + word
            last = i == len(words) - 1
            choice: dict[str, Any] = (
                {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            )
            choice["finish_reason"] = "stop" if last else None
            event: dict[str, Any] = {"id": "cmpl-scripted", "object": "chat.completion.chunk",
                                     "model": model, "choices": [choice]}  # fmt: skip
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
            await asyncio.sleep(self.chunk_delay_s)
        if usage is not None and self.report_usage:
            event = {"id": "cmpl-scripted", "object": "chat.completion.chunk", "model": model,
                     "choices": [], "usage": usage}  # fmt: skip
            yield b"data: " + json.dumps(event).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def embeddings(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [len(t) / 100.0, 0.5, 0.25]}
            for i, t in enumerate(inputs)
        ]
        n = sum(len(t.split()) for t in inputs)
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": n, "total_tokens": n}})  # fmt: skip

    async def rerank(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body))
        query = set(body["query"].split())
        scored = [
            {"index": i, "relevance_score": len(query & set(d.split())) / (len(query) or 1)}
            for i, d in enumerate(body["documents"])
        ]
        scored.sort(key=lambda r: -r["relevance_score"])
        return JSONResponse({"results": scored[: body.get("top_n") or len(scored)]})

    async def tei_rerank(self, request: Request) -> Response:
        """TEI's native rerank: ``{query, texts}`` → ``[{index, score}]``, best first."""
        body = await request.json()
        self.requests.append((request.url.path, body))
        query = set(body["query"].split())
        scored = [
            {"index": i, "score": len(query & set(t.split())) / (len(query) or 1)}
            for i, t in enumerate(body["texts"])
        ]
        return JSONResponse(sorted(scored, key=lambda r: -r["score"]))

    async def load_lora(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body))
        if body["lora_name"] in self.adapters:
            return self._error(400, f"The lora adapter '{body['lora_name']}' has already been "
                               "loaded.")  # fmt: skip
        self.adapters.add(body["lora_name"])
        return Response(f"Success: LoRA adapter '{body['lora_name']}' added successfully.")

    async def tokenize(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append((request.url.path, body))
        text = body.get("prompt") or json.dumps(body.get("messages", ""))
        return JSONResponse({"count": len(text.split()), "max_model_len": 4096, "tokens": []})

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.completions, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
                Route("/v1/rerank", self.rerank, methods=["POST"]),
                Route("/rerank", self.tei_rerank, methods=["POST"]),
                Route("/v1/load_lora_adapter", self.load_lora, methods=["POST"]),
                Route("/tokenize", self.tokenize, methods=["POST"]),
                Route("/health", self.health),
            ]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(upstream: ScriptedUpstream) -> Iterator[ScriptedUpstream]:
    """Run ``upstream`` on a free local port in a thread until the block ends."""
    port = free_port()
    config = uvicorn.Config(upstream.app(), host="127.0.0.1", port=port, log_level="error",
                            lifespan="off", backlog=4096)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("scripted upstream did not start")
        time.sleep(0.01)
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        server.should_exit = True
        thread.join(timeout=5)


def main() -> None:
    """``python -m llmflow.gateway.scripted --port P``: serve in the foreground (benchmarks)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    args = parser.parse_args()
    upstream = ScriptedUpstream("bench", chunk_delay_s=args.chunk_delay, record=False)
    uvicorn.run(upstream.app(), host="127.0.0.1", port=args.port, log_level="error",
                lifespan="off", backlog=4096)  # fmt: skip


if __name__ == "__main__":
    main()
