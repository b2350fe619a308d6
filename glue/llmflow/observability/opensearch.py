"""Audit events to OpenSearch through its ``_bulk`` API (an optional copy; PostgreSQL is the
record).

``POST {url}/_bulk`` with ``Content-Type: application/x-ndjson``: one action line
(``{"create": {"_index": …, "_id": …}}``) and one document line per event, the body ending
with a newline. ``create`` works for a plain index and for a data stream alike, and the event
id as ``_id`` makes a retried batch idempotent (a duplicate answers 409 per item). OpenSearch
answers ``200 {"took": …, "errors": bool, "items": [{"create": {"status": …, "error"?: …}}]}``;
``errors: true`` means some items failed although the request succeeded, so the items are
read (https://opensearch.org/docs/latest/api-reference/document-apis/bulk/).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from llmflow.errors import LLMFlowError
from llmflow.observability.audit import AuditEntry

log = logging.getLogger(__name__)


class AuditSinkError(LLMFlowError):
    """OpenSearch refused or could not take the events."""

    status = 503
    code = "audit_sink_error"
    title = "Audit sink unavailable"


def bulk_body(index: str, entries: Sequence[AuditEntry]) -> bytes:
    """The NDJSON ``_bulk`` body for ``entries`` (``@timestamp`` set for data streams)."""
    lines: list[str] = []
    for entry in entries:
        doc = entry.to_dict()
        doc["@timestamp"] = doc["created_at"]
        lines.append(json.dumps({"create": {"_index": index, "_id": entry.id}}))
        lines.append(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


class OpenSearchSink:
    """Posts audit events to ``{url}/_bulk``; one ``httpx.AsyncClient``, explicit timeout."""

    def __init__(
        self,
        url: str,
        index: str = "llmflow-audit",
        *,
        timeout_s: float = 5.0,
        username: str | None = None,
        password: str | None = None,
        verify: bool = True,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """``client`` is for callers that bring their own transport (tests, mTLS)."""
        self.url = url.rstrip("/")
        self.index = index
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), auth=auth, verify=verify
        )

    async def send(self, entries: Sequence[AuditEntry]) -> None:
        """Index ``entries``; raises :class:`AuditSinkError` naming the first failed item."""
        if not entries:
            return
        try:
            response = await self._client.post(
                f"{self.url}/_bulk",
                content=bulk_body(self.index, entries),
                headers={"Content-Type": "application/x-ndjson"},
            )
        except httpx.HTTPError as exc:
            raise AuditSinkError(f"OpenSearch unreachable: {exc.__class__.__name__}") from exc
        if response.status_code != 200:
            raise AuditSinkError(f"OpenSearch _bulk answered {response.status_code}")
        try:
            body: Any = response.json()
        except ValueError as exc:
            raise AuditSinkError("OpenSearch _bulk answered a body that is not JSON") from exc
        if not isinstance(body, dict) or not isinstance(body.get("errors"), bool):
            raise AuditSinkError("OpenSearch _bulk answered without an 'errors' flag")
        if body["errors"]:
            failed = _failed_items(body.get("items"))
            if failed:
                raise AuditSinkError(
                    f"OpenSearch refused {len(failed)} of {len(entries)} audit events: {failed[0]}"
                )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _failed_items(items: object) -> list[str]:
    """``"<status> <error type>: <reason>"`` for each failed item; a 409 (the event is
    already there, from a retried batch) is not a failure."""
    failed: list[str] = []
    if not isinstance(items, list):
        return ["no items in the response"]
    for item in items:
        result: Any = next(iter(item.values()), {}) if isinstance(item, dict) and item else {}
        status = result.get("status", 0) if isinstance(result, dict) else 0
        if isinstance(status, int) and (200 <= status < 300 or status == 409):
            continue
        error = result.get("error", {}) if isinstance(result, dict) else {}
        kind = error.get("type", "error") if isinstance(error, dict) else str(error)
        reason = error.get("reason", "") if isinstance(error, dict) else ""
        failed.append(f"{status} {kind}: {reason}".strip())
    return failed
