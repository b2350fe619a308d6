"""HttpPolicy against a local server that replays OPA's Data API contract.

OPA answers ``POST /v1/data/<path>`` with ``{"result": <value>}`` and with ``{}`` when the
document is undefined (https://www.openpolicyagent.org/docs/rest-api). The server below
evaluates ``llmflow/authz/decision`` with the real Rego (regopy) so that allow and deny travel
the whole way; other paths misbehave the ways a real OPA or network can.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from llmflow.auth.policy import Decision, HttpPolicy, build_policy_engine
from llmflow.auth.policy.embedded import EmbeddedPolicy
from llmflow.settings import PolicySettings, Settings

OPA_DIR = Path(__file__).resolve().parents[2] / "policies" / "opa"

DEVELOPER_INGESTS = {
    "subject": {"id": "u", "tenant": "dept-hr", "roles": ["developer"], "kind": "user"},
    "action": "ingest",
    "resource": {"type": "knowledge_base", "tenant": "dept-hr", "id": "handbook"},
}


class FakeOpa(ThreadingHTTPServer):
    daemon_threads = True
    policy: EmbeddedPolicy
    requests: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: FakeOpa

    def log_message(self, format: str, *args: Any) -> None:  # silence the test output
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)  # fails when the client gave up (the timeout test)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        self.server.requests.append(
            {"path": self.path, "body": body, "content_type": self.headers.get("Content-Type")}
        )
        path = self.path.removeprefix("/v1/data/")
        if path == "llmflow/authz/decision":
            if not isinstance(body, dict) or "input" not in body:
                self._send(400, b'{"code": "invalid_parameter", "message": "bad input"}')
                return
            result = self.server.policy.evaluate(path, body["input"])
            self._send(200, json.dumps({"result": result}).encode())
        elif path == "slow/decision":
            time.sleep(1.5)
            self._send(200, b'{"result": {"allow": true, "reason": "too late"}}')
        elif path == "error/decision":
            self._send(500, b'{"code": "internal_error", "message": "eval_conflict_error"}')
        elif path == "undefined/decision":
            self._send(200, b"{}")
        elif path == "malformed/decision":
            self._send(200, b'{"result": {"allow": tru', "text/plain")
        elif path == "stringly/decision":
            self._send(200, b'{"result": {"allow": "true", "reason": "yes"}}')
        elif path == "bare/decision":
            self._send(200, b'{"result": true}')
        elif path == "noreason/decision":
            self._send(200, b'{"result": {"allow": true}}')
        else:
            self._send(404, b'{"code": "not_found"}')


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpa]:
    server = FakeOpa(("127.0.0.1", 0), Handler)
    server.policy = EmbeddedPolicy(OPA_DIR)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture()
def opa_url(fake: FakeOpa) -> str:
    host, port = fake.server_address[:2]
    return f"http://{host!s}:{port}"


async def test_allow_travels_from_the_policy(opa_url: str, fake: FakeOpa) -> None:
    policy = HttpPolicy(opa_url, "/llmflow/authz/decision/", timeout_s=2.0)
    try:
        decision = await policy.decide(DEVELOPER_INGESTS)
    finally:
        await policy.aclose()
    assert decision == Decision(True, "role developer grants ingest")
    sent = fake.requests[-1]
    assert sent["path"] == "/v1/data/llmflow/authz/decision"
    assert sent["body"] == {"input": DEVELOPER_INGESTS}
    assert sent["content_type"] == "application/json"


async def test_deny_travels_from_the_policy(opa_url: str) -> None:
    forged = dict(DEVELOPER_INGESTS, resource={"type": "knowledge_base", "tenant": "dept-finance"})
    policy = HttpPolicy(opa_url)
    try:
        decision = await policy.decide(forged)
    finally:
        await policy.aclose()
    assert not decision.allow
    assert "cross-tenant access denied" in decision.reason


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("error/decision", "policy engine answered HTTP 500"),
        ("missing/decision", "policy engine answered HTTP 404"),
        ("undefined/decision", "policy decision undefined"),
        ("malformed/decision", "policy engine answered malformed JSON"),
        ("stringly/decision", "policy returned a malformed decision"),
        ("bare/decision", "policy returned a malformed decision"),
        ("noreason/decision", "policy returned a malformed decision"),
    ],
)
async def test_fails_closed(
    opa_url: str, path: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    policy = HttpPolicy(opa_url, path, timeout_s=2.0)
    try:
        decision = await policy.decide(DEVELOPER_INGESTS)
    finally:
        await policy.aclose()
    assert decision == Decision(False, reason)
    assert any(r.levelname == "ERROR" for r in caplog.records)


async def test_timeout_denies(opa_url: str) -> None:
    policy = HttpPolicy(opa_url, "slow/decision", timeout_s=0.2)
    started = time.monotonic()
    try:
        decision = await policy.decide(DEVELOPER_INGESTS)
    finally:
        await policy.aclose()
    assert decision == Decision(False, "policy engine timed out")
    assert time.monotonic() - started < 1.4  # did not wait for the slow answer


async def test_connection_refused_denies() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # nothing listens on the port any more
    policy = HttpPolicy(f"http://127.0.0.1:{port}", timeout_s=1.0)
    try:
        decision = await policy.decide(DEVELOPER_INGESTS)
    finally:
        await policy.aclose()
    assert decision == Decision(False, "policy engine unreachable")


async def test_factory_builds_http_engine(opa_url: str, tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=tmp_path, policy=PolicySettings(mode="http", opa_url=opa_url)
    )
    engine = build_policy_engine(settings)
    try:
        assert isinstance(engine, HttpPolicy)
        assert (await engine.decide(DEVELOPER_INGESTS)).allow
    finally:
        await engine.aclose()
