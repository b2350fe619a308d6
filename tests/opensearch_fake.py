"""A local stand-in for OpenSearch's ``_bulk`` endpoint (OpenSearch cannot run here).

It replays the documented contract (https://opensearch.org/docs/latest/api-reference/
document-apis/bulk/): ``POST /_bulk`` with ``Content-Type: application/x-ndjson``, an action
line and a source line per document, the body ending with a newline; the answer is
``200 {"took", "errors", "items": [{<op>: {"_index", "_id", "status", "error"?}}]}`` where
``errors`` is true when any item failed although the request as a whole succeeded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeOpenSearch(ThreadingHTTPServer):
    """Replays OpenSearch's ``POST /_bulk``: NDJSON in (action line + source line per
    document, trailing newline required), ``{"took", "errors", "items"}`` out; ``create`` of
    an existing ``_id`` is a per-item 409 ``version_conflict_engine_exception``; a document
    whose ``details.reject`` is true fails with a per-item 400 ``mapper_parsing_exception``."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BulkHandler)
        self.docs: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _BulkHandler(BaseHTTPRequestHandler):
    server: FakeOpenSearch

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        self.server.requests.append(
            {"path": self.path, "content_type": self.headers.get("content-type"), "body": raw}
        )
        if self.server.status != 200:
            return self._send(self.server.status, {"error": "unavailable", "status": 503})
        if self.path != "/_bulk":
            return self._send(404, {"error": "no handler"})
        if self.headers.get("content-type") != "application/x-ndjson":
            return self._send(406, {"error": "Content-Type header is not supported"})
        text = raw.decode()
        if not text.endswith("\n"):
            return self._send(
                400, {"error": {"type": "illegal_argument_exception", "reason": "newline"}}
            )
        lines = text.splitlines()
        items: list[dict[str, Any]] = []
        for action_line, source_line in zip(lines[::2], lines[1::2], strict=True):
            ((op, meta),) = json.loads(action_line).items()
            source = json.loads(source_line)
            doc_id, index = meta["_id"], meta["_index"]
            if source.get("details", {}).get("reject"):
                error = {"type": "mapper_parsing_exception", "reason": "failed to parse"}
                items.append({op: {"_index": index, "_id": doc_id, "status": 400, "error": error}})
            elif op == "create" and doc_id in self.server.docs:
                error = {"type": "version_conflict_engine_exception", "reason": "exists"}
                items.append({op: {"_index": index, "_id": doc_id, "status": 409, "error": error}})
            else:
                self.server.docs[doc_id] = {"_index": index, **source}
                items.append({op: {"_index": index, "_id": doc_id, "status": 201}})
        errors = any(next(iter(i.values()))["status"] >= 300 for i in items)
        self._send(200, {"took": 3, "errors": errors, "items": items})

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json; charset=UTF-8")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_opensearch() -> Iterator[FakeOpenSearch]:
    """Run a :class:`FakeOpenSearch` on 127.0.0.1 for the duration of a fixture."""
    server = FakeOpenSearch()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
