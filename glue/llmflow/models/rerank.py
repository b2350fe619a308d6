"""Cross-encoder rerankers: score (query, passage) pairs after hybrid retrieval.

``Reranker.rerank(query, texts)`` returns one score per text, **in the order of ``texts``**
and in 0-1, whatever order and scale the server answers in: retrieval keeps its candidate
list and only needs a number per candidate. Backends, chosen by ``RerankSettings.provider``:

* ``none`` — no reranking; scores that keep the fused order.
* ``tei`` — TEI's ``POST /rerank`` ``{"query", "texts", "raw_scores": false, "truncate":
  true}`` → ``[{"index", "score"}]`` sorted by score (``router/src/http/server.rs``).
* ``infinity`` — the Cohere shape that Infinity and vLLM serve: ``POST /rerank``
  ``{"query", "documents", "model"?}`` → ``{"results": [{"index", "relevance_score"}]}``.

Both servers apply the sigmoid themselves unless asked for raw scores, so the scores
normally arrive in 0-1. Some servers return a cross-encoder's raw logits anyway (vLLM
with a model configured without an activation, Infinity started with raw scores): when any
score of a call lies outside 0-1, the call's scores are logits and all of them go through
the sigmoid. One rule per call, not per score, so the order among them is kept.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from llmflow.models._http import RetryPolicy, Sleep, build_client, error_detail, send_with_retries
from llmflow.settings import RerankSettings

__all__ = [
    "IdentityReranker", "InfinityReranker", "RerankError", "RerankProtocolError",
    "RerankRejected", "RerankUnavailable", "Reranker", "TEIReranker", "build_reranker",
]  # fmt: skip

log = logging.getLogger(__name__)


class RerankError(Exception):
    """Base class: reranking failed. Retrieval may fall back to the fused order."""


class RerankUnavailable(RerankError):
    """The server stayed overloaded or unreachable through every retry."""


class RerankRejected(RerankError):
    """The server refused the request (wrong model type, bad key, a pair it will not take)."""

    def __init__(self, message: str, *, status_code: int, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type


class RerankProtocolError(RerankError):
    """A 2xx answer that does not follow the contract: missing indices, NaN scores."""


class Reranker(ABC):
    """Scores candidates for a query; the higher, the more relevant."""

    enabled = True
    """False for the ``none`` provider, so callers can skip the call and its latency."""

    @abstractmethod
    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score in 0-1 per text, aligned with ``texts``."""

    @abstractmethod
    async def aclose(self) -> None:
        """Release the HTTP client."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class IdentityReranker(Reranker):
    """No reranking: scores fall from 1 towards 0 with the input position.

    Strictly decreasing rather than all equal, so that any sort by score, stable or not,
    reproduces the fused order. They encode rank only, not relevance.
    """

    enabled = False

    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        n = len(texts)
        return [1.0 - i / n for i in range(n)]

    async def aclose(self) -> None:
        return None


class _HTTPReranker(Reranker):
    """Batching, shrinking and retries shared by the server backends."""

    service = "reranker"
    default_batch_size = 32

    def __init__(
        self,
        url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        batch_size: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        retry_base_delay_s: float = 0.2,
    ) -> None:
        # Fewer, shorter retries than embedding: a user is waiting for this answer, and
        # retrieval can still answer without reranking.
        self.model = model
        self._client = build_client(url, timeout_s=timeout_s, api_key=api_key, transport=transport)
        self._policy = RetryPolicy(
            max_retries=max_retries, base_delay_s=retry_base_delay_s, max_delay_s=5.0
        )
        self._sleep: Sleep = asyncio.sleep if sleep is None else sleep
        self._rng = random.Random() if rng is None else rng
        self._batch_size = batch_size or self.default_batch_size

    @property
    def batch_size(self) -> int:
        """Texts per request now; halves when the server refuses a batch as too large."""
        return self._batch_size

    async def rerank(self, query: str, texts: Sequence[str]) -> list[float]:
        scores: list[float] = []
        start = 0
        while start < len(texts):
            batch = list(texts[start : start + self._batch_size])
            response = await send_with_retries(
                self._client,
                "POST",
                "/rerank",
                json_body=self._request_body(query, batch),
                policy=self._policy,
                sleep=self._sleep,
                rng=self._rng,
                unavailable=RerankUnavailable,
                service=self.service,
            )
            detail = error_detail(response) if response.is_error else None
            if detail is not None and detail.status_code in (413, 422) and len(batch) > 1:
                # TEI: batch > --max-client-batch-size is 413 (< v1.9) or 422 (>= v1.9).
                self._batch_size = max(1, len(batch) // 2)
                log.warning("%s refused %d texts (%s); now %d", self.service, len(batch),
                            detail.message, self._batch_size)  # fmt: skip
                continue
            if detail is not None:
                raise RerankRejected(
                    f"{self.service} at {self._client.base_url} refused /rerank: "
                    f"HTTP {detail.status_code}: {detail.message}",
                    status_code=detail.status_code,
                    error_type=detail.error_type,
                )
            try:
                body = response.json()
            except ValueError as exc:
                raise RerankProtocolError(f"{self.service} /rerank answer is not JSON") from exc
            scores.extend(_aligned(self._pairs(body), len(batch), self.service))
            start += len(batch)
        return _as_probabilities(scores)

    async def aclose(self) -> None:
        await self._client.aclose()

    @abstractmethod
    def _request_body(self, query: str, batch: list[str]) -> dict[str, Any]: ...

    @abstractmethod
    def _pairs(self, body: Any) -> list[tuple[Any, Any]]:
        """(index, score) pairs as the server sent them, unchecked."""


class TEIReranker(_HTTPReranker):
    """TEI serving a sequence-classification (reranker) model, e.g. bge-reranker-v2-m3.

    ``truncate: true`` because a long chunk plus the query easily passes 512 tokens, and a
    truncated pair still scores better than a failed request.
    """

    service = "TEI reranker"
    default_batch_size = 32  # TEI's default --max-client-batch-size

    def _request_body(self, query: str, batch: list[str]) -> dict[str, Any]:
        return {"query": query, "texts": batch, "raw_scores": False, "truncate": True}

    def _pairs(self, body: Any) -> list[tuple[Any, Any]]:
        if not isinstance(body, list):
            raise RerankProtocolError("TEI /rerank did not return a JSON array")
        return [_pair(item, "score", self.service) for item in body]


class InfinityReranker(_HTTPReranker):
    """Infinity, vLLM, or anything else that speaks Cohere's rerank API.

    ``top_n`` is never sent: every candidate needs its score. ``model`` is sent when
    configured, which servers hosting several models need.
    """

    service = "Infinity reranker"
    default_batch_size = 1000  # Cohere's documented per-request limit

    def _request_body(self, query: str, batch: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"query": query, "documents": batch, "return_documents": False}
        if self.model:
            body["model"] = self.model
        return body

    def _pairs(self, body: Any) -> list[tuple[Any, Any]]:
        results = body.get("results") if isinstance(body, dict) else None
        if not isinstance(results, list):
            raise RerankProtocolError(f"{self.service} answer has no 'results' list")
        return [_pair(item, "relevance_score", self.service) for item in results]


def _pair(item: Any, score_key: str, service: str) -> tuple[Any, Any]:
    if not isinstance(item, dict):
        raise RerankProtocolError(f"{service} returned a result that is not an object")
    return item.get("index"), item.get(score_key)


def _aligned(pairs: list[tuple[Any, Any]], n: int, service: str) -> list[float]:
    """Scores placed by index; every index exactly once, every score a finite number."""
    scores: list[float | None] = [None] * n
    for index, score in pairs:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < n:
            raise RerankProtocolError(f"{service} returned index {index!r} for {n} texts")
        if isinstance(score, bool) or not isinstance(score, int | float) or math.isnan(score):
            raise RerankProtocolError(f"{service} returned score {score!r} for text {index}")
        if scores[index] is not None:
            raise RerankProtocolError(f"{service} returned text {index} twice")
        scores[index] = float(score)
    missing = [i for i, s in enumerate(scores) if s is None]
    if missing:
        raise RerankProtocolError(f"{service} returned no score for texts {missing[:10]}")
    return [s for s in scores if s is not None]


def _as_probabilities(scores: list[float]) -> list[float]:
    """Leave 0-1 scores alone; squash a call that returned logits (see module docstring)."""
    if all(0.0 <= s <= 1.0 for s in scores):
        return scores
    return [_sigmoid(s) for s in scores]


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def build_reranker(
    settings: RerankSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> Reranker:
    """The reranker ``settings.provider`` names; ``transport``/``sleep``/``rng`` are for tests."""
    if settings.provider == "none":
        return IdentityReranker()
    if not settings.url:
        raise ValueError(
            f"rerank.url (LLMFLOW_RERANK__URL) is required for provider {settings.provider!r}"
        )
    cls: type[TEIReranker | InfinityReranker] = (
        TEIReranker if settings.provider == "tei" else InfinityReranker
    )
    return cls(
        settings.url,
        model=settings.model,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        timeout_s=settings.timeout_s,
        transport=transport,
        sleep=sleep,
        rng=rng,
    )
