"""Server-sent events as OpenAI-compatible servers send them: ``data: <json>\\n\\n`` lines,
ending with ``data: [DONE]``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

DONE = b"data: [DONE]\n\n"


def encode(event: dict[str, Any]) -> bytes:
    """One ``data:`` event."""
    return (
        b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"
    )


async def events(lines: AsyncIterator[str]) -> AsyncIterator[dict[str, Any] | None]:
    """The JSON payloads of an SSE stream; ``None`` for ``[DONE]``. Comments, ``event:``
    and ``id:`` fields are skipped; a multi-line ``data:`` event is joined."""
    buffer: list[str] = []
    async for line in lines:
        if line == "":
            if buffer:
                payload = "\n".join(buffer)
                buffer = []
                if payload.strip() == "[DONE]":
                    yield None
                    return
                try:
                    yield json.loads(payload)
                except json.JSONDecodeError:
                    continue
            continue
        if line.startswith("data:"):
            buffer.append(line[5:].lstrip(" "))
    if buffer:
        payload = "\n".join(buffer)
        if payload.strip() == "[DONE]":
            yield None
        else:
            try:
                yield json.loads(payload)
            except json.JSONDecodeError:
                return
