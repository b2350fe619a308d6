"""Dify conversation logs and annotations as training examples.

Shapes of Dify 1.14.2 (``llmflow.dify.DIFY_VERSION``), as its API returns them:

* console ``GET /console/api/apps/{app_id}/chat-conversations?page=&limit=`` →
  ``{page, limit, total, has_more, data: [{id, name, summary, message_count, ...}]}``;
* console ``GET /console/api/apps/{app_id}/chat-messages?conversation_id=&first_id=&limit=``
  → ``{limit, has_more, data: [message_detail]}``; a message carries ``id``,
  ``conversation_id``, ``query``, ``answer``, ``status`` (``normal`` / ``error``), ``error``,
  ``created_at`` (epoch seconds), ``feedbacks: [{rating: like|dislike, from_source}]`` and
  ``annotation: {id, question, content}`` (an operator's corrected answer) or null;
* console ``GET /console/api/apps/{app_id}/annotations?page=&limit=`` and service
  ``GET /v1/apps/annotations`` → ``{data: [{id, question, answer, hit_count, created_at}],
  has_more, limit, total, page}``;
* service ``GET /v1/conversations?user=&last_id=&limit=`` → ``{limit, has_more, data: [{id,
  name, inputs, status, introduction, created_at, updated_at}]}``;
* service ``GET /v1/messages?conversation_id=&user=&first_id=&limit=`` → ``{limit, has_more,
  data: [{id, conversation_id, parent_message_id, inputs, query, answer, feedback: {rating} |
  null, status, error, created_at, ...}]}``. Both message lists page *backwards*: the first
  page holds the newest messages, ``first_id`` = the oldest id seen asks for older ones.

An operator's annotation replaces the model's answer (it is the corrected one); a message
rated ``dislike`` without an annotation, or one that ended in error, is rejected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from llmflow.dify.client import DifyConsole, DifyService
from llmflow.training.datasets.errors import DatasetFormatError
from llmflow.training.datasets.examples import Example, Turn
from llmflow.training.datasets.readers import Rejection, SourceRows

DifyShape = Literal["messages", "annotations"]
Grouping = Literal["conversation", "message"]


def _items(document: Any) -> list[dict[str, Any]]:
    """Items of one list response, a list of responses, or a bare list of items."""
    pages = document if isinstance(document, list) else [document]
    items: list[dict[str, Any]] = []
    for page in pages:
        if isinstance(page, Mapping) and isinstance(page.get("data"), list):
            items += [i for i in page["data"] if isinstance(i, dict)]
        elif isinstance(page, Mapping):
            items.append(dict(page))
        else:
            raise DatasetFormatError("a Dify export must hold JSON objects")
    return items


def detect_shape(items: list[dict[str, Any]]) -> DifyShape:
    if not items:
        raise DatasetFormatError("the Dify export holds no messages or annotations")
    first = items[0]
    if "query" in first and "answer" in first:
        return "messages"
    if "question" in first and ("answer" in first or "content" in first):
        return "annotations"
    raise DatasetFormatError(
        "not a Dify export: items have neither query/answer (messages) nor question/answer "
        f"(annotations); keys: {', '.join(sorted(first))}"
    )


def _disliked(message: Mapping[str, Any]) -> bool:
    ratings = [f.get("rating") for f in message.get("feedbacks") or [] if isinstance(f, dict)]
    feedback = message.get("feedback")
    if isinstance(feedback, dict):
        ratings.append(feedback.get("rating"))
    return "dislike" in ratings


def _answer(message: Mapping[str, Any]) -> tuple[str | None, Rejection | None]:
    ref = f"message {message.get('id', '?')}"
    annotation = message.get("annotation")
    content = annotation.get("content") if isinstance(annotation, dict) else None
    if isinstance(content, str) and content.strip():
        return content, None
    if message.get("status") == "error" or message.get("error"):
        return None, Rejection(ref, "dify_error", str(message.get("error") or "status error")[:200])
    if _disliked(message):
        return None, Rejection(ref, "disliked", "rated dislike and not annotated")
    answer = message.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None, Rejection(ref, "empty_output", "no answer")
    return answer, None


def examples_from_messages(
    items: list[dict[str, Any]], grouping: Grouping = "conversation"
) -> SourceRows:
    """Messages of the console or service API; ``conversation`` grouping makes one
    multi-turn example per conversation (sharegpt), ``message`` one example per message.

    In a conversation, a rejected message ends the example before it: the turns after it
    answered a history the training data would no longer show.
    """
    out = SourceRows(total=len(items))
    ordered = sorted(items, key=lambda m: (str(m.get("conversation_id")), m.get("created_at") or 0))
    groups: dict[str, list[dict[str, Any]]] = {}
    for message in ordered:
        key = (
            str(message.get("conversation_id")) if grouping == "conversation" else str(id(message))
        )
        groups.setdefault(key, []).append(message)
    for conversation_id, messages in groups.items():
        turns: list[Turn] = []
        for message in messages:
            query = message.get("query")
            answer, rejection = _answer(message)
            if not isinstance(query, str) or not query.strip():
                rejection = Rejection(f"message {message.get('id', '?')}", "empty_instruction")
            if rejection is not None:
                out.rejected.append(rejection)
                break
            assert isinstance(query, str) and answer is not None
            turns += [Turn("user", query), Turn("assistant", answer)]
        if turns:
            ref = (
                f"conversation {conversation_id}"
                if grouping == "conversation"
                else f"message {messages[0].get('id', '?')}"
            )
            out.examples.append(Example(tuple(turns), ref=ref))
    return out


def examples_from_annotations(items: list[dict[str, Any]]) -> SourceRows:
    """Annotations (question → operator's answer): one single-turn example each."""
    out = SourceRows(total=len(items))
    for item in items:
        ref = f"annotation {item.get('id', '?')}"
        question = item.get("question")
        answer = item.get("answer", item.get("content"))
        if not isinstance(question, str) or not question.strip():
            out.rejected.append(Rejection(ref, "empty_instruction"))
        elif not isinstance(answer, str) or not answer.strip():
            out.rejected.append(Rejection(ref, "empty_output"))
        else:
            out.examples.append(
                Example((Turn("user", question), Turn("assistant", answer)), ref=ref)
            )
    return out


def examples_from_export(document: Any, grouping: Grouping = "conversation") -> SourceRows:
    """Examples of a saved Dify response (one page, a list of pages, or a list of items)."""
    items = _items(document)
    if detect_shape(items) == "annotations":
        return examples_from_annotations(items)
    return examples_from_messages(items, grouping)


@dataclass
class DifyLogFetcher:
    """Pages through Dify's list endpoints and returns the items in the shapes above."""

    page_limit: int = 100
    progress: Callable[[int], None] | None = None

    def _tick(self, n: int) -> None:
        if self.progress is not None:
            self.progress(n)

    async def _messages(
        self, api: DifyConsole | DifyService, path: str, params: dict[str, Any]
    ) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        first_id: str | None = None
        while True:
            query = {**params, "limit": self.page_limit}
            if first_id:
                query["first_id"] = first_id
            page = await api.request("GET", path, params=query)
            data = [m for m in page.get("data") or [] if isinstance(m, dict)]
            items += data
            self._tick(len(data))
            if not page.get("has_more") or not data:
                return items
            oldest = min(data, key=lambda m: m.get("created_at") or 0)
            first_id = str(oldest["id"])

    async def console_messages(self, console: DifyConsole, app_id: str) -> list[dict[str, Any]]:
        """Every message of every conversation of a chat app (console API)."""
        items: list[dict[str, Any]] = []
        page_no = 1
        while True:
            page = await console.request(
                "GET",
                f"/apps/{app_id}/chat-conversations",
                params={"page": page_no, "limit": self.page_limit},
            )
            for conversation in page.get("data") or []:
                items += await self._messages(
                    console,
                    f"/apps/{app_id}/chat-messages",
                    {"conversation_id": conversation["id"]},
                )
            if not page.get("has_more") or not page.get("data"):
                return items
            page_no += 1

    async def _annotations(self, api: DifyConsole | DifyService, path: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        page_no = 1
        while True:
            page = await api.request(
                "GET", path, params={"page": page_no, "limit": self.page_limit}
            )
            data = [a for a in page.get("data") or [] if isinstance(a, dict)]
            items += data
            self._tick(len(data))
            if not page.get("has_more") or not data:
                return items
            page_no += 1

    async def console_annotations(self, console: DifyConsole, app_id: str) -> list[dict[str, Any]]:
        return await self._annotations(console, f"/apps/{app_id}/annotations")

    async def service_annotations(self, service: DifyService) -> list[dict[str, Any]]:
        return await self._annotations(service, "/apps/annotations")

    async def service_messages(self, service: DifyService, user: str) -> list[dict[str, Any]]:
        """Messages of one end user's conversations (the service API sees only the
        conversations of the ``user`` it is asked for)."""
        items: list[dict[str, Any]] = []
        last_id: str | None = None
        while True:
            params: dict[str, Any] = {"user": user, "limit": self.page_limit}
            if last_id:
                params["last_id"] = last_id
            page = await service.request("GET", "/conversations", params=params)
            data = [c for c in page.get("data") or [] if isinstance(c, dict)]
            for conversation in data:
                items += await self._messages(
                    service, "/messages", {"conversation_id": conversation["id"], "user": user}
                )
            if not page.get("has_more") or not data:
                return items
            last_id = str(data[-1]["id"])


def merge(parts: Iterable[SourceRows]) -> SourceRows:
    out = SourceRows()
    for part in parts:
        out.examples += part.examples
        out.rejected += part.rejected
        out.total += part.total
    return out
