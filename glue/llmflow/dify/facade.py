"""The ERP / intranet REST facade over Dify apps (``POST /v1/apps/{app}/run``).

Machines (Keycloak client-credentials tokens) run a tenant's registered Dify app without
holding its Dify key: the facade opens the sealed key, calls Dify's service API, guards PII
both ways and keeps a run record.

* **Apps**: ``llmflow apps register --tenant T --name N --dify-app-key-file F --mode
  workflow|chat`` stores the key sealed (:mod:`llmflow.dify.secrets`); no API returns it.
* **Dify calls** (Dify 1.14.2, ``api/controllers/service_api/app/workflow.py`` and
  ``completion.py``): ``POST /v1/workflows/run`` ``{"inputs", "response_mode", "user"}`` and
  ``POST /v1/chat-messages`` ``{"inputs", "query", "response_mode", "user",
  "conversation_id"}``; blocking answers (``{"workflow_run_id", "task_id", "data":
  {"id", "status", "outputs", "error", "elapsed_time", "total_tokens", …}}`` and
  ``{"event": "message", "message_id", "conversation_id", "answer", "metadata": {"usage",
  "retriever_resources"}}``) and SSE streams (``data: {"event": …}`` frames:
  ``workflow_started``, ``node_started``, ``node_finished``, ``text_chunk``,
  ``workflow_finished``, ``message``, ``agent_message``, ``message_end``, ``message_replace``,
  ``error``; ``event: ping`` keep-alives). ``GET /v1/workflows/run/{id}`` for details.
* **Modes**: ``blocking`` (the result in the response), ``streaming`` (our SSE frames, see
  :func:`frame`), ``async`` (202 + ``Location``; the result is POSTed to ``callback_url``,
  signed: see :func:`sign_callback`).
* **Async runs survive a restart**: they call Dify in streaming mode so that the first event
  gives Dify's ids, stored on the run row at once; the executing process holds a lease on the
  row (``owner``, ``lease_until``) and renews it. A row whose lease has passed belongs to a
  dead process: :meth:`FacadeService.recover` claims it (one ``UPDATE … RETURNING``, so one
  replica wins) and finishes it from Dify's record (``GET /v1/workflows/run/{id}``, ``GET
  /v1/messages``), or fails it ``interrupted_before_start`` when Dify never answered (never
  re-submitted: a workflow may have side effects). Callback delivery state is stored too, so
  retries continue after a restart. A recovered answer keeps its pseudonyms (the map lived in
  the dead process's memory): ``pii_restored: false``.
* **Blocking and streaming runs** written before they end (those with an
  ``Idempotency-Key``, and every streaming run) hold the same lease while their request
  runs; if the process dies (or the streaming client goes away) the row is not left
  ``running``: recovery fails it ``interrupted`` (no callback: these runs have none, and
  Dify is never called again), so a retry with the same key gets that failed run back
  instead of 409 forever.
* **Idempotency**: ``Idempotency-Key`` + the SHA-256 of the request; the same key with the
  same request returns the same run, with another request 422; kept ``idempotency_ttl_s``.
* **PII**: inputs and the query through the tenant policy's ``prompt`` surface
  (pseudonyms restored in the answer), outputs and answers through ``response``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
)
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from llmflow.dify.client import DifyError, DifyService
from llmflow.dify.secrets import SecretBox
from llmflow.errors import (
    Conflict,
    InvalidRequest,
    LLMFlowError,
    NotFound,
)

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.pii.anonymize import PiiGuard
    from llmflow.pii.pseudonyms import Pseudonymizer
    from llmflow.runtime import Runtime

log = logging.getLogger(__name__)

AppMode = Literal["workflow", "chat"]
Delivery = Literal["blocking", "streaming", "async"]

SIGNATURE_HEADER = "X-LLMFlow-Signature"
TIMESTAMP_HEADER = "X-LLMFlow-Timestamp"
RUN_HEADER = "X-LLMFlow-Run-Id"
ATTEMPT_HEADER = "X-LLMFlow-Delivery-Attempt"


class FacadeSettings(BaseModel):
    """``LLMFLOW_FACADE__…``: the ERP facade."""

    default_dify_url: str | None = Field(
        default=None,
        description="Dify API base URL for `apps register` without --dify-url; '{tenant}' is "
        "substituted (instance-per-tenant), e.g. http://dify-api.{tenant}.svc",
    )
    allowed_kinds: list[str] = Field(
        default_factory=lambda: ["service"],
        description="principal kinds that may run apps (service = Keycloak client credentials)",
    )
    dify_timeout_s: float = Field(default=300.0, description="a blocking Dify run may take long")
    idempotency_ttl_s: int = Field(default=24 * 3600, description="how long a key is honoured")
    callback_max_attempts: int = 6
    callback_backoff_s: float = Field(default=1.0, description="first retry delay (doubles)")
    callback_backoff_max_s: float = 60.0
    callback_timeout_s: float = 10.0
    allow_http_callbacks: bool = Field(
        default=False, description="accept http:// callback URLs (https only by default)"
    )
    callback_hosts: list[str] = Field(
        default_factory=list,
        description="if set, callback URLs must point at one of these hosts (SSRF guard)",
    )
    pii_guard: bool = True
    stream_flush_chars: int = Field(
        default=200, description="streamed text is PII-guarded in segments of about this size"
    )
    max_input_chars: int = 200_000
    lease_s: float = Field(
        default=30.0,
        description="a run's claim: the executing process renews it every third of this; "
        "once it has passed, another process (replica or restart) takes an async run over, "
        "or fails a blocking or streaming one 'interrupted'",
    )
    recovery_interval_s: float = Field(
        default=15.0, description="how often a serving process looks for abandoned runs"
    )
    recovery_poll_s: float = Field(
        default=2.0, description="how often a taken-over run asks Dify whether it has finished"
    )
    recovery_max_wait_s: float = Field(
        default=3600.0,
        description="a taken-over run still unfinished in Dify this long after it was "
        "created is failed (recovery_timeout)",
    )
    recovery_batch: int = Field(default=20, description="abandoned runs claimed per scan")


# ---------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class RegisteredApp:
    """A Dify app an ERP may run; the sealed key stays in the database row."""

    tenant_id: str
    name: str
    mode: AppMode
    dify_url: str
    description: str
    created_at: datetime
    sealed_key: str = field(default="", repr=False)
    """The sealed Dify key, read with the row (one query per run); never serialised."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "mode": self.mode,
            "dify_url": self.dify_url,
            "description": self.description,
            "created_at": self.created_at.isoformat(),
        }


def _app_context(tenant: str, name: str) -> str:
    return f"facade-app:{tenant}:{name}"


def _secret_context(tenant: str) -> str:
    return f"facade-callback:{tenant}"


def _user_context(run_id: str) -> str:
    return f"facade-run-user:{run_id}"


class AppRegistry:
    """Registered apps and per-tenant callback secrets (PostgreSQL, sealed values)."""

    def __init__(self, runtime: Runtime, box: SecretBox) -> None:
        self.runtime = runtime
        self.box = box

    async def register(
        self,
        tenant: str,
        name: str,
        mode: AppMode,
        dify_url: str,
        app_key: str,
        description: str = "",
    ) -> RegisteredApp:
        """Create or replace app ``name`` of ``tenant`` (re-registering rotates the key)."""
        from llmflow.knowledge import validate_name

        validate_name("tenant", tenant)
        validate_name("app", name)
        if mode not in ("workflow", "chat"):
            raise InvalidRequest("mode must be 'workflow' or 'chat'")
        if not app_key.startswith("app-"):
            raise InvalidRequest("a Dify app key starts with 'app-' (Dify → app → API Access)")
        sealed = self.box.seal(app_key, _app_context(tenant, name))
        async with self.runtime.sessions() as s:
            await s.execute(
                text(
                    """
                    INSERT INTO facade_apps (id, tenant_id, name, mode, dify_url, app_key_sealed,
                        description)
                    VALUES (:id, :tenant, :name, :mode, :url, :sealed, :description)
                    ON CONFLICT (tenant_id, name) DO UPDATE SET mode = EXCLUDED.mode,
                        dify_url = EXCLUDED.dify_url, app_key_sealed = EXCLUDED.app_key_sealed,
                        description = EXCLUDED.description, updated_at = now()
                    """
                ),
                {
                    "id": uuid.uuid4().hex,
                    "tenant": tenant,
                    "name": name,
                    "mode": mode,
                    "url": dify_url.rstrip("/"),
                    "sealed": sealed,
                    "description": description,
                },
            )
            await s.commit()
        app = await self.get(tenant, name)
        assert app is not None
        return app

    async def get(self, tenant: str, name: str) -> RegisteredApp | None:
        async with self.runtime.sessions() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT tenant_id, name, mode, dify_url, description, created_at, "
                        "app_key_sealed FROM facade_apps WHERE tenant_id = :tenant AND name = :name"
                    ),
                    {"tenant": tenant, "name": name},
                )
            ).first()
        return RegisteredApp(*row) if row else None

    async def list(self, tenant: str) -> list[RegisteredApp]:
        async with self.runtime.sessions() as s:
            rows = await s.execute(
                text(
                    "SELECT tenant_id, name, mode, dify_url, description, created_at "
                    "FROM facade_apps WHERE tenant_id = :tenant ORDER BY name"
                ),
                {"tenant": tenant},
            )
            return [RegisteredApp(*r) for r in rows]

    async def remove(self, tenant: str, name: str) -> bool:
        async with self.runtime.sessions() as s:
            result = await s.execute(
                text("DELETE FROM facade_apps WHERE tenant_id = :tenant AND name = :name"),
                {"tenant": tenant, "name": name},
            )
            await s.commit()
        return bool(getattr(result, "rowcount", 0))

    async def app_key(self, app: RegisteredApp) -> str:
        """The Dify key of ``app``, opened for one call (never returned by an API)."""
        if app.sealed_key:
            return self.box.open(app.sealed_key, _app_context(app.tenant_id, app.name))
        async with self.runtime.sessions() as s:
            sealed = (
                await s.execute(
                    text(
                        "SELECT app_key_sealed FROM facade_apps "
                        "WHERE tenant_id = :tenant AND name = :name"
                    ),
                    {"tenant": app.tenant_id, "name": app.name},
                )
            ).scalar_one()
        return self.box.open(sealed, _app_context(app.tenant_id, app.name))

    async def callback_secret(self, tenant: str, *, rotate: bool = False) -> str:
        """The tenant's callback signing secret, created on first use (or replaced)."""
        import secrets as _secrets

        async with self.runtime.sessions() as s:
            row = (
                await s.execute(
                    text(
                        "SELECT callback_secret_sealed FROM facade_tenant_secrets "
                        "WHERE tenant_id = :tenant"
                    ),
                    {"tenant": tenant},
                )
            ).first()
            if row is not None and not rotate:
                return self.box.open(row[0], _secret_context(tenant))
            secret = "whsec_" + _secrets.token_urlsafe(32)
            await s.execute(
                text(
                    """
                    INSERT INTO facade_tenant_secrets (tenant_id, callback_secret_sealed)
                    VALUES (:tenant, :sealed)
                    ON CONFLICT (tenant_id) DO UPDATE
                        SET callback_secret_sealed = EXCLUDED.callback_secret_sealed,
                            created_at = now()
                    """
                ),
                {"tenant": tenant, "sealed": self.box.seal(secret, _secret_context(tenant))},
            )
            await s.commit()
            return secret


# ---------------------------------------------------------------- requests and results


class RunRequest(BaseModel):
    """``POST /v1/apps/{app}/run``."""

    inputs: dict[str, Any] = Field(
        default_factory=dict, description="the app's input variables (Dify `inputs`)"
    )
    query: str | None = Field(
        default=None, description="chat apps: the user message (required for chat)"
    )
    conversation_id: str | None = Field(
        default=None, max_length=64, description="chat apps: continue a Dify conversation"
    )
    user: str | None = Field(
        default=None,
        max_length=128,
        description="end-user label Dify records (default: the calling client)",
    )
    response_mode: Delivery = Field(
        default="blocking",
        description="blocking: result in the response; streaming: SSE; async: 202 + callback",
    )
    callback_url: str | None = Field(
        default=None, max_length=2048, description="async: where the signed result is POSTed"
    )


def request_hash(app: str, body: RunRequest) -> str:
    """SHA-256 of the canonical request (the Idempotency-Key's fingerprint)."""
    canonical = json.dumps(
        {"app": app, **body.model_dump()}, sort_keys=True, separators=(",", ":"), default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def sign_callback(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=<hex HMAC-SHA256(secret, "<timestamp>." ‖ body)>``, the signature header."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify_callback(
    secret: str, timestamp: str, body: bytes, signature: str, *, tolerance_s: int = 300
) -> bool:
    """The receiver's check (documented in docs/erp-facade.md; the example client uses the
    same steps): a fresh timestamp and a matching HMAC, compared in constant time."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign_callback(secret, ts, body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature.split(",") if part)


@dataclass(slots=True)
class RunRecord:
    """One run as stored and as ``GET /v1/runs/{id}`` shows it."""

    id: str
    tenant_id: str
    app: str
    mode: AppMode
    delivery: Delivery
    status: str
    request_hash: str
    created_at: datetime
    finished_at: datetime | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    workflow_run_id: str | None = None
    task_id: str | None = None
    conversation_id: str | None = None
    message_id: str | None = None
    callback_status: str | None = None
    callback_attempts: int = 0
    replayed: bool = False

    def to_dict(self) -> dict[str, Any]:
        result = self.result or {}
        return {
            "id": self.id,
            "app": self.app,
            "mode": self.mode,
            "response_mode": self.delivery,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "outputs": result.get("outputs"),
            "answer": result.get("answer"),
            "citations": result.get("citations"),
            "usage": result.get("usage"),
            "pii": result.get("pii"),
            "workflow_run_id": self.workflow_run_id,
            "conversation_id": self.conversation_id,
            "message_id": self.message_id,
            "error": self.error,
            "recovered": bool(result.get("recovered")),
            "pii_restored": bool(result.get("pii_restored", True)),
            "callback": (
                {"status": self.callback_status, "attempts": self.callback_attempts}
                if self.delivery == "async"
                else None
            ),
            "replayed": self.replayed,
        }


_RUN_COLUMNS = (
    "id, tenant_id, app_name, mode, delivery, status, request_hash, created_at, finished_at, "
    "result, error, workflow_run_id, task_id, conversation_id, message_id, callback_status, "
    "callback_attempts"
)


_INSERT_RUN = text(
    """
    INSERT INTO facade_runs (id, tenant_id, app_name, subject, client_id, mode, delivery, status,
        idempotency_key, request_hash, callback_url, callback_status, created_at, expires_at,
        dify_user_sealed, owner, lease_until)
    VALUES (:id, :tenant, :app, :subject, :client, :mode, :delivery, :status, :key, :hash,
        :callback, :callback_status, :created, :expires, :dify_user, :owner,
        now() + make_interval(secs => CAST(:lease AS double precision)))
    """
)
_FINISH_RUN = text(
    """
    UPDATE facade_runs SET status = :status, result = CAST(:result AS jsonb),
        error = CAST(:error AS jsonb), workflow_run_id = :wf, task_id = :task,
        conversation_id = :conv, message_id = :msg, finished_at = :finished,
        owner = NULL, lease_until = NULL
    WHERE id = :id
    """
)


def _record(row: Any) -> RunRecord:
    return RunRecord(*row)


# Durable async runs: every write of a leased run is conditional on this process still
# owning it (``owner``), so a process that stalled past its lease cannot overwrite (or call
# back for) a run another process took over.
_LEASE = "now() + make_interval(secs => CAST(:lease AS double precision))"
_CLAIM = text(
    f"""
    UPDATE facade_runs SET owner = :owner, lease_until = {_LEASE}
    WHERE id IN (
        SELECT id FROM facade_runs
        WHERE ((delivery = 'async'
                AND (status = 'running' OR callback_status = 'pending')
                AND (lease_until IS NULL OR lease_until < now())
                AND (status = 'running' OR callback_next_attempt_at IS NULL
                     OR callback_next_attempt_at <= now()))
            OR (delivery <> 'async' AND status = 'running'
                AND (lease_until < now()
                     -- rows of a release that wrote no lease: past any request's life
                     OR (lease_until IS NULL
                         AND created_at < now() - make_interval(
                             secs => CAST(:unleased_after AS double precision))))))
        ORDER BY created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
      AND (lease_until IS NULL OR lease_until < now())
    RETURNING id
    """
)
_RENEW_LEASES = text(
    f"UPDATE facade_runs SET lease_until = {_LEASE} "
    "WHERE owner = :owner AND id = ANY(CAST(:ids AS varchar[])) RETURNING id"
)
_SAVE_PII = text(
    "UPDATE facade_runs SET pii_inbound = CAST(:pii AS jsonb) "
    "WHERE id = :id AND owner = :owner RETURNING id"
)
_SAVE_IDS = text(
    """
    UPDATE facade_runs SET workflow_run_id = :wf, task_id = :task, conversation_id = :conv,
        message_id = :msg
    WHERE id = :id AND owner = :owner RETURNING id
    """
)
_FINISH_OWNED = text(
    """
    UPDATE facade_runs SET status = :status, result = CAST(:result AS jsonb),
        error = CAST(:error AS jsonb), workflow_run_id = :wf, task_id = :task,
        conversation_id = :conv, message_id = :msg, finished_at = :finished,
        callback_next_attempt_at = now()
    WHERE id = :id AND owner = :owner AND status = 'running' RETURNING id
    """
)
_CALLBACK_RETRY = text(
    """
    UPDATE facade_runs SET callback_attempts = :n, callback_error = :error,
        callback_next_attempt_at = now() + make_interval(secs => CAST(:delay AS double precision))
    WHERE id = :id AND owner = :owner RETURNING id
    """
)
_CALLBACK_DONE = text(
    """
    UPDATE facade_runs SET callback_status = :status, callback_attempts = :n,
        callback_error = :error, callback_delivered_at = :delivered,
        callback_next_attempt_at = NULL, owner = NULL, lease_until = NULL
    WHERE id = :id AND owner = :owner RETURNING id
    """
)

_FAIL_INTERRUPTED = text(
    """
    UPDATE facade_runs SET status = 'failed', result = CAST(:result AS jsonb),
        error = CAST(:error AS jsonb), finished_at = :finished, owner = NULL, lease_until = NULL
    WHERE id = :id AND owner = :owner AND status = 'running' RETURNING id
    """
)

INTERRUPTED = "interrupted_before_start"
"""The error code of an async run whose process died before Dify acknowledged it."""
REQUEST_INTERRUPTED = "interrupted"
"""The error code of a blocking or streaming run whose process died (or whose streaming
client went away) before the run ended."""


def _id_params(record: RunRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "wf": record.workflow_run_id,
        "task": record.task_id,
        "conv": record.conversation_id,
        "msg": record.message_id,
    }


# ---------------------------------------------------------------- PII


@dataclass(slots=True)
class _Guard:
    """The tenant's PII policy for one run: prompt surface in, response surface out."""

    guard: PiiGuard | None
    tenant: str
    pseudonymizer: Pseudonymizer | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def _apply(self, value: str, surface: str) -> str:
        if self.guard is None or not value:
            return value
        from llmflow.pii.config import Surface

        result = self.guard.apply(
            value, Surface(surface), tenant=self.tenant, pseudonymizer=self.pseudonymizer
        )
        for entity, n in result.counts.items():
            self.counts[entity] = self.counts.get(entity, 0) + n
        if surface == "prompt":
            self.pseudonymizer = result.pseudonymizer or self.pseudonymizer
        return result.text

    def inbound(self, value: Any) -> Any:
        return _map_strings(value, lambda s: self._apply(s, "prompt"))

    def outbound_text(self, value: str) -> str:
        guarded = self._apply(value, "response")
        return self.pseudonymizer.restore(guarded) if self.pseudonymizer else guarded

    def outbound(self, value: Any) -> Any:
        return _map_strings(value, self.outbound_text)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


# ---------------------------------------------------------------- Dify shapes


def dify_body(
    app: RegisteredApp, req: RunRequest, inputs: Any, query: str | None, user: str, streaming: bool
) -> tuple[str, dict[str, Any]]:
    """The Dify service-API path and body of one run."""
    mode = "streaming" if streaming else "blocking"
    if app.mode == "workflow":
        return "/workflows/run", {"inputs": inputs, "response_mode": mode, "user": user}
    body: dict[str, Any] = {
        "inputs": inputs,
        "query": query or "",
        "response_mode": mode,
        "user": user,
    }
    if req.conversation_id:
        body["conversation_id"] = req.conversation_id
    return "/chat-messages", body


def parse_blocking(
    mode: AppMode, body: Mapping[str, Any]
) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(status, result, ids) of a blocking Dify answer."""
    if mode == "workflow":
        data = body.get("data") or {}
        status = str(data.get("status") or "failed")
        result = {
            "outputs": data.get("outputs") or {},
            "usage": {
                "total_tokens": data.get("total_tokens"),
                "total_steps": data.get("total_steps"),
                "elapsed_s": data.get("elapsed_time"),
            },
        }
        ids = {
            "workflow_run_id": body.get("workflow_run_id") or data.get("id"),
            "task_id": body.get("task_id"),
        }
        if status != "succeeded":
            result["dify_error"] = data.get("error")
        return ("succeeded" if status == "succeeded" else "failed"), result, ids
    metadata = body.get("metadata") or {}
    result = {
        "answer": body.get("answer") or "",
        "usage": metadata.get("usage"),
        "citations": metadata.get("retriever_resources") or [],
    }
    ids = {
        "conversation_id": body.get("conversation_id"),
        "message_id": body.get("message_id") or body.get("id"),
        "task_id": body.get("task_id"),
    }
    return "succeeded", result, ids


def frame(event: str, data: Mapping[str, Any]) -> bytes:
    """One SSE frame of the facade's stream (docs/erp-facade.md lists the events)."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def dify_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of Dify's SSE stream (``event: ping`` frames become ``{"event":
    "ping"}``)."""
    data_lines: list[str] = []
    event_name: str | None = None
    async for line in response.aiter_lines():
        if line == "":
            if data_lines:
                try:
                    item = json.loads("\n".join(data_lines))
                except ValueError:
                    item = None
                if isinstance(item, dict):
                    yield item
            elif event_name == "ping":
                yield {"event": "ping"}
            data_lines, event_name = [], None
        elif line.startswith("data:"):
            data_lines.append(line[5:].lstrip())
        elif line.startswith("event:"):
            event_name = line[6:].strip()
    if data_lines:
        with contextlib.suppress(ValueError):
            item = json.loads("\n".join(data_lines))
            if isinstance(item, dict):
                yield item


Outcome = tuple[str, dict[str, Any], dict[str, Any] | None]
"""``(status, result, error)`` of a finished Dify run; the result not yet PII-guarded."""


@dataclass(slots=True)
class DifyStreamOutcome:
    """What an async run learns from Dify's SSE stream: the run's ids as soon as an event
    carries them, then its result (``workflow_finished`` / ``message_end``) or its error."""

    mode: AppMode
    ids: dict[str, str] = field(default_factory=dict)
    answer: list[str] = field(default_factory=list)
    outputs: dict[str, Any] | None = None
    usage: Any = None
    citations: Any = None
    status: str | None = None
    error: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status is not None

    def feed(self, event: Mapping[str, Any]) -> bool:
        """Take one event; True when it brought an id not seen before."""
        raw = event.get("data")
        data: Mapping[str, Any] = raw if isinstance(raw, dict) else {}
        kind = event.get("event")
        found = {
            "task_id": event.get("task_id"),
            "workflow_run_id": event.get("workflow_run_id")
            or (data.get("id") if kind == "workflow_started" else None),
            "conversation_id": event.get("conversation_id"),
            "message_id": event.get("message_id")
            or (event.get("id") if kind in ("message", "agent_message", "message_end") else None),
        }
        new = False
        for key, value in found.items():
            if value and key not in self.ids:
                self.ids[key] = str(value)
                new = True
        if kind in ("message", "agent_message"):
            self.answer.append(str(event.get("answer") or ""))
        elif kind == "message_replace":
            self.answer = [str(event.get("answer") or "")]
        elif kind == "message_end":
            meta = event.get("metadata") or {}
            self.usage, self.citations = meta.get("usage"), meta.get("retriever_resources")
            if self.mode == "chat" and self.status is None:
                self.status = "succeeded"
        elif kind == "workflow_finished":
            state = workflow_run_state(data, self.ids.get("workflow_run_id", ""))
            if state is not None and (self.mode == "workflow" or state[0] == "failed"):
                self.status, result, self.error = state
                self.outputs, self.usage = result.get("outputs"), result.get("usage")
        elif kind == "error":
            self.status = "failed"
            self.error = {
                "code": str(event.get("code") or "dify_error"),
                "message": str(event.get("message") or ""),
            }
        return new

    def refused(self, response: httpx.Response) -> None:
        """Dify refused the run (an HTTP error before any event)."""
        try:
            err = response.json()
        except ValueError:
            err = {}
        if not isinstance(err, dict):
            err = {}
        self.status = "failed"
        self.error = {
            "code": str(err.get("code") or f"http_{response.status_code}"),
            "message": str(err.get("message") or "Dify refused the run"),
            "dify_status": response.status_code,
        }

    def broken(self, exc: Exception) -> None:
        """The stream failed; the run is finished only if Dify never acknowledged it."""
        if self.status is None and not self.ids:
            self.status = "failed"
        if self.status == "failed" and self.error is None:
            self.error = {"code": "dify_unreachable", "message": str(exc) or type(exc).__name__}

    def apply_ids(self, record: RunRecord) -> None:
        record.task_id = self.ids.get("task_id") or record.task_id
        record.workflow_run_id = self.ids.get("workflow_run_id") or record.workflow_run_id
        record.conversation_id = self.ids.get("conversation_id") or record.conversation_id
        record.message_id = self.ids.get("message_id") or record.message_id

    def outcome(self) -> Outcome:
        if self.status is None:  # the stream ended without Dify's last event
            return (
                "failed",
                {},
                {
                    "code": "dify_stream_incomplete",
                    "message": "Dify's event stream ended before the run finished",
                },
            )
        if self.status == "failed":
            return "failed", {}, self.error
        if self.mode == "workflow":
            return "succeeded", {"outputs": self.outputs or {}, "usage": self.usage}, None
        answer = {"answer": "".join(self.answer), "citations": self.citations or []}
        return "succeeded", {**answer, "usage": self.usage}, None


def _json_field(value: Any) -> Any:
    # Dify releases before 1.x marshalled some run fields as the JSON text of the column.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def workflow_run_state(detail: Any, run_id: str) -> Outcome | None:
    """A workflow run as Dify records it (``GET /v1/workflows/run/{id}``, or the ``data`` of
    ``workflow_finished``): None while it runs.

    Dify 1.14.2 (``api/controllers/service_api/app/workflow.py``, ``workflow_run_fields``):
    ``{"id", "workflow_id", "status", "inputs", "outputs", "error", "total_steps",
    "total_tokens", "created_at", "finished_at", "elapsed_time"}``; ``status`` is
    ``running``, ``succeeded``, ``failed``, ``stopped`` or ``partial-succeeded`` (later
    releases add ``paused``, which keeps waiting here). Older releases answered an unknown id
    with 200 and every field null: that is a 404 here.
    """
    if not isinstance(detail, dict) or not detail.get("id"):
        raise DifyError(
            404,
            "not_found",
            "Workflow run not found.",
            method="GET",
            path=f"/workflows/run/{run_id}",
        )
    status = str(detail.get("status") or "")
    outputs = _json_field(detail.get("outputs"))
    result: dict[str, Any] = {
        "outputs": outputs if isinstance(outputs, dict) else {},
        "usage": {
            "total_tokens": detail.get("total_tokens"),
            "total_steps": detail.get("total_steps"),
            "elapsed_s": detail.get("elapsed_time"),
        },
    }
    if status in ("succeeded", "partial-succeeded"):
        return "succeeded", result, None
    if status in ("failed", "stopped"):
        code = "dify_run_failed" if status == "failed" else "dify_run_stopped"
        return "failed", result, {"code": code, "message": str(detail.get("error") or status)}
    return None


def message_state(page: Any, message_id: str) -> Outcome | None:
    """A chat message as Dify records it, found in ``GET /v1/messages?conversation_id=…&
    user=…&limit=100`` (the newest first page): None while the answer is being written.

    Dify 1.14.2 (``api/controllers/service_api/app/message.py``, ``MessageListItem`` in
    ``api/fields/message_fields.py``): ``{"limit", "has_more", "data": [{"id",
    "conversation_id", "query", "answer", "status": "normal" | "error", "error",
    "retriever_resources", "message_tokens", "answer_tokens", "provider_response_latency",
    …}]}``. Dify writes ``answer`` when the message ends, so an empty answer of a
    ``normal`` message means it is still being generated.
    """
    items = page.get("data") if isinstance(page, dict) else None
    message = next(
        (m for m in items or [] if isinstance(m, dict) and m.get("id") == message_id), None
    )
    if message is None:
        raise DifyError(404, "not_found", "Message Not Exists.", method="GET", path="/messages")
    answer = str(message.get("answer") or "")
    if message.get("status") == "error":
        error = {"code": "dify_run_failed", "message": str(message.get("error") or "error")}
        return "failed", {}, error
    latency = message.get("provider_response_latency")
    if not answer and not (isinstance(latency, int | float) and latency > 0):
        return None
    usage = None
    if "message_tokens" in message or "answer_tokens" in message:
        prompt, completion = message.get("message_tokens") or 0, message.get("answer_tokens") or 0
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    citations = message.get("retriever_resources") or []
    return "succeeded", {"answer": answer, "citations": citations, "usage": usage}, None


# ---------------------------------------------------------------- the service


@dataclass(slots=True)
class RunStart:
    """A run to perform, or the stored run an idempotent retry gets back."""

    record: RunRecord
    app: RegisteredApp
    fresh: bool
    pending_insert: dict[str, Any] | None = None
    """Row values of a run not yet written (un-keyed blocking runs)."""


class FacadeService:
    """Runs registered Dify apps for machine clients (one per runtime: :func:`facade`)."""

    def __init__(
        self,
        runtime: Runtime,
        settings: FacadeSettings,
        box: SecretBox,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        callback_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.apps = AppRegistry(runtime, box)
        self.transport = transport
        self.callback_transport = callback_transport
        self._tasks: set[asyncio.Task[None]] = set()
        self._services: dict[tuple[str, str], DifyService] = {}
        self.owner = f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        """This process's name on the async runs it leases (unique per service instance)."""
        self._leased: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        """Blocking and streaming runs whose request this process is serving (leased)."""
        self._lease_keeper: asyncio.Task[None] | None = None
        self._recovery: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        for loop in (self._recovery, self._lease_keeper):
            if loop is not None:
                loop.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(
            *self._tasks,
            *(t for t in (self._recovery, self._lease_keeper) if t is not None),
            return_exceptions=True,
        )
        await self._release_leases()
        for service in self._services.values():
            await service.aclose()
        self._services.clear()

    async def _service(self, app: RegisteredApp) -> DifyService:
        # One client per app and key: connections to Dify are reused across runs.
        key = await self.apps.app_key(app)
        cache_key = (app.dify_url, hashlib.sha256(key.encode()).hexdigest())
        service = self._services.get(cache_key)
        if service is None:
            service = DifyService.with_key(
                app.dify_url,
                key,
                transport=self.transport,
                timeout=httpx.Timeout(self.settings.dify_timeout_s, connect=5.0),
            )
            self._services[cache_key] = service
        return service

    async def _guard(self, tenant: str) -> _Guard:
        guard = await self.runtime.pii_guard() if self.settings.pii_guard else None
        return _Guard(guard, tenant)

    def check_callback(self, url: str | None) -> None:
        from urllib.parse import urlsplit

        if url is None:
            raise InvalidRequest("response_mode 'async' needs a callback_url")
        parts = urlsplit(url)
        allowed = ("https", "http") if self.settings.allow_http_callbacks else ("https",)
        if parts.scheme not in allowed or not parts.hostname:
            raise InvalidRequest(f"callback_url must be an absolute {' or '.join(allowed)} URL")
        if self.settings.callback_hosts and parts.hostname not in self.settings.callback_hosts:
            raise InvalidRequest(f"callback host {parts.hostname!r} is not an allowed host")

    # -- idempotent start ------------------------------------------------------------
    async def start(
        self, principal: Principal, app: RegisteredApp, req: RunRequest, key: str | None
    ) -> RunStart:
        """The run record of this request: a new one, or the stored one of a retry."""
        digest = request_hash(app.name, req)
        now = datetime.now(UTC)
        record = RunRecord(
            id=uuid.uuid4().hex,
            tenant_id=principal.tenant_id,
            app=app.name,
            mode=app.mode,
            delivery=req.response_mode,
            status="running",
            request_hash=digest,
            created_at=now,
            conversation_id=req.conversation_id,
        )
        params = {
            "id": record.id,
            "tenant": record.tenant_id,
            "app": app.name,
            "subject": principal.subject,
            "client": principal.client_id,
            "mode": app.mode,
            "delivery": req.response_mode,
            "key": key,
            "hash": digest,
            "callback": req.callback_url,
            "callback_status": "pending" if req.response_mode == "async" else None,
            "created": now,
            "expires": now + timedelta(seconds=self.settings.idempotency_ttl_s),
            # Chat recovery must list the conversation as its Dify user; a label may name a
            # person, so it is stored sealed, and only for async runs.
            "dify_user": (
                self.apps.box.seal(_end_user(principal, req), _user_context(record.id))
                if req.response_mode == "async"
                else None
            ),
            # A run written before it ends is leased to this process from that first write
            # (see recover()); an un-keyed blocking run is written once it has ended.
            "owner": self.owner,
            "lease": self.settings.lease_s,
        }
        if key is None and req.response_mode == "blocking":
            # Nothing can replay or poll an un-keyed blocking run before it ends: one write,
            # at the end (:meth:`_finish`), saves a round trip on the request path.
            return RunStart(record, app, True, {**params, "owner": None, "lease": None})
        async with self.runtime.sessions() as s:
            if key is not None:
                # Keys past their TTL are released (the run itself stays readable).
                await s.execute(
                    text(
                        "UPDATE facade_runs SET idempotency_key = NULL WHERE tenant_id = :tenant "
                        "AND idempotency_key = :key AND expires_at < now()"
                    ),
                    {"tenant": record.tenant_id, "key": key},
                )
            try:
                await s.execute(_INSERT_RUN, {**params, "status": "running"})
                await s.commit()
            except IntegrityError:
                await s.rollback()
                if key is None:
                    raise
                return await self._replay(principal, app, key, digest)
        return RunStart(record, app, True)

    async def _replay(
        self, principal: Principal, app: RegisteredApp, key: str, digest: str
    ) -> RunStart:
        async with self.runtime.sessions() as s:
            row = (
                await s.execute(
                    text(
                        f"SELECT {_RUN_COLUMNS} FROM facade_runs "
                        "WHERE tenant_id = :tenant AND idempotency_key = :key"
                    ),
                    {"tenant": principal.tenant_id, "key": key},
                )
            ).first()
        if row is None:  # released between the insert and this read: a true race, retry
            raise Conflict("the Idempotency-Key was just released; retry the request")
        record = _record(row)
        if record.request_hash != digest or record.app != app.name:
            raise InvalidRequest(
                "Idempotency-Key was already used with a different request; use a new key"
            )
        record.replayed = True
        return RunStart(record, app, False)

    async def _finish(self, record: RunRecord, pending: dict[str, Any] | None = None) -> None:
        """Store the run's outcome (inserting the row of an un-keyed blocking run)."""
        record.finished_at = record.finished_at or datetime.now(UTC)
        values = {
            "id": record.id,
            "status": record.status,
            "result": json.dumps(record.result) if record.result is not None else None,
            "error": json.dumps(record.error) if record.error is not None else None,
            "wf": record.workflow_run_id,
            "task": record.task_id,
            "conv": record.conversation_id,
            "msg": record.message_id,
            "finished": record.finished_at,
        }
        async with self.runtime.sessions() as s:
            if pending is not None:
                await s.execute(_INSERT_RUN, {**pending, "status": record.status})
            # Unconditional: if recovery failed the run while this process stalled past its
            # lease, the outcome the client received is still the one stored.
            await s.execute(_FINISH_RUN, values)
            await s.commit()

    async def get(self, tenant: str, run_id: str) -> RunRecord:
        """A run of ``tenant`` (another tenant's run is 'not found', never 'forbidden')."""
        async with self.runtime.sessions() as s:
            row = (
                await s.execute(
                    text(
                        f"SELECT {_RUN_COLUMNS} FROM facade_runs "
                        "WHERE id = :id AND tenant_id = :tenant"
                    ),
                    {"id": run_id, "tenant": tenant},
                )
            ).first()
        if row is None:
            raise NotFound(f"run {run_id!r} does not exist")
        return _record(row)

    async def dify_detail(self, record: RunRecord) -> dict[str, Any] | None:
        """Dify's own view of a workflow run (``GET /v1/workflows/run/{id}``), if reachable."""
        if record.mode != "workflow" or not record.workflow_run_id:
            return None
        app = await self.apps.get(record.tenant_id, record.app)
        if app is None:
            return None
        service = await self._service(app)
        try:
            detail = await service.request("GET", f"/workflows/run/{record.workflow_run_id}")
        except (DifyError, httpx.HTTPError) as exc:
            log.info("Dify workflow run detail unavailable: %s", exc)
            return None
        if not isinstance(detail, dict):
            return None
        return {
            k: detail.get(k)
            for k in (
                "status",
                "elapsed_time",
                "total_steps",
                "total_tokens",
                "created_at",
                "finished_at",
            )
        }

    # -- blocking --------------------------------------------------------------------
    async def run_blocking(
        self, principal: Principal, start: RunStart, req: RunRequest
    ) -> RunRecord:
        """Call Dify in blocking mode and store the guarded result; a keyed run's row (written
        at the start) stays leased to this process meanwhile."""
        with self._holding(start.record.id, start.pending_insert is None):
            return await self._run_blocking(principal, start, req)

    async def _run_blocking(
        self, principal: Principal, start: RunStart, req: RunRequest
    ) -> RunRecord:
        record, app = start.record, start.app
        guard = await self._guard(principal.tenant_id)
        inputs, query = await asyncio.to_thread(guard.inbound, [req.inputs, req.query])
        path, body = dify_body(app, req, inputs, query, _end_user(principal, req), False)
        try:
            service = await self._service(app)
            answer = await service.request("POST", path, json=body)
            if not isinstance(answer, dict):
                raise DifyError(
                    502, "bad_answer", "Dify answered no JSON object", method="POST", path=path
                )
            status, result, ids = parse_blocking(app.mode, answer)
            result = await asyncio.to_thread(guard.outbound, result)
            record.status, record.result = status, result
            record.workflow_run_id = ids.get("workflow_run_id")
            record.task_id = ids.get("task_id")
            record.conversation_id = ids.get("conversation_id") or record.conversation_id
            record.message_id = ids.get("message_id")
            if status == "failed":
                record.error = {"code": "dify_run_failed", "message": str(result.get("dify_error"))}
        except DifyError as exc:
            record.status = "failed"
            record.error = {"code": exc.code, "message": exc.message, "dify_status": exc.status}
        except httpx.HTTPError as exc:
            record.status = "failed"
            record.error = {"code": "dify_unreachable", "message": str(exc) or type(exc).__name__}
        except LLMFlowError as exc:  # a PII block: nothing was sent, or nothing is returned
            record.status = "failed"
            record.error = {"code": exc.code, "message": exc.detail}
            await self._finish(record, start.pending_insert)
            raise
        if guard.counts:
            (record.result or {}).setdefault("pii", dict(sorted(guard.counts.items())))
        await self._finish(record, start.pending_insert)
        return record

    # -- streaming -------------------------------------------------------------------
    async def run_streaming(
        self, principal: Principal, start: RunStart, req: RunRequest
    ) -> AsyncIterator[bytes]:
        """Dify's SSE stream re-framed (``run.started``, ``run.delta``, ``run.step``,
        ``run.completed`` / ``run.failed``; ``: ping`` comments). The run's row stays leased
        to this process while the stream runs; a client that goes away leaves it to
        recovery, which fails it ``interrupted`` once the lease has passed."""
        with self._holding(start.record.id, True):
            async with contextlib.aclosing(self._run_streaming(principal, start, req)) as frames:
                async for chunk in frames:
                    yield chunk

    async def _run_streaming(
        self, principal: Principal, start: RunStart, req: RunRequest
    ) -> AsyncGenerator[bytes, None]:
        record, app = start.record, start.app
        guard = await self._guard(principal.tenant_id)
        inputs, query = await asyncio.to_thread(guard.inbound, [req.inputs, req.query])
        path, body = dify_body(app, req, inputs, query, _end_user(principal, req), True)
        yield frame("run.started", {"run_id": record.id, "app": app.name, "mode": app.mode})
        pending = ""
        text_parts: list[str] = []
        outputs: dict[str, Any] | None = None
        usage: Any = None
        citations: Any = None
        failed: dict[str, Any] | None = None
        limit = self.settings.stream_flush_chars

        async def flush(final: bool) -> bytes | None:
            nonlocal pending
            if not pending:
                return None
            cut = len(pending)
            if not final:
                cut = max(pending.rfind("\n"), pending.rfind(" "))
                if cut <= 0:
                    return None
                cut += 1
            segment, pending = pending[:cut], pending[cut:]
            guarded = await asyncio.to_thread(guard.outbound_text, segment)
            text_parts.append(guarded)
            return frame("run.delta", {"text": guarded})

        try:
            service = await self._service(app)
            async with service.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    try:
                        err = response.json()
                    except ValueError:
                        err = {}
                    failed = {
                        "code": str(err.get("code") or f"http_{response.status_code}"),
                        "message": str(err.get("message") or "Dify refused the run"),
                        "dify_status": response.status_code,
                    }
                else:
                    async for event in dify_events(response):
                        kind = event.get("event")
                        raw = event.get("data")
                        data: dict[str, Any] = raw if isinstance(raw, dict) else {}
                        record.task_id = event.get("task_id") or record.task_id
                        if kind == "ping":
                            yield b": ping\n\n"
                        elif kind in ("message", "agent_message") or kind == "text_chunk":
                            chunk = (
                                event.get("answer") if kind != "text_chunk" else data.get("text")
                            )
                            pending += str(chunk or "")
                            record.conversation_id = (
                                event.get("conversation_id") or record.conversation_id
                            )
                            record.message_id = event.get("message_id") or record.message_id
                            if len(pending) >= limit or "\n" in pending:
                                out = await flush(False)
                                if out:
                                    yield out
                        elif kind == "message_replace":
                            pending, text_parts = str(event.get("answer") or ""), []
                        elif kind == "workflow_started":
                            record.workflow_run_id = event.get("workflow_run_id") or data.get("id")
                        elif kind == "node_finished":
                            step = {
                                "node": data.get("title") or data.get("node_id"),
                                "type": data.get("node_type"),
                                "status": data.get("status"),
                            }
                            yield frame("run.step", step)
                        elif kind == "workflow_finished":
                            if data.get("status") not in (None, "succeeded"):
                                failed = {
                                    "code": "dify_run_failed",
                                    "message": str(data.get("error") or data.get("status")),
                                }
                            outputs = data.get("outputs") or {}
                            usage = {
                                "total_tokens": data.get("total_tokens"),
                                "total_steps": data.get("total_steps"),
                                "elapsed_s": data.get("elapsed_time"),
                            }
                        elif kind == "message_end":
                            meta = event.get("metadata") or {}
                            usage, citations = meta.get("usage"), meta.get("retriever_resources")
                        elif kind == "error":
                            failed = {
                                "code": str(event.get("code") or "dify_error"),
                                "message": str(event.get("message") or ""),
                            }
        except (DifyError, httpx.HTTPError) as exc:
            failed = {"code": "dify_unreachable", "message": str(exc) or type(exc).__name__}
        except LLMFlowError as exc:
            failed = {"code": exc.code, "message": exc.detail}
        last = await flush(True)
        if last:
            yield last
        if failed is not None:
            record.status, record.error = "failed", failed
            await self._finish(record)
            yield frame("run.failed", {"run_id": record.id, "error": failed})
            return
        result: dict[str, Any] = {"usage": usage}
        if app.mode == "workflow":
            result["outputs"] = await asyncio.to_thread(guard.outbound, outputs or {})
        else:
            result["answer"] = "".join(text_parts)
            result["citations"] = citations or []
        if guard.counts:
            result["pii"] = dict(sorted(guard.counts.items()))
        record.status, record.result = "succeeded", result
        await self._finish(record)
        yield frame("run.completed", record.to_dict())

    # -- async with callback (durable: see the module docstring) ------------------------
    def run_async(
        self,
        principal: Principal,
        start: RunStart,
        req: RunRequest,
        on_done: Callable[[RunRecord], Any] | None = None,
    ) -> None:
        """Run in the background under this process's lease, then deliver the signed
        callback (retries with back-off); :meth:`recover` finishes it if the process dies."""
        assert req.callback_url is not None
        url = req.callback_url

        async def job() -> None:
            record = await self._execute_async(principal, start, req)
            if record is None:  # another process took the run over (this one had stalled)
                return
            if on_done is not None:
                try:
                    await on_done(record)
                except Exception:
                    log.exception("recording the outcome of run %s failed", record.id)
            await self._deliver_logged(record, url)

        self._lease(start.record.id, job())

    def _lease(self, run_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` for ``run_id`` in the background, renewing the run's lease meanwhile."""

        async def logged() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:  # the lease runs out and recovery takes the run: log why
                log.exception("async run %s stopped on an error", run_id)

        task = asyncio.create_task(logged(), name=f"facade-run-{run_id}")
        self._tasks.add(task)
        self._leased[run_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            if self._leased.get(run_id) is t:
                del self._leased[run_id]

        task.add_done_callback(done)
        self._ensure_lease_keeper()

    @contextlib.contextmanager
    def _holding(self, run_id: str, leased: bool) -> Iterator[None]:
        """Renew the lease of a blocking or streaming run while its request is served."""
        if not leased:
            yield
            return
        self._held.add(run_id)
        self._ensure_lease_keeper()
        try:
            yield
        finally:
            self._held.discard(run_id)

    def _ensure_lease_keeper(self) -> None:
        if self._lease_keeper is None or self._lease_keeper.done():
            self._lease_keeper = asyncio.create_task(self._keep_leases(), name="facade-leases")

    async def _keep_leases(self) -> None:
        """Renew the leases of this process's runs every third of ``lease_s``; an async run
        whose row another process claimed meanwhile (this one stalled past its lease) stops.
        A blocking or streaming run goes on (its client is waiting): its outcome is stored
        over recovery's ``interrupted`` when it ends."""
        period = max(self.settings.lease_s / 3, 0.05)
        while self._leased or self._held:
            await asyncio.sleep(period)
            ids = list(self._leased) + sorted(self._held - set(self._leased))
            if not ids:
                break
            try:
                async with self.runtime.sessions() as s:
                    rows = await s.execute(
                        _RENEW_LEASES,
                        {"owner": self.owner, "ids": ids, "lease": self.settings.lease_s},
                    )
                    kept = {str(r[0]) for r in rows}
                    await s.commit()
            except Exception:  # the database may be restarting: the next round retries
                log.warning("renewing the leases of %d async runs failed", len(ids), exc_info=True)
                continue
            for run_id in ids:
                task = self._leased.get(run_id)
                if run_id not in kept and task is not None and not task.done():
                    log.warning("async run %s is no longer leased to this process", run_id)
                    task.cancel()
                elif run_id not in kept and run_id in self._held:
                    log.warning("run %s lost its lease while its request is still served", run_id)

    async def _release_leases(self) -> None:
        """Shutdown: let another process (or the restarted one) take this one's runs now."""
        try:
            async with self.runtime.sessions() as s:
                await s.execute(
                    text(
                        "UPDATE facade_runs SET lease_until = now() "
                        "WHERE owner = :owner AND lease_until > now()"
                    ),
                    {"owner": self.owner},
                )
                await s.commit()
        except Exception:  # the leases then simply run out
            log.info("releasing the async run leases failed", exc_info=True)

    async def _owned_write(self, statement: Any, params: dict[str, Any]) -> bool:
        """Run an ``… WHERE id = :id AND owner = :owner RETURNING id`` statement; False when
        the run is no longer this process's."""
        async with self.runtime.sessions() as s:
            row = (await s.execute(statement, {**params, "owner": self.owner})).first()
            await s.commit()
        return row is not None

    async def _execute_async(
        self, principal: Principal, start: RunStart, req: RunRequest
    ) -> RunRecord | None:
        """Dify in streaming mode, its ids stored as soon as they arrive; the finished
        record, or None when the run is no longer this process's."""
        record, app = start.record, start.app
        guard = await self._guard(principal.tenant_id)
        try:
            inputs, query = await asyncio.to_thread(guard.inbound, [req.inputs, req.query])
        except LLMFlowError as exc:  # a PII block: nothing was sent
            record.status, record.error = "failed", {"code": exc.code, "message": exc.detail}
            return record if await self._finish_owned(record) else None
        pseudonyms = len(guard.pseudonymizer.mapping) if guard.pseudonymizer else 0
        inbound = {"counts": dict(sorted(guard.counts.items())), "pseudonyms": pseudonyms}
        if not await self._owned_write(_SAVE_PII, {"id": record.id, "pii": json.dumps(inbound)}):
            return None
        path, body = dify_body(app, req, inputs, query, _end_user(principal, req), True)
        stream = DifyStreamOutcome(app.mode)
        service: DifyService | None = None
        try:
            service = await self._service(app)
            async with service.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    await response.aread()
                    stream.refused(response)
                else:
                    async for event in dify_events(response):
                        if stream.feed(event):
                            stream.apply_ids(record)
                            if not await self._owned_write(_SAVE_IDS, _id_params(record)):
                                return None
        except (DifyError, httpx.HTTPError) as exc:
            stream.broken(exc)
        stream.apply_ids(record)
        if stream.finished or service is None:
            status, result, error = stream.outcome()
        else:
            # The stream broke after Dify had started the run, which goes on there: read its
            # end from Dify's record (as a recovering process would).
            waited = await self._await_dify(service, record, _end_user(principal, req))
            status, result, error = waited if waited is not None else stream.outcome()
        if result:
            result = await asyncio.to_thread(guard.outbound, result)
        if guard.counts:
            result["pii"] = dict(sorted(guard.counts.items()))
        record.status, record.result, record.error = status, result, error
        return record if await self._finish_owned(record) else None

    async def _finish_owned(self, record: RunRecord) -> bool:
        """Store an async run's outcome if the run is still this process's (and running);
        its callback is then due."""
        record.finished_at = record.finished_at or datetime.now(UTC)
        return await self._owned_write(
            _FINISH_OWNED,
            {
                **_id_params(record),
                "status": record.status,
                "result": json.dumps(record.result) if record.result is not None else None,
                "error": json.dumps(record.error) if record.error is not None else None,
                "finished": record.finished_at,
            },
        )

    # -- Dify's record of a started run ------------------------------------------------
    async def _await_dify(
        self, service: DifyService, record: RunRecord, user: str | None
    ) -> Outcome | None:
        """Wait until Dify has finished a run it started: ``(status, result, error)`` with
        the result unguarded; None when no id of the run in Dify is known."""
        fetch: Callable[[], Awaitable[Outcome | None]]
        if record.mode == "workflow" and record.workflow_run_id:
            run_id = record.workflow_run_id

            async def fetch_workflow() -> Outcome | None:
                return workflow_run_state(
                    await service.request("GET", f"/workflows/run/{run_id}"), run_id
                )

            fetch = fetch_workflow
        elif record.mode == "chat" and record.message_id and record.conversation_id and user:
            params = {"conversation_id": record.conversation_id, "user": user, "limit": 100}
            message_id = record.message_id

            async def fetch_message() -> Outcome | None:
                return message_state(
                    await service.request("GET", "/messages", params=params), message_id
                )

            fetch = fetch_message
        else:
            return None
        deadline = record.created_at + timedelta(seconds=self.settings.recovery_max_wait_s)
        while True:
            try:
                state = await fetch()
            except DifyError as exc:
                if exc.status < 500 and exc.status not in (408, 429):
                    return (
                        "failed",
                        {},
                        {
                            "code": "dify_run_not_found" if exc.status == 404 else exc.code,
                            "message": exc.message,
                            "dify_status": exc.status,
                        },
                    )
                state = None  # Dify is busy or restarting: ask again
            except httpx.HTTPError as exc:
                log.info("Dify unreachable while waiting for run %s: %s", record.id, exc)
                state = None
            if state is not None:
                return state
            if datetime.now(UTC) >= deadline:
                return (
                    "failed",
                    {},
                    {
                        "code": "recovery_timeout",
                        "message": f"Dify did not finish the run within "
                        f"{self.settings.recovery_max_wait_s:g} s of its start",
                    },
                )
            await asyncio.sleep(self.settings.recovery_poll_s)

    # -- recovery ------------------------------------------------------------------------
    def _unleased_after(self) -> float:
        # A blocking or streaming row without a lease (written by a release before leases
        # covered them) is abandoned once older than any request could last.
        return max(self.settings.dify_timeout_s, self.settings.recovery_max_wait_s)

    async def recover(self) -> int:
        """Take over the runs (and undelivered callbacks) of processes that died: rows whose
        lease has passed are claimed in one ``UPDATE … RETURNING``, so each goes to one
        replica. Async runs are finished from Dify's record; blocking and streaming runs are
        failed ``interrupted``. Returns how many this call took."""
        async with self.runtime.sessions() as s:
            rows = (
                await s.execute(
                    _CLAIM,
                    {
                        "owner": self.owner,
                        "lease": self.settings.lease_s,
                        "limit": self.settings.recovery_batch,
                        "unleased_after": self._unleased_after(),
                    },
                )
            ).all()
            await s.commit()
        taken = [str(r[0]) for r in rows if str(r[0]) not in self._leased]
        for run_id in taken:
            log.info("taking over async run %s", run_id)
            self._lease(run_id, self._resume(run_id))
        return len(taken)

    def start_recovery(self) -> None:
        """Look for abandoned runs every ``recovery_interval_s`` (serving processes)."""
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover_forever(), name="facade-recovery")

    async def _recover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.recovery_interval_s)
            try:
                await self.recover()
            except Exception:  # the database may be restarting; the next round retries
                log.warning("looking for abandoned async runs failed", exc_info=True)

    async def _resume(self, run_id: str) -> None:
        """Finish a claimed run from Dify's record, then deliver its callback."""
        async with self.runtime.sessions() as s:
            row = (
                await s.execute(
                    text(
                        f"SELECT {_RUN_COLUMNS}, callback_url, dify_user_sealed, pii_inbound, "
                        "subject FROM facade_runs WHERE id = :id AND owner = :owner"
                    ),
                    {"id": run_id, "owner": self.owner},
                )
            ).first()
        if row is None:
            return
        n = len(_RUN_COLUMNS.split(","))
        record = _record(row[:n])
        url, sealed_user, inbound, subject = row[n:]
        if record.delivery != "async":
            if record.status == "running" and await self._fail_interrupted(record):
                await self._audit_recovered(record, str(subject))
            return
        user = self._open_user(record.id, sealed_user)
        if record.status == "running":
            if not await self._complete_abandoned(record, user, inbound or {}):
                return
            await self._audit_recovered(record, str(subject))
        if record.callback_status == "pending":
            await self._deliver_logged(record, str(url or ""))

    async def _fail_interrupted(self, record: RunRecord) -> bool:
        """End a blocking or streaming run whose request died with it: ``failed``,
        ``interrupted``. Dify is not asked (the row may hold no id of the run there, and the
        client's connection, the only place its answer was going, is gone) nor called again."""
        record.status = "failed"
        record.result = {"recovered": True}
        record.error = {
            "code": REQUEST_INTERRUPTED,
            "message": "the process serving this run stopped (or its streaming client went "
            "away) before the run ended; it was not sent again (a workflow may have side "
            "effects): submit it with a new Idempotency-Key if it should run",
        }
        record.finished_at = datetime.now(UTC)
        return await self._owned_write(
            _FAIL_INTERRUPTED,
            {
                "id": record.id,
                "result": json.dumps(record.result),
                "error": json.dumps(record.error),
                "finished": record.finished_at,
            },
        )

    def _open_user(self, run_id: str, sealed: str | None) -> str | None:
        """The end-user label a run was sent to Dify with (None if absent or unreadable)."""
        if not sealed:
            return None
        try:
            return self.apps.box.open(sealed, _user_context(run_id))
        except LLMFlowError as exc:  # a rotated secrets key: the chat answer cannot be read
            log.warning("the Dify user of run %s does not open: %s", run_id, exc)
            return None

    async def _complete_abandoned(
        self, record: RunRecord, user: str | None, inbound: Mapping[str, Any]
    ) -> bool:
        app = await self.apps.get(record.tenant_id, record.app)
        waited: Outcome | None
        if app is None:
            waited = (
                "failed",
                {},
                {
                    "code": "app_removed",
                    "message": f"app {record.app!r} was removed before its run could be finished",
                },
            )
        else:
            waited = await self._await_dify(await self._service(app), record, user)
        if waited is None:
            waited = (
                "failed",
                {},
                {
                    "code": INTERRUPTED,
                    "message": "the process handling this run stopped before Dify acknowledged "
                    "it; it was not sent again (a workflow may have side effects): submit it "
                    "with a new Idempotency-Key if it should run",
                },
            )
        status, result, error = waited
        # The pseudonym map lived in the dead process's memory: the answer keeps the
        # pseudonyms; the response surface of the policy still applies.
        guard = await self._guard(record.tenant_id)
        if result:
            result = await asyncio.to_thread(guard.outbound, result)
        counts: dict[str, int] = dict(inbound.get("counts") or {})
        for entity, k in guard.counts.items():
            counts[entity] = counts.get(entity, 0) + k
        if counts:
            result["pii"] = dict(sorted(counts.items()))
        result["recovered"] = True
        result["pii_restored"] = not inbound.get("pseudonyms")
        record.status, record.result, record.error = status, result, error
        return await self._finish_owned(record)

    async def _audit_recovered(self, record: RunRecord, subject: str) -> None:
        from llmflow.observability.audit import AuditEntry, AuditUnavailable

        entry = AuditEntry(
            tenant_id=record.tenant_id,
            actor=subject,
            actor_kind="service",
            action="app.run.finished",
            resource_type="app",
            resource_id=record.app,
            decision="allow",
            reason="run finished by recovery",
            details={
                "run_id": record.id,
                "outcome": record.status,
                "response_mode": record.delivery,
                "error_code": (record.error or {}).get("code", ""),
                "recovered_by": self.owner,
            },
        )
        try:
            await (await self.runtime.audit()).record(entry)
        except AuditUnavailable:
            log.error("the recovered run %s was not audited", record.id)

    # -- the callback ------------------------------------------------------------------
    async def _deliver_logged(self, record: RunRecord, url: str) -> None:
        try:
            await self.deliver(record, url)
        except asyncio.CancelledError:
            raise
        except Exception:  # a background task has nobody to raise to: log it
            log.exception("callback delivery of run %s failed", record.id)

    def _backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1, 2, …): doubling, capped."""
        delay = self.settings.callback_backoff_s * 2 ** min(attempt - 1, 30)
        return float(min(delay, self.settings.callback_backoff_max_s))

    async def deliver(self, record: RunRecord, url: str) -> str:
        """POST the run to ``url`` signed with the tenant's secret, retrying with back-off:
        'delivered', 'failed', or 'pending' when another process took the run over.

        Attempts continue from ``record.callback_attempts`` (a delivery resumed after a
        restart) and each one is stored, with when the next is due."""
        secret = await self.apps.callback_secret(record.tenant_id)
        body = json.dumps(record.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()
        status, attempts, error = "failed", record.callback_attempts, "no callback_url"
        if url:
            async with httpx.AsyncClient(
                timeout=self.settings.callback_timeout_s,
                transport=self.callback_transport,
                follow_redirects=False,
            ) as client:
                while attempts < self.settings.callback_max_attempts:
                    attempts += 1
                    ts = int(time.time())
                    headers = {
                        "Content-Type": "application/json",
                        TIMESTAMP_HEADER: str(ts),
                        SIGNATURE_HEADER: sign_callback(secret, ts, body),
                        RUN_HEADER: record.id,
                        ATTEMPT_HEADER: str(attempts),
                    }
                    try:
                        response = await client.post(url, content=body, headers=headers)
                        if 200 <= response.status_code < 300:
                            status, error = "delivered", ""
                            break
                        code = response.status_code
                        retry = code in (408, 425, 429) or code >= 500
                        error = f"HTTP {code}"
                    except httpx.HTTPError as exc:
                        retry, error = True, type(exc).__name__
                    log.info("callback of run %s, attempt %d: %s", record.id, attempts, error)
                    if not retry or attempts >= self.settings.callback_max_attempts:
                        break
                    delay = self._backoff(attempts)
                    params = {"id": record.id, "n": attempts, "error": error, "delay": delay}
                    if not await self._owned_write(_CALLBACK_RETRY, params):
                        return "pending"
                    record.callback_attempts = attempts
                    await asyncio.sleep(delay)
        done = {
            "id": record.id,
            "status": status,
            "n": attempts,
            "error": error[:256] or None,
            "delivered": datetime.now(UTC) if status == "delivered" else None,
        }
        if not await self._owned_write(_CALLBACK_DONE, done):
            return "pending"
        record.callback_status, record.callback_attempts = status, attempts
        return status

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait for background runs (tests, graceful shutdown)."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)


def _end_user(principal: Principal, req: RunRequest) -> str:
    return req.user or principal.client_id or principal.subject


_SERVICES: weakref.WeakKeyDictionary[Runtime, FacadeService] = weakref.WeakKeyDictionary()


def facade(runtime: Runtime) -> FacadeService:
    """The runtime's facade service (created on first use)."""
    from llmflow.dify.secrets import runtime_box

    service = _SERVICES.get(runtime)
    if service is None:
        service = FacadeService(runtime, runtime.settings.facade, runtime_box(runtime))
        _SERVICES[runtime] = service
    return service


async def close_facade(runtime: Runtime) -> None:
    """Let the runtime's background app runs finish (10 s at most), then close its clients;
    called by ``Runtime.close`` before the database goes away."""
    service = _SERVICES.pop(runtime, None)
    if service is not None:
        await service.drain(timeout_s=10.0)
        await service.aclose()


def install_facade(runtime: Runtime, service: FacadeService) -> None:
    """Use ``service`` for ``runtime`` (tests hand in transports; a bench its own)."""
    _SERVICES[runtime] = service


async def start_facade_recovery(runtime: Runtime) -> int:
    """A serving process's start: take over the async runs that dead processes left (now,
    then every ``facade.recovery_interval_s``). Returns how many were taken now; 0 (and no
    loop) where the facade cannot open its secrets (no ``dify_secrets`` key configured)."""
    from llmflow.errors import ConfigurationError

    try:
        service = facade(runtime)
    except ConfigurationError as exc:
        log.info("ERP facade recovery off: %s", exc)
        return 0
    try:
        taken = await service.recover()
    except Exception:  # the next scan retries; the API must still start
        log.warning("looking for abandoned async runs failed", exc_info=True)
        taken = 0
    service.start_recovery()
    return taken
