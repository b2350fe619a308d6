"""``Runtime.close()`` closes the gateway before the audit log: the per-call audit events the
gateway still holds when the process stops reach every sink, not only PostgreSQL.

Real pieces: a Runtime of its own (embedded PostgreSQL, closed by the test), the gateway in
front of a scripted OpenAI-compatible upstream on a real port, and the OpenSearch ``_bulk``
replay (tests/opensearch_fake.py) as the audit log's second sink.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opensearch_fake import FakeOpenSearch

from llmflow.gateway.config import GatewaySettings
from llmflow.gateway.scripted import ScriptedUpstream, serve

pytestmark = pytest.mark.integration


@pytest.fixture
def opensearch() -> Iterator[FakeOpenSearch]:
    server = FakeOpenSearch()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def call_events(opensearch: FakeOpenSearch) -> list[dict[str, Any]]:
    """The gateway's per-call events (the policy layer's ``model.use`` decisions have no
    latency)."""
    return [
        d
        for d in opensearch.docs.values()
        if d.get("action") == "model.use" and "latency_ms" in (d.get("details") or {})
    ]


async def test_call_events_queued_at_close_reach_every_audit_sink(
    tmp_path: Path, opensearch: FakeOpenSearch
) -> None:
    from llmflow.api.app import create_app
    from llmflow.gateway.audit import CallAuditWriter
    from llmflow.runtime import Runtime
    from llmflow.settings import Settings

    with serve(ScriptedUpstream("close")) as upstream:
        settings = Settings(data_dir=tmp_path / "llmflow", _env_file=None)  # type: ignore[call-arg]
        settings.gateway = GatewaySettings.model_validate(
            {
                "models": [{"name": "close-chat", "backends": [{"url": upstream.url}]}],
                "health_interval_s": 0,
            }
        )
        settings.audit = settings.audit.model_copy(update={"opensearch_url": opensearch.url})
        rt = await Runtime.open(settings)
        closed = False
        try:
            gateway = await rt.gateway()
            (writer,) = [o for o in gateway.observers if isinstance(o, CallAuditWriter)]
            # No periodic flush from now on: only close() can write the events.
            writer.flush_interval_s = 3600.0
            await asyncio.sleep(0.7)  # the writer's first (0.5 s) sleep ends, the next is long
            key = await rt.api_keys.create("close-tenant", roles=["model"], name="close")
            app = create_app(settings, runtime=rt)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for i in range(3):
                    message = {"role": "user", "content": f"hello {i}"}
                    r = await client.post(
                        "/v1/chat/completions",
                        json={"model": "close-chat", "messages": [message]},
                        headers={"Authorization": f"Bearer {key.key}"},
                    )
                    assert r.status_code == 200, r.text
            # Answered, and their events still queued in the process.
            assert call_events(opensearch) == [] and len(writer._backlog) == 3
            await rt.close()
            closed = True
        finally:
            if not closed:
                await rt.close()
    written = call_events(opensearch)
    assert len(written) == 3
    assert {d["resource_id"] for d in written} == {"close-chat"}
    assert all(d["tenant_id"] == "close-tenant" and d["decision"] == "allow" for d in written)
