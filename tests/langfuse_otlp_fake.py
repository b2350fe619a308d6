"""Langfuse's trace ingestion endpoint, replayed: ``POST /api/public/otel/v1/traces``.

Langfuse 4.x (server, ``web/src/pages/api/public/otel/v1/traces``) takes OTLP/HTTP: an
``ExportTraceServiceRequest`` protobuf (``Content-Type: application/x-protobuf``, gzip when
``Content-Encoding: gzip``) authenticated with HTTP Basic ``public_key:secret_key``, and
answers an ``ExportTraceServiceResponse``. This double decodes every request with
``opentelemetry-proto`` and keeps the spans and the credentials it was sent.
"""

from __future__ import annotations

import base64
import gzip
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from local_server import LocalServer
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

PATH = "/api/public/otel/v1/traces"


@dataclass
class ExportedSpan:
    """One span as Langfuse received it: name, scope, attributes decoded to Python values."""

    name: str
    scope: str
    trace_id: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(v: common_pb2.AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, kind) if kind else None


class LangfuseOtlpFake(LocalServer):
    """Accepts the SDK's span exports when the Basic credentials match."""

    def __init__(self, public_key: str, secret_key: str) -> None:
        super().__init__()
        self.public_key, self.secret_key = public_key, secret_key
        self.expected = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode()
        self.spans: list[ExportedSpan] = []
        self.authorizations: list[str] = []
        self.content_types: list[str] = []
        self._lock = threading.Lock()
        self.app = Starlette(routes=[Route(PATH, self.traces, methods=["POST"])])

    async def traces(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        body = await request.body()
        with self._lock:
            self.authorizations.append(auth)
            self.content_types.append(request.headers.get("content-type", ""))
        if auth != self.expected:
            return Response('{"message": "Invalid credentials"}', status_code=401)
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        export = trace_service_pb2.ExportTraceServiceRequest()
        export.ParseFromString(body)
        received = [
            ExportedSpan(
                name=span.name,
                scope=scope_spans.scope.name,
                trace_id=span.trace_id.hex(),
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
                attributes={a.key: _value(a.value) for a in span.attributes},
            )
            for resource_spans in export.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        with self._lock:
            self.spans.extend(received)
        answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        return Response(answer, media_type="application/x-protobuf")


class Blackhole:
    """A port that accepts connections and never answers (a hung Langfuse)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def close(self) -> None:
        self._sock.close()
