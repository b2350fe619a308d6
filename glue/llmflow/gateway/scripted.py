"""A fast, scripted OpenAI-compatible upstream (vLLM's API surface) on a real local port.

Used by the gateway's tests and by ``llmflow bench gateway``: it answers instantly and
deterministically, so the gateway's own behaviour and overhead can be isolated. The chat
answer echoes the last user message (pseudonyms and all), streams word by word, reports
usage unless told not to, and records what it received. Behaviour switches live on
``ScriptedUpstream`` (``fail_with``, ``report_usage``, ``flat_errors``, ``delay_s``).

Tool calling (OpenAI's function-calling contract, as vLLM serves it): with ``chat_script``
set, a chat request's assistant message comes from that function instead of the echo —
``{"content": ...}`` or ``{"tool_calls": [{"id", "type": "function", "function": {"name",
"arguments": "<JSON string>"}}]}`` — answered with ``finish_reason`` ``tool_calls`` or ``stop``
and streamed as OpenAI streams it (tool-call deltas by ``index``, arguments in pieces). The
request is checked as OpenAI checks it: ``tools`` must be function specs, and every assistant
``tool_calls`` must be followed by one ``tool`` message per call id before anything else
(400 otherwise), so a client that breaks the contract fails here as it would there.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
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
    chat_script: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """Request body → the assistant message (``content`` and/or ``tool_calls``)."""

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
        if chat and self.chat_script is not None:
            problem = tool_contract_problem(body)
            if problem:
                return self._error(400, problem)
            return self._scripted_chat(model, body, self.chat_script(body))
        out = self.answer_document(body, chat)
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            words = self._answer(body).split(" ")
            return StreamingResponse(
                self._stream(model, words, chat, out.get("usage") if include else None),
                media_type="text/event-stream",
            )
        return JSONResponse(out)

    def answer_document(self, body: dict[str, Any], chat: bool) -> dict[str, Any]:
        """The non-streamed answer to ``body`` (its usage also goes with a stream)."""
        answer = self._answer(body)
        words = answer.split(" ")
        prompt_tokens = len(json.dumps(body.get("messages", body.get("prompt", ""))).split())
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
            "model": body.get("model", ""),
            "choices": [choice],
        }
        if self.report_usage:
            out["usage"] = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            }
        return out

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

    def _scripted_chat(self, model: str, body: dict[str, Any], message: dict[str, Any]) -> Response:
        content = message.get("content")
        calls = message.get("tool_calls") or []
        finish = "tool_calls" if calls else "stop"
        completion = len(str(content or "").split()) + sum(
            len(c["function"]["arguments"].split()) for c in calls
        )
        prompt = len(json.dumps(body.get("messages", [])).split())
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            return StreamingResponse(
                self._stream_message(model, content, calls, usage if include else None),
                media_type="text/event-stream",
            )
        out: dict[str, Any] = {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content,
                                **({"tool_calls": calls} if calls else {})},
                    "finish_reason": finish,
                }
            ],
        }  # fmt: skip
        if self.report_usage:
            out["usage"] = usage
        return JSONResponse(out)

    async def _stream_message(
        self,
        model: str,
        content: str | None,
        calls: list[dict[str, Any]],
        usage: dict[str, Any] | None,
    ) -> AsyncIterator[bytes]:
        """OpenAI's streamed assistant message: role first, then content pieces, then per tool
        call one delta with its id and name and further deltas with argument pieces."""

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            event = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": model,
                     "choices": [choice]}  # fmt: skip
            return b"data: " + json.dumps(event).encode() + b"\n\n"

        yield chunk({"role": "assistant", "content": ""})
        for i, word in enumerate((content or "").split(" ") if content else []):
            yield chunk({"content": word if i == 0 else " " + word})
        for index, call in enumerate(calls):
            head = {"index": index, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}  # fmt: skip
            yield chunk({"tool_calls": [head]})
            arguments = call["function"]["arguments"]
            for start in range(0, len(arguments), 8):
                piece = {"index": index, "function": {"arguments": arguments[start : start + 8]}}
                yield chunk({"tool_calls": [piece]})
        yield chunk({}, "tool_calls" if calls else "stop")
        if usage is not None and self.report_usage:
            event = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "model": model,
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


def tool_contract_problem(body: dict[str, Any]) -> str | None:
    """What OpenAI would refuse in a chat request's tool use, or None.

    ``tool_choice`` needs ``tools``; ``tools`` entries must be ``{"type": "function",
    "function": {"name", "parameters"}}``
    with an object schema; an assistant message with ``tool_calls`` must be followed by
    ``tool`` messages answering each of its call ids, and a ``tool`` message must answer a
    call of the assistant message before it.
    """
    if "tool_choice" in body and not body.get("tools"):  # vLLM and OpenAI both refuse it
        return "When using `tool_choice`, `tools` must be set."
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if tool.get("type") != "function" or not isinstance(function, dict):
            return "tools: every tool must be {'type': 'function', 'function': {...}}"
        if not function.get("name"):
            return "tools: a function needs a name"
        params = function.get("parameters", {"type": "object"})
        if not isinstance(params, dict) or params.get("type") != "object":
            return f"tools[{function.get('name')}]: parameters must be an object schema"
    open_calls: set[str] = set()
    for message in body.get("messages") or []:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in open_calls:
                return f"a 'tool' message answers no preceding tool call ({call_id!r})"
            open_calls.discard(call_id)
            continue
        if open_calls:
            return (
                "an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing {sorted(open_calls)}"
            )
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                arguments = call.get("function", {}).get("arguments")
                if not isinstance(arguments, str):
                    return "tool_calls[].function.arguments must be a JSON string"
                open_calls.add(call.get("id"))
    if open_calls:
        return f"tool calls {sorted(open_calls)} have no tool message"
    return None


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
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument(
        "--raw",
        action="store_true",
        help="chat and completions only, on a bare asyncio protocol (a fraction of the CPU)",
    )
    args = parser.parse_args()
    upstream = ScriptedUpstream(
        "bench", delay_s=args.delay, chunk_delay_s=args.chunk_delay, record=False
    )
    if args.raw:
        import uvloop

        from llmflow.gateway.raw_upstream import serve_forever

        uvloop.run(serve_forever(upstream, args.port))
        return
    uvicorn.run(upstream.app(), host="127.0.0.1", port=args.port, log_level="error",
                lifespan="off", backlog=4096)  # fmt: skip


if __name__ == "__main__":
    main()
