"""A local stand-in for Dify 1.14.2's service API (``/v1``): Dify cannot run here.

It replays the contract the ERP facade depends on, read from Dify's source
(``api/controllers/service_api/app/workflow.py``, ``completion.py``, ``wraps.py``,
``error.py``, ``libs/helper.py``):

* auth: ``Authorization: Bearer app-…``; a missing or unknown key is 401 ``{"code":
  "unauthorized", "message": "Access token is invalid", "status": 401}``.
* ``POST /v1/workflows/run`` ``{"inputs" (required object), "response_mode", "user"
  (required)}``; a chat app's key gets 400 ``not_workflow_app``. Blocking: ``{"task_id",
  "workflow_run_id", "data": {"id", "workflow_id", "status", "outputs", "error",
  "elapsed_time", "total_tokens", "total_steps", "created_at", "finished_at"}}``.
* ``POST /v1/chat-messages`` ``{"inputs", "query" (required), "response_mode", "user",
  "conversation_id"}``; a workflow app's key gets 400 ``not_chat_app``. Blocking: ``{"event":
  "message", "task_id", "id", "message_id", "conversation_id", "mode": "chat", "answer",
  "metadata": {"usage", "retriever_resources"}, "created_at"}``.
* streaming: ``text/event-stream`` of ``data: {json}\\n\\n`` frames (``workflow_started``,
  ``node_started``, ``node_finished``, ``text_chunk``, ``workflow_finished``; ``message``,
  ``message_end``) and ``event: ping\\n\\n`` keep-alives; an ``error`` event on failure.
* ``GET /v1/workflows/run/{id}``: ``{"id", "workflow_id", "status", "inputs", "outputs",
  "error", "total_steps", "total_tokens", "created_at", "finished_at", "elapsed_time"}``;
  ``status`` ``running`` until the run ends (``succeeded``, ``failed``, ``stopped``), a run of
  another app or an unknown id 404 ``not_found``; a chat app's key 400 ``not_workflow_app``.
* ``GET /v1/messages?conversation_id=…&user=…&limit=…`` (``message.py``, ``MessageListItem``):
  ``{"limit", "has_more", "data": [{"id", "conversation_id", "parent_message_id", "inputs",
  "query", "answer", "status", "error", "retriever_resources", "message_tokens",
  "answer_tokens", "provider_response_latency", "created_at", …}]}``, oldest first; the
  answer is written when the message ends (empty while it is generated); a conversation of
  another user 404 ``not_found`` "Conversation Not Exists."; a workflow app's key 400
  ``not_chat_app``.
* Dify keeps running a started run when the client's stream goes away: an app with
  ``stall_s`` finishes its runs in the background after that long, whoever still listens.
* errors in Dify's shape ``{"code", "message", "status"}``.

The apps are scripted: a workflow app returns ``{"summary": "요약: <inputs>"}`` (echoing the
input text, so tests see what Dify received), a chat app answers ``"답변: <query>"``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from local_server import LocalServer
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class ScriptedApp:
    key: str
    mode: str  # "workflow" | "chat"
    name: str = "app"
    delay_s: float = 0.0
    fail: bool = False
    stall_s: float = 0.0
    """Runs stay ``running`` this long after they start (the stream pauses after its first
    event); they end in the background even if the caller has gone."""


_CITATION: dict[str, Any] = {
    "id": "r1",
    "position": 1,
    "dataset_id": "d1",
    "dataset_name": "handbook",
    "document_id": "doc1",
    "document_name": "규정.pdf",
    "data_source_type": "upload_file",
    "segment_id": "s1",
    "score": 0.91,
    "content": "제12조(연차 휴가)",
}


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "status": status}, status_code=status)


class FakeDifyService(LocalServer):
    """Dify's service API for scripted apps; ``received`` logs every run request body."""

    def __init__(self) -> None:
        super().__init__()
        self.apps: dict[str, ScriptedApp] = {}
        self.received: list[dict[str, Any]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.run_apps: dict[str, str] = {}
        self.messages: dict[str, dict[str, Any]] = {}
        self.conversations: dict[str, tuple[str, str]] = {}  # id → (app key, user)
        self.detail_reads = 0
        self.message_reads = 0
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/v1/workflows/run", self.workflow_run, methods=["POST"]),
                Route("/v1/workflows/run/{run_id}", self.workflow_detail, methods=["GET"]),
                Route("/v1/chat-messages", self.chat, methods=["POST"]),
                Route("/v1/messages", self.message_list, methods=["GET"]),
            ]
        )

    def add_app(self, mode: str, name: str = "app", **kw: Any) -> ScriptedApp:
        app = ScriptedApp(key="app-" + uuid.uuid4().hex[:24], mode=mode, name=name, **kw)
        self.apps[app.key] = app
        return app

    def _app(self, request: Request) -> ScriptedApp | JSONResponse:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(
                401,
                "unauthorized",
                "Authorization header must be provided and start with 'Bearer'",
            )
        app = self.apps.get(token.strip())
        if app is None:
            return _error(401, "unauthorized", "Access token is invalid")
        return app

    async def _body(self, request: Request) -> dict[str, Any] | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(
                400,
                "invalid_param",
                "The browser (or proxy) sent a request that this server could not understand.",
            )
        if not isinstance(body, dict):
            return _error(400, "invalid_param", "body must be an object")
        if not isinstance(body.get("user"), str) or not body["user"]:
            return _error(400, "invalid_param", "user is required")
        mode = body.get("response_mode", "blocking")
        if mode not in (None, "blocking", "streaming"):
            return _error(400, "invalid_param", "response_mode: blocking or streaming")
        return body

    # ------------------------------------------------------------------ workflow

    async def workflow_run(self, request: Request) -> Response:
        app = self._app(request)
        if isinstance(app, JSONResponse):
            return app
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        if app.mode != "workflow":
            return _error(
                400,
                "not_workflow_app",
                "Please check if your app mode matches the right API route.",
            )
        if not isinstance(body.get("inputs"), dict):
            return _error(400, "invalid_param", "inputs is required and must be an object")
        self.received.append({"path": "/v1/workflows/run", "app": app.name, **body})
        if app.delay_s:
            await asyncio.sleep(app.delay_s)
        task_id = str(uuid.uuid4())
        run, outputs = self._new_workflow_run(app, body["inputs"])
        run_id = run["id"]
        if app.stall_s:
            self._finish_later(lambda: self.finish_workflow_run(run_id), app.stall_s)
        else:
            self.finish_workflow_run(run_id)
        if body.get("response_mode") != "streaming":
            while run["status"] == "running":
                await asyncio.sleep(0.02)
        if body.get("response_mode") == "streaming":
            return StreamingResponse(
                self._workflow_stream(run, task_id, outputs), media_type="text/event-stream"
            )
        data = {
            k: run[k]
            for k in (
                "id",
                "workflow_id",
                "status",
                "outputs",
                "error",
                "elapsed_time",
                "total_tokens",
                "total_steps",
                "created_at",
                "finished_at",
            )
        }
        return JSONResponse({"task_id": task_id, "workflow_run_id": run_id, "data": data})

    async def _workflow_stream(
        self, run: dict[str, Any], task_id: str, outputs: dict[str, Any]
    ) -> AsyncIterator[bytes]:
        def ev(event: str, data: dict[str, Any]) -> bytes:
            frame = {"event": event, "task_id": task_id, "workflow_run_id": run["id"], "data": data}
            return f"data: {json.dumps(frame, ensure_ascii=False)}\n\n".encode()

        yield b"event: ping\n\n"
        yield ev(
            "workflow_started",
            {"id": run["id"], "workflow_id": run["workflow_id"], "created_at": run["created_at"]},
        )
        while run["status"] == "running":  # a stalled app: the run goes on, the stream waits
            await asyncio.sleep(0.02)
        yield ev(
            "node_started",
            {"id": "n1", "node_id": "llm", "node_type": "llm", "title": "LLM", "index": 1},
        )
        text = outputs["summary"]
        for i in range(0, len(text), 7):
            yield ev("text_chunk", {"text": text[i : i + 7], "from_variable_selector": ["llm"]})
        yield ev(
            "node_finished",
            {
                "id": "n1",
                "node_id": "llm",
                "node_type": "llm",
                "title": "LLM",
                "status": run["status"],
            },
        )
        yield ev(
            "workflow_finished",
            {
                k: run[k]
                for k in (
                    "id",
                    "workflow_id",
                    "status",
                    "outputs",
                    "error",
                    "elapsed_time",
                    "total_tokens",
                    "total_steps",
                    "created_at",
                    "finished_at",
                )
            },
        )

    def _new_workflow_run(
        self, app: ScriptedApp, inputs: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        run_id = str(uuid.uuid4())
        text = " ".join(str(v) for v in inputs.values())
        outputs = {"summary": f"요약: {text}"}
        run: dict[str, Any] = {
            "id": run_id,
            "workflow_id": str(uuid.uuid5(uuid.NAMESPACE_URL, app.key)),
            "status": "running",
            "inputs": inputs,
            "outputs": None,
            "error": None,
            "total_steps": 0,
            "total_tokens": 0,
            "created_at": int(time.time()),
            "finished_at": None,
            "elapsed_time": 0.0,
        }
        self.runs[run_id] = run
        self.run_apps[run_id] = app.key
        return run, outputs

    def _finish_later(self, finish: Any, after_s: float) -> None:
        async def later() -> None:
            await asyncio.sleep(after_s)
            finish()

        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def start_workflow_run(self, app: ScriptedApp, inputs: dict[str, Any]) -> str:
        """A run Dify accepted from a caller that went away: ``running`` until
        :meth:`finish_workflow_run` (a test's handle on Dify's background worker)."""
        run, _ = self._new_workflow_run(app, inputs)
        return str(run["id"])

    def finish_workflow_run(self, run_id: str) -> None:
        """End a running workflow run as its app is scripted (succeeded, or failed)."""
        run = self.runs[run_id]
        app = self.apps[self.run_apps[run_id]]
        text = " ".join(str(v) for v in run["inputs"].values())
        run.update(
            {
                "status": "failed" if app.fail else "succeeded",
                "outputs": None if app.fail else {"summary": f"요약: {text}"},
                "error": "Node LLM run failed: model quota exceeded" if app.fail else None,
                "total_steps": 3,
                "total_tokens": 42,
                "finished_at": int(time.time()),
                "elapsed_time": 0.42,
            }
        )

    async def workflow_detail(self, request: Request) -> Response:
        app = self._app(request)
        if isinstance(app, JSONResponse):
            return app
        if app.mode != "workflow":
            return _error(
                400,
                "not_workflow_app",
                "Please check if your app mode matches the right API route.",
            )
        self.detail_reads += 1
        run_id = request.path_params["run_id"]
        run = self.runs.get(run_id)
        if run is None or self.run_apps.get(run_id) != app.key:
            return _error(404, "not_found", "Workflow run not found.")
        return JSONResponse(run)

    # ------------------------------------------------------------------ chat

    async def chat(self, request: Request) -> Response:
        app = self._app(request)
        if isinstance(app, JSONResponse):
            return app
        body = await self._body(request)
        if isinstance(body, JSONResponse):
            return body
        if app.mode != "chat":
            return _error(
                400, "not_chat_app", "Please check if your app mode matches the right API route."
            )
        if not isinstance(body.get("query"), str):
            return _error(400, "invalid_param", "query is required")
        self.received.append({"path": "/v1/chat-messages", "app": app.name, **body})
        conversation = body.get("conversation_id") or str(uuid.uuid4())
        message, task = str(uuid.uuid4()), str(uuid.uuid4())
        answer = f"답변: {body['query']}"
        metadata = {
            "usage": {
                "prompt_tokens": 20,
                "completion_tokens": 12,
                "total_tokens": 32,
                "currency": "USD",
                "latency": 0.3,
            },
            "retriever_resources": [
                {
                    "position": 1,
                    "dataset_name": "handbook",
                    "document_name": "규정.pdf",
                    "segment_id": "s1",
                    "score": 0.91,
                    "content": "제12조(연차 휴가)",
                }
            ],
        }
        self.conversations.setdefault(conversation, (app.key, body["user"]))
        stored = self._new_message(conversation, message, body)
        if app.stall_s:
            self._finish_later(lambda: self.finish_chat_message(message), app.stall_s)
        else:
            self.finish_chat_message(message)
        if body.get("response_mode") == "streaming":

            async def stream() -> AsyncIterator[bytes]:
                yield b"event: ping\n\n"
                for i in range(0, len(answer), 5):
                    if i and not stored["answer"]:  # a stalled app: generation goes on
                        while not stored["answer"]:
                            await asyncio.sleep(0.02)
                    frame = {
                        "event": "message",
                        "task_id": task,
                        "id": message,
                        "message_id": message,
                        "conversation_id": conversation,
                        "answer": answer[i : i + 5],
                        "created_at": int(time.time()),
                    }
                    yield f"data: {json.dumps(frame, ensure_ascii=False)}\n\n".encode()
                end = {
                    "event": "message_end",
                    "task_id": task,
                    "id": message,
                    "message_id": message,
                    "conversation_id": conversation,
                    "metadata": metadata,
                }
                yield f"data: {json.dumps(end, ensure_ascii=False)}\n\n".encode()

            return StreamingResponse(stream(), media_type="text/event-stream")
        while not stored["answer"]:
            await asyncio.sleep(0.02)
        return JSONResponse(
            {
                "event": "message",
                "task_id": task,
                "id": message,
                "message_id": message,
                "conversation_id": conversation,
                "mode": "chat",
                "answer": answer,
                "metadata": metadata,
                "created_at": int(time.time()),
            }
        )

    def _new_message(
        self, conversation: str, message_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": message_id,
            "conversation_id": conversation,
            "parent_message_id": None,
            "inputs": body.get("inputs") or {},
            "query": body["query"],
            "answer": "",  # Dify writes the answer when the message ends
            "feedback": None,
            "retriever_resources": [],
            "agent_thoughts": [],
            "message_files": [],
            "message_tokens": 0,
            "answer_tokens": 0,
            "provider_response_latency": 0,
            "status": "normal",
            "error": None,
            "created_at": int(time.time()),
        }
        self.messages[message_id] = message
        return message

    def start_chat_message(self, app: ScriptedApp, query: str, user: str) -> tuple[str, str]:
        """A message Dify accepted from a caller that went away: ``(conversation_id,
        message_id)``; its answer is empty until :meth:`finish_chat_message`."""
        conversation, message = str(uuid.uuid4()), str(uuid.uuid4())
        self.conversations[conversation] = (app.key, user)
        self._new_message(conversation, message, {"query": query, "inputs": {}})
        return conversation, message

    def finish_chat_message(self, message_id: str) -> None:
        """End a message as its app is scripted (``답변: <query>``, or an error)."""
        message = self.messages[message_id]
        app = self.apps[self.conversations[message["conversation_id"]][0]]
        if app.fail:
            message.update({"status": "error", "error": "model quota exceeded"})
            return
        message.update(
            {
                "answer": f"답변: {message['query']}",
                "retriever_resources": [{**_CITATION, "message_id": message_id}],
                "message_tokens": 20,
                "answer_tokens": 12,
                "provider_response_latency": 0.3,
            }
        )

    async def message_list(self, request: Request) -> Response:
        app = self._app(request)
        if isinstance(app, JSONResponse):
            return app
        if app.mode != "chat":
            return _error(
                400, "not_chat_app", "Please check if your app mode matches the right API route."
            )
        self.message_reads += 1
        conversation = request.query_params.get("conversation_id", "")
        user = request.query_params.get("user", "")
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            return _error(400, "invalid_param", "limit must be an integer")
        if not 1 <= limit <= 100:
            return _error(400, "invalid_param", "limit must be between 1 and 100")
        if self.conversations.get(conversation) != (app.key, user):
            return _error(404, "not_found", "Conversation Not Exists.")
        items = [m for m in self.messages.values() if m["conversation_id"] == conversation]
        items.sort(key=lambda m: m["created_at"])
        page = items[-limit:]  # the newest ``limit``, oldest first
        return JSONResponse({"limit": limit, "has_more": len(items) > limit, "data": page})
