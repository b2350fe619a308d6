"""In-process models: gateway routes answered by code in this process (``provider: agent``).

An agent is offered to clients as a model (Dify's OpenAI-API-compatible provider adds it like
any other), but it is not a server to proxy to: its route names a *handler* registered here,
and the gateway calls it with the verified principal. Everything else the gateway does still
applies — routing, the ``model.use`` policy, quotas, the PII guard on the prompt and the
answer, the usage ledger and metrics — because the dispatch happens where an upstream call
would, after :meth:`GatewayService.prepare` and :meth:`GatewayService.guard_prompt`.

Handlers are registered as factories (``provide``) and built on first use, so that a gateway
whose routing table names no agent never builds one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal


def _identity(text: str) -> str:
    return text


@dataclass(frozen=True, slots=True)
class InProcessCall:
    """What the gateway hands an in-process model besides the (guarded) request body."""

    principal: Principal
    """The verified caller: the handler acts for it, in its tenant."""
    model: str
    """The route name the client asked for."""
    classification: str
    """The data classification the client declared (``X-Data-Classification``)."""
    restore: Callable[[str], str] = field(default=_identity)
    """Puts back the values the PII guard pseudonymised in the prompt — for work the handler
    does inside the platform (a search for a name), never for text sent to a model."""


class InProcessModel(Protocol):
    async def complete(self, call: InProcessCall, body: dict[str, Any]) -> dict[str, Any]:
        """A ``chat.completion`` document (``usage`` included when known)."""

    async def stream(
        self, call: InProcessCall, body: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Open a stream of ``chat.completion.chunk`` events. Refusals raise here, before the
        response starts, so that they are still HTTP errors; a last event with ``choices: []``
        and ``usage`` reports the tokens (passed on only when the client asked)."""


ModelFactory = Callable[[], Awaitable[InProcessModel]]


class UnknownHandler(LookupError):
    """A route names a handler nothing in this process provides."""


class InProcessModels:
    """Handler name → in-process model, built once from its factory."""

    def __init__(self) -> None:
        self._factories: dict[str, ModelFactory] = {}
        self._models: dict[str, InProcessModel] = {}
        self._lock = asyncio.Lock()

    def provide(self, handler: str, factory: ModelFactory) -> None:
        """Register ``factory`` for ``handler`` unless one is registered already."""
        self._factories.setdefault(handler, factory)

    def provides(self, handler: str) -> bool:
        return handler in self._factories

    async def get(self, handler: str) -> InProcessModel:
        model = self._models.get(handler)
        if model is not None:
            return model
        factory = self._factories.get(handler)
        if factory is None:
            raise UnknownHandler(handler)
        async with self._lock:
            if handler not in self._models:
                self._models[handler] = await factory()
        return self._models[handler]
