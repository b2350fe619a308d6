"""The agent's LLM: OpenAI chat completions with function calling, through the LLM gateway.

OpenAI's tool-calling contract, as vLLM and the gateway speak it: the request carries
``tools`` (``[{"type": "function", "function": {name, description, parameters}}]``) and
``tool_choice``; the assistant answers either with ``content`` or with ``tool_calls``
(``[{"id", "type": "function", "function": {"name", "arguments": "<JSON string>"}}]``,
``finish_reason: "tool_calls"``); each call is answered with a ``{"role": "tool",
"tool_call_id", "content"}`` message before the next request.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from llmflow.agents.config import AgentSettings
from llmflow.errors import LLMFlowError, ServiceUnavailable


class AgentLLMError(LLMFlowError):
    """The agent's LLM could not be reached or refused the request."""

    status = 502
    code = "agent_llm_error"
    title = "The agent's language model failed"


@dataclass(slots=True)
class ChatTurn:
    """One assistant message (content and/or tool calls) and the tokens it cost."""

    message: dict[str, Any]
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        calls = self.message.get("tool_calls")
        return calls if isinstance(calls, list) else []


class ChatModel(Protocol):
    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        classification: str,
    ) -> ChatTurn:
        """One chat completion; ``tools=None`` asks for a final answer."""


def normalise_assistant(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message in the shape the next request must echo back: content a string
    or None, every tool call with an id, type ``function`` and string ``arguments`` (some
    servers omit ids or send arguments as an object)."""
    out: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if out["content"] is not None and not isinstance(out["content"], str):
        out["content"] = json.dumps(out["content"], ensure_ascii=False)
    calls = []
    for call in message.get("tool_calls") or []:
        if not isinstance(call, dict):
            continue
        function = call.get("function") or {}
        name = function.get("name")
        if not isinstance(name, str) or not name:
            continue
        arguments = function.get("arguments", "")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments, ensure_ascii=False)
        calls.append(
            {
                "id": str(call.get("id") or "call_" + uuid.uuid4().hex[:24]),
                "type": "function",
                "function": {"name": name, "arguments": arguments},
            }
        )
    if calls:
        out["tool_calls"] = calls
    return out


class OpenAIChatModel:
    """Chat completions over HTTP against ``agents.llm_base_url`` (the gateway's /v1)."""

    def __init__(self, settings: AgentSettings, transport: httpx.AsyncBaseTransport | None = None):
        if not settings.llm_base_url:
            raise ServiceUnavailable(
                "the research agent has no LLM: set agents.llm_base_url "
                "(LLMFLOW_AGENTS__LLM_BASE_URL) to the gateway's /v1 URL"
            )
        self.settings = settings
        headers = {}
        if settings.llm_api_key is not None:
            headers["Authorization"] = f"Bearer {settings.llm_api_key.get_secret_value()}"
        self._client = httpx.AsyncClient(
            base_url=settings.llm_base_url.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(settings.timeout_s, connect=5.0),
            transport=transport,
        )

    async def complete(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        *,
        classification: str,
    ) -> ChatTurn:
        body: dict[str, Any] = {
            "model": self.settings.llm_model,
            "messages": messages,
            "temperature": self.settings.temperature,
        }
        if self.settings.max_tokens is not None:
            body["max_tokens"] = self.settings.max_tokens
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        try:
            response = await self._client.post(
                "chat/completions", json=body, headers={"X-Data-Classification": classification}
            )
        except httpx.HTTPError as exc:
            raise AgentLLMError(
                f"the agent's LLM at {self.settings.llm_base_url} is unreachable: {exc!r}"
            ) from exc
        if response.status_code >= 400:
            raise AgentLLMError(
                f"the agent's LLM ({self.settings.llm_model}) answered "
                f"{response.status_code}: {_error_message(response)}"
            )
        try:
            payload = response.json()
            message = payload["choices"][0]["message"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AgentLLMError("the agent's LLM answered without a chat message") from exc
        usage = payload.get("usage") or {}
        return ChatTurn(
            normalise_assistant(message),
            {
                "prompt_tokens": int(usage.get("prompt_tokens") or 0),
                "completion_tokens": int(usage.get("completion_tokens") or 0),
            },
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def _error_message(response: httpx.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300]
    inner = payload.get("error", payload) if isinstance(payload, dict) else payload
    if isinstance(inner, dict):
        return str(inner.get("message") or inner)[:300]
    return str(inner)[:300]
