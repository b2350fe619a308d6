"""Async ERP facade runs survive the death of the process running them (docs/erp-facade.md,
"Restarts").

Each test leaves a ``facade_runs`` row as a dead process leaves it (status ``running`` or a
callback still ``pending``, its lease passed) in the real PostgreSQL of the session, then
lets one or two fresh :class:`FacadeService` instances (other replicas, or the restarted
process) recover it against the replay of Dify's service API (tests/dify_service_fake.py:
``GET /v1/workflows/run/{id}``, ``GET /v1/messages``) and a real HTTP callback receiver.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from dify_service_fake import FakeDifyService, ScriptedApp
from local_server import LocalServer
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

TENANT = "dept-recovery"


class Receiver(LocalServer):
    """An ERP callback endpoint recording every delivery (``fail_first`` answered 503)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_first = 0
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.app = Starlette(routes=[Route("/cb", self.receive, methods=["POST"])])

    async def receive(self, request: Request) -> Response:
        self.deliveries.append((dict(request.headers), await request.body()))
        if len(self.deliveries) <= self.fail_first:
            return Response("busy", status_code=503)
        return JSONResponse({"ok": True})

    def of(self, run_id: str) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [
            (h, json.loads(b)) for h, b in self.deliveries if h.get("x-llmflow-run-id") == run_id
        ]


def signed_by(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The receiver's check as docs/erp-facade.md states it (independent of our code)."""
    ts = headers["x-llmflow-timestamp"]
    mac = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(ts)) < 300
    return fresh and hmac.compare_digest("v1=" + mac, headers["x-llmflow-signature"])


@pytest.fixture(scope="module")
def dify() -> Iterator[FakeDifyService]:
    server = FakeDifyService()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def apps(runtime: Any, dify: FakeDifyService) -> dict[str, ScriptedApp]:
    from llmflow.dify.facade import AppRegistry
    from llmflow.dify.secrets import runtime_box

    registry = AppRegistry(runtime, runtime_box(runtime))
    scripted = {
        "summary": dify.add_app("workflow", "summary"),
        "chat": dify.add_app("chat", "chat"),
        "broken": dify.add_app("workflow", "broken", fail=True),
    }
    for name, app in scripted.items():
        await registry.register(TENANT, name, app.mode, dify.url, app.key)  # type: ignore[arg-type]
    await runtime.pii_guard()  # loads Presidio once, outside the timed parts
    return scripted


@pytest.fixture
async def replicas(runtime: Any) -> AsyncIterator[list[Any]]:
    """Fresh facade services (replicas, or the restarted process) with fast timings."""
    from llmflow.dify.facade import FacadeService
    from llmflow.dify.secrets import runtime_box

    settings = runtime.settings.facade.model_copy(
        update={
            "allow_http_callbacks": True,
            "callback_backoff_s": 0.05,
            "recovery_poll_s": 0.05,
            "lease_s": 5.0,
            "pii_guard": True,
        }
    )
    made = [FacadeService(runtime, settings, runtime_box(runtime)) for _ in range(2)]
    yield made
    for service in made:
        await service.drain(timeout_s=60)
        await service.aclose()


async def dead_run(
    runtime: Any,
    receiver: Receiver,
    app: str,
    mode: str,
    *,
    status: str = "running",
    lease_left_s: float = -5.0,
    **columns: Any,
) -> str:
    """A run row as a process that died leaves it (its lease ``lease_left_s`` from now)."""
    from llmflow.dify.secrets import runtime_box

    run_id = uuid.uuid4().hex
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": run_id,
        "tenant_id": TENANT,
        "app_name": app,
        "subject": "service-account-erp",
        "client_id": "erp",
        "mode": mode,
        "delivery": "async",
        "status": status,
        "request_hash": "0" * 64,
        "callback_url": f"{receiver.url}/cb",
        "callback_status": "pending",
        "created_at": now,
        "expires_at": now + timedelta(days=1),
        # sealed as the facade stores it (bound to the run): the label may name a person
        "dify_user_sealed": runtime_box(runtime).seal("erp", f"facade-run-user:{run_id}"),
        "owner": "dead-host:4242:0123456789ab",
        "lease_until": now + timedelta(seconds=lease_left_s),
        **columns,
    }
    for key in ("result", "error", "pii_inbound"):
        if isinstance(values.get(key), dict):
            values[key] = json.dumps(values[key])
    names = ", ".join(values)
    casts = {"result", "error", "pii_inbound"}
    params = ", ".join(f"CAST(:{k} AS jsonb)" if k in casts else f":{k}" for k in values)
    await sql(runtime, f"INSERT INTO facade_runs ({names}) VALUES ({params})", **values)
    return run_id


async def sql(runtime: Any, statement: str, **params: Any) -> None:
    """Run one statement of the test's own on the facade's tables and commit it."""
    async with runtime.sessions() as s:
        await s.execute(text(statement), params)
        await s.commit()


async def row(runtime: Any, run_id: str) -> dict[str, Any]:
    async with runtime.sessions() as s:
        found = (
            await s.execute(text("SELECT * FROM facade_runs WHERE id = :id"), {"id": run_id})
        ).first()
    assert found is not None
    return dict(found._mapping)


async def test_two_replicas_claim_an_abandoned_workflow_run_once(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    inputs = {"po_number": "PO-500", "vendor": "한빛상사"}
    dify_run = dify.start_workflow_run(apps["summary"], inputs)  # Dify is still running it
    run_id = await dead_run(
        runtime, receiver, "summary", "workflow", workflow_run_id=dify_run, task_id="t-1"
    )
    submitted = len(dify.received)
    taken = await asyncio.gather(*(r.recover() for r in replicas))
    assert sorted(taken) == [0, 1]  # one UPDATE … RETURNING wins, the other finds nothing
    owner = next(r for r, n in zip(replicas, taken, strict=True) if n == 1)
    assert (await row(runtime, run_id))["owner"] == owner.owner

    await asyncio.sleep(0.3)  # the new owner polls Dify while the run goes on there
    assert (await row(runtime, run_id))["status"] == "running"
    reads = dify.detail_reads
    assert reads >= 2
    dify.finish_workflow_run(dify_run)
    for replica in replicas:
        await replica.drain(timeout_s=60)
    assert sum([await r.recover() for r in replicas]) == 0  # nothing left to claim

    deliveries = receiver.of(run_id)
    assert len(deliveries) == 1  # exactly once
    headers, payload = deliveries[0]
    raw = next(b for h, b in receiver.deliveries if h.get("x-llmflow-run-id") == run_id)
    secret = await replicas[0].apps.callback_secret(TENANT)
    assert signed_by(secret, headers, raw)
    assert payload["status"] == "succeeded"
    assert payload["outputs"] == {"summary": "요약: PO-500 한빛상사"}
    assert payload["recovered"] is True and payload["pii_restored"] is True
    assert payload["workflow_run_id"] == dify_run
    assert len(dify.received) == submitted  # recovery never re-submits
    stored = await row(runtime, run_id)
    assert stored["status"] == "succeeded" and stored["callback_status"] == "delivered"
    assert stored["callback_attempts"] == 1 and stored["callback_delivered_at"] is not None
    assert stored["owner"] is None and stored["lease_until"] is None
    async with runtime.sessions() as s:
        audited = (
            await s.execute(
                text(
                    "SELECT actor, details FROM audit_events WHERE action = 'app.run.finished' "
                    "AND resource_id = 'summary' AND tenant_id = :t"
                ),
                {"t": TENANT},
            )
        ).all()
    mine = [a for a in audited if a.details.get("run_id") == run_id]
    assert len(mine) == 1 and mine[0].details["recovered_by"] == owner.owner
    assert mine[0].actor == "service-account-erp"


async def test_a_live_lease_is_left_alone(
    runtime: Any, receiver: Receiver, apps: dict[str, ScriptedApp], replicas: list[Any]
) -> None:
    run_id = await dead_run(
        runtime, receiver, "summary", "workflow", lease_left_s=60, workflow_run_id="w-live"
    )
    assert await replicas[0].recover() == 0
    assert (await row(runtime, run_id))["owner"] == "dead-host:4242:0123456789ab"
    # tidy: this run's owner is not coming back
    await sql(runtime, "DELETE FROM facade_runs WHERE id = :id", id=run_id)


async def test_a_run_dify_never_acknowledged_fails_as_interrupted(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    run_id = await dead_run(runtime, receiver, "summary", "workflow")  # no Dify id recorded
    submitted = len(dify.received)
    assert await replicas[0].recover() == 1
    await replicas[0].drain(timeout_s=60)
    assert len(dify.received) == submitted  # not re-submitted (a workflow may have effects)
    [(_, payload)] = receiver.of(run_id)
    assert payload["status"] == "failed"
    assert payload["error"]["code"] == "interrupted_before_start"
    assert "Idempotency-Key" in payload["error"]["message"]
    stored = await row(runtime, run_id)
    assert stored["status"] == "failed" and stored["callback_status"] == "delivered"


async def test_a_failed_workflow_is_reported_as_failed(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    dify_run = dify.start_workflow_run(apps["broken"], {"x": "1"})
    dify.finish_workflow_run(dify_run)
    run_id = await dead_run(runtime, receiver, "broken", "workflow", workflow_run_id=dify_run)
    lost = await dead_run(runtime, receiver, "summary", "workflow", workflow_run_id="gone")
    assert await replicas[1].recover() == 2
    await replicas[1].drain(timeout_s=60)
    [(_, payload)] = receiver.of(run_id)
    assert payload["status"] == "failed" and payload["error"]["code"] == "dify_run_failed"
    assert "quota" in payload["error"]["message"]
    [(_, missing)] = receiver.of(lost)  # Dify does not know the run (404)
    assert missing["status"] == "failed" and missing["error"]["code"] == "dify_run_not_found"


async def test_a_chat_run_is_finished_from_difys_messages_without_restoring_pseudonyms(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    # The dead process had pseudonymised an RRN before Dify saw the query; its map is gone.
    conversation, message = dify.start_chat_message(
        apps["chat"], "담당자 <KR_RRN_1> 연차 며칠?", "erp"
    )
    run_id = await dead_run(
        runtime,
        receiver,
        "chat",
        "chat",
        conversation_id=conversation,
        message_id=message,
        pii_inbound={"counts": {"KR_RRN": 1}, "pseudonyms": 1},
    )
    assert await replicas[0].recover() == 1
    await asyncio.sleep(0.2)
    assert (await row(runtime, run_id))["status"] == "running"  # the answer is not written yet
    dify.finish_chat_message(message)
    await replicas[0].drain(timeout_s=60)
    [(_, payload)] = receiver.of(run_id)
    assert payload["status"] == "succeeded"
    assert payload["answer"] == "답변: 담당자 <KR_RRN_1> 연차 며칠?"  # pseudonym kept
    assert payload["pii_restored"] is False and payload["recovered"] is True
    assert payload["pii"] == {"KR_RRN": 1}
    assert payload["citations"][0]["document_name"] == "규정.pdf"
    assert payload["usage"]["total_tokens"] == 32
    assert dify.message_reads >= 2
    stored = await row(runtime, run_id)
    assert "880101" not in json.dumps(stored, default=str)  # no raw value anywhere


async def test_a_pending_callback_is_retried_after_a_restart(
    runtime: Any, receiver: Receiver, apps: dict[str, ScriptedApp], replicas: list[Any]
) -> None:
    result = {"outputs": {"summary": "요약: PO-9"}, "usage": None}
    common: dict[str, Any] = {
        "status": "succeeded",
        "result": result,
        "workflow_run_id": "w-9",
        "finished_at": datetime.now(UTC),
        "callback_attempts": 2,
    }
    due = await dead_run(
        runtime,
        receiver,
        "summary",
        "workflow",
        callback_next_attempt_at=datetime.now(UTC) - timedelta(seconds=1),
        **common,
    )
    later = await dead_run(
        runtime,
        receiver,
        "summary",
        "workflow",
        callback_next_attempt_at=datetime.now(UTC) + timedelta(minutes=5),
        **common,
    )
    receiver.fail_first = len(receiver.deliveries) + 1  # the receiver is still busy once
    assert await replicas[0].recover() == 1  # the back-off of `later` has not passed
    await replicas[0].drain(timeout_s=60)
    attempts = receiver.of(due)
    assert [h["x-llmflow-delivery-attempt"] for h, _ in attempts] == ["3", "4"]
    assert attempts[-1][1]["outputs"] == {"summary": "요약: PO-9"}
    stored = await row(runtime, due)
    assert stored["callback_status"] == "delivered" and stored["callback_attempts"] == 4
    assert receiver.of(later) == []
    assert (await row(runtime, later))["callback_status"] == "pending"
    await sql(runtime, "DELETE FROM facade_runs WHERE id = :id", id=later)


async def test_the_owner_renews_its_lease_and_yields_a_run_taken_from_it(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    from llmflow.dify.facade import FacadeService

    short = replicas[0].settings.model_copy(update={"lease_s": 0.3})
    service = FacadeService(runtime, short, replicas[0].apps.box)
    dify_run = dify.start_workflow_run(apps["summary"], {"po_number": "PO-700"})
    run_id = await dead_run(runtime, receiver, "summary", "workflow", workflow_run_id=dify_run)
    try:
        assert await service.recover() == 1
        await asyncio.sleep(1.0)  # three leases long: renewed all along
        held = await row(runtime, run_id)
        assert held["owner"] == service.owner
        assert held["lease_until"] > datetime.now(UTC)
        # This process stalls past its lease; another takes the run over meanwhile.
        await sql(runtime, "UPDATE facade_runs SET owner = 'other:1:x' WHERE id = :id", id=run_id)
        await service.drain(timeout_s=5)  # its work on the run stops at the next renewal
        dify.finish_workflow_run(dify_run)
        await asyncio.sleep(0.2)
        assert receiver.of(run_id) == []  # no callback from a process that lost the run
        taken = await row(runtime, run_id)
        assert taken["owner"] == "other:1:x" and taken["status"] == "running"
    finally:
        await service.aclose()
        await sql(runtime, "DELETE FROM facade_runs WHERE id = :id", id=run_id)


async def test_a_serving_process_takes_over_at_start_and_then_periodically(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    """What the API's lifespan runs (``start_facade_recovery``): a scan at start-up, then one
    every ``recovery_interval_s``."""
    from llmflow.dify.facade import FacadeService, facade, install_facade, start_facade_recovery

    before = facade(runtime)
    quick = replicas[0].settings.model_copy(update={"recovery_interval_s": 0.1})
    service = FacadeService(runtime, quick, replicas[0].apps.box)
    install_facade(runtime, service)
    try:
        first = dify.start_workflow_run(apps["summary"], {"po_number": "PO-801"})
        dify.finish_workflow_run(first)
        at_start = await dead_run(runtime, receiver, "summary", "workflow", workflow_run_id=first)
        assert await start_facade_recovery(runtime) == 1
        await service.drain(timeout_s=60)
        assert [p["status"] for _, p in receiver.of(at_start)] == ["succeeded"]
        # A process that dies later is found by the periodic scan.
        later = await dead_run(runtime, receiver, "summary", "workflow")
        for _ in range(100):
            if receiver.of(later):
                break
            await asyncio.sleep(0.05)
        await service.drain(timeout_s=60)
        [(_, payload)] = receiver.of(later)
        assert payload["error"]["code"] == "interrupted_before_start"
    finally:
        await service.aclose()
        install_facade(runtime, before)


async def test_abandoned_blocking_and_streaming_runs_fail_as_interrupted(
    runtime: Any,
    dify: FakeDifyService,
    receiver: Receiver,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    """A blocking or streaming run whose process died stays ``running`` no longer: recovery
    fails it ``interrupted`` (no callback: these runs have none), and a retry with the same
    Idempotency-Key gets that failed run instead of 409 forever."""
    from llmflow.auth.principal import Principal
    from llmflow.dify.facade import RunRequest, request_hash

    erp = Principal(
        tenant_id=TENANT, subject="service-account-erp", kind="service", client_id="erp"
    )
    no_callback: dict[str, Any] = {"callback_url": None, "callback_status": None}
    runs: dict[str, str] = {}
    for delivery in ("blocking", "streaming"):
        request = RunRequest(inputs={"po_number": f"PO-{delivery}"}, response_mode=delivery)  # type: ignore[arg-type]
        runs[delivery] = await dead_run(
            runtime,
            receiver,
            "summary",
            "workflow",
            delivery=delivery,
            idempotency_key=f"erp-{delivery}-{uuid.uuid4().hex[:8]}",
            request_hash=request_hash("summary", request),
            dify_user_sealed=None,
            **no_callback,
        )
    live = await dead_run(
        runtime,
        receiver,
        "summary",
        "workflow",
        delivery="blocking",
        lease_left_s=60,
        **no_callback,
    )
    # A row an older release wrote without a lease, still within a request's life.
    unleased = await dead_run(
        runtime,
        receiver,
        "summary",
        "workflow",
        delivery="streaming",
        owner=None,
        lease_until=None,
        **no_callback,
    )
    submitted, delivered = len(dify.received), len(receiver.deliveries)
    assert await replicas[0].recover() == 2
    await replicas[0].drain(timeout_s=60)
    assert len(dify.received) == submitted  # never re-submitted
    assert len(receiver.deliveries) == delivered  # no callback for these modes
    for delivery, run_id in runs.items():
        stored = await row(runtime, run_id)
        assert stored["status"] == "failed", delivery
        assert stored["error"]["code"] == "interrupted"
        assert "new Idempotency-Key" in stored["error"]["message"]
        assert stored["finished_at"] is not None
        assert stored["owner"] is None and stored["lease_until"] is None
        # The client's retry with the same key: the failed run, not "still in progress".
        key = stored["idempotency_key"]
        request = RunRequest(inputs={"po_number": f"PO-{delivery}"}, response_mode=delivery)  # type: ignore[arg-type]
        again = await replicas[1].start(
            erp, await replicas[1].apps.get(TENANT, "summary"), request, key
        )
        assert not again.fresh and again.record.id == run_id
        assert again.record.status == "failed"
        shown = again.record.to_dict()
        assert shown["error"]["code"] == "interrupted" and shown["recovered"] is True
        assert shown["callback"] is None
    assert (await row(runtime, live))["status"] == "running"  # its process is alive
    assert (await row(runtime, unleased))["status"] == "running"
    async with runtime.sessions() as s:
        audited = (
            (
                await s.execute(
                    text(
                        "SELECT details FROM audit_events WHERE action = 'app.run.finished' "
                        "AND tenant_id = :t"
                    ),
                    {"t": TENANT},
                )
            )
            .scalars()
            .all()
        )
        mine = [d for d in audited if d.get("run_id") in runs.values()]
        assert sorted(d["response_mode"] for d in mine) == ["blocking", "streaming"]
        assert all(d["error_code"] == "interrupted" for d in mine)
        await s.execute(
            text("DELETE FROM facade_runs WHERE id = ANY(:ids)"), {"ids": [live, unleased]}
        )
        await s.commit()


async def test_a_blocking_run_renews_its_lease_while_dify_works(
    runtime: Any,
    dify: FakeDifyService,
    apps: dict[str, ScriptedApp],
    replicas: list[Any],
) -> None:
    """The serving process keeps its keyed blocking run leased: another replica's recovery
    leaves it alone however long Dify takes, and the finished row holds no lease."""
    from llmflow.auth.principal import Principal
    from llmflow.dify.facade import AppRegistry, FacadeService, RunRequest
    from llmflow.dify.secrets import runtime_box

    slow = dify.add_app("workflow", "slow-block", stall_s=3.0)
    await AppRegistry(runtime, runtime_box(runtime)).register(
        TENANT, "slow-block", "workflow", dify.url, slow.key
    )
    short = replicas[0].settings.model_copy(update={"lease_s": 0.3})
    service = FacadeService(runtime, short, replicas[0].apps.box)
    erp = Principal(
        tenant_id=TENANT, subject="service-account-erp", kind="service", client_id="erp"
    )
    app = await service.apps.get(TENANT, "slow-block")
    request = RunRequest(inputs={"po_number": "PO-900"})
    try:
        start = await service.start(erp, app, request, f"block-{uuid.uuid4().hex[:8]}")
        running = asyncio.create_task(service.run_blocking(erp, start, request))
        began = time.monotonic()
        checks = 0
        # over five leases, and well inside the stall even on a loaded machine
        while time.monotonic() - began < 1.6:
            await asyncio.sleep(0.15)
            checks += 1
            assert await replicas[1].recover() == 0
            held = await row(runtime, start.record.id)
            assert held["status"] == "running" and held["owner"] == service.owner
            assert held["lease_until"] > datetime.now(UTC)
        assert checks >= 4
        record = await running
        assert record.status == "succeeded"
        done = await row(runtime, start.record.id)
        assert done["status"] == "succeeded"
        assert done["owner"] is None and done["lease_until"] is None
    finally:
        await service.aclose()
