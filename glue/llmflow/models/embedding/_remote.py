"""What the HTTP embedders (TEI, OpenAI-compatible) have in common.

Batching, shrinking a batch the server refuses as too large, retrying a busy server, and
checking that the vectors that come back are the ones we asked for. The subclasses only
say how one batch goes over the wire.
"""

from __future__ import annotations

import asyncio
import logging
import random
from abc import abstractmethod
from pathlib import Path
from typing import Any

import httpx

from llmflow.models._http import (
    ErrorDetail,
    RetryPolicy,
    Sleep,
    build_client,
    error_detail,
    send_with_retries,
)
from llmflow.models.embedding._tokens import (
    TokenCounter,
    approximate_token_count,
    load_token_counter,
)
from llmflow.models.embedding.base import Embedder
from llmflow.models.embedding.errors import (
    EmbeddingNotReady,
    EmbeddingProtocolError,
    EmbeddingRejected,
    EmbeddingUnavailable,
)

log = logging.getLogger(__name__)

SHRINK_STATUS = frozenset({413, 422})
"""TEI answers a batch larger than ``--max-client-batch-size`` with 413 before v1.9 and
422 since (both ``error_type`` Validation); axum's body limit (``--payload-limit``) is a
plain-text 413; FastAPI servers (Infinity) reject an over-long list with 422."""


class BatchTooLarge(Exception):
    """Internal signal: the server wants fewer inputs per request."""

    def __init__(self, detail: ErrorDetail) -> None:
        super().__init__(detail.message)
        self.detail = detail


class RemoteEmbedder(Embedder):
    """An embedder that calls a server through one ``httpx.AsyncClient``.

    The batch size starts at the configured one and only ever shrinks: when the server
    refuses a batch as too large it is halved and retried (down to one input), and later
    calls start from the size that worked, so a misconfigured limit costs a few requests
    once, not on every call.
    """

    service = "embedding server"

    def __init__(
        self,
        url: str,
        *,
        model_name: str,
        batch_size: int = 32,
        timeout_s: float = 60.0,
        max_retries: int = 4,
        max_tokens: int = 256,
        api_key: str | None = None,
        tokenizer_path: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep | None = None,
        rng: random.Random | None = None,
        retry_base_delay_s: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.model_name = model_name
        self._client = build_client(url, timeout_s=timeout_s, api_key=api_key, transport=transport)
        self._policy = RetryPolicy(max_retries=max_retries, base_delay_s=retry_base_delay_s)
        self._sleep: Sleep = asyncio.sleep if sleep is None else sleep
        self._rng = random.Random() if rng is None else rng
        self._batch_size = batch_size
        self._max_tokens = max_tokens
        self._dimension: int | None = None
        self._counter: TokenCounter | None = (
            load_token_counter(tokenizer_path) if tokenizer_path is not None else None
        )

    @property
    def batch_size(self) -> int:
        """Inputs per request now: the configured size, or less once the server refused it."""
        return self._batch_size

    @property
    def dimension(self) -> int:
        if self._dimension is None:
            raise EmbeddingNotReady(
                f"the dimension of {self.model_name!r} is known once the server has answered: "
                "await embedder.warm_up() first"
            )
        return self._dimension

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    @property
    def token_count_is_exact(self) -> bool:
        return self._counter is not None

    def count_tokens(self, text: str) -> int:
        """Exact with a local copy of the served model's tokenizer, else an overestimate."""
        if self._counter is not None:
            return self._counter(text)
        return approximate_token_count(text)

    async def warm_up(self) -> None:
        await self._learn_server()
        if self._dimension is None:
            await self.embed_documents(["warm-up"])

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        await self._learn_server()
        vectors: list[list[float]] = []
        start = 0
        while start < len(texts):
            batch = texts[start : start + self._batch_size]
            try:
                batch_vectors = await self._embed_batch(batch)
            except BatchTooLarge as too_large:
                if len(batch) == 1:
                    raise EmbeddingRejected(
                        f"{self.service} refused input #{start} even alone "
                        f"({len(batch[0])} characters): {too_large.detail.message}",
                        status_code=too_large.detail.status_code,
                        error_type=too_large.detail.error_type,
                    ) from None
                self._batch_size = max(1, len(batch) // 2)
                log.warning(
                    "%s refused a batch of %d (HTTP %d: %s); retrying with %d",
                    self.service,
                    len(batch),
                    too_large.detail.status_code,
                    too_large.detail.message,
                    self._batch_size,
                )
                continue
            self._check_vectors(batch_vectors, len(batch))
            vectors.extend(batch_vectors)
            start += len(batch)
        return vectors

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _learn_server(self) -> None:
        """Hook: ask the server about its limits before the first batch (TEI's ``/info``)."""

    @abstractmethod
    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        """Embed one batch; raise :class:`BatchTooLarge` when the server says so."""

    async def _request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request under the retry policy; 5xx and 4xx answers are returned as they are."""
        return await send_with_retries(
            self._client,
            method,
            path,
            json_body=body,
            policy=self._policy,
            sleep=self._sleep,
            rng=self._rng,
            unavailable=EmbeddingUnavailable,
            service=self.service,
        )

    async def _post_json(self, path: str, body: Any) -> Any:
        """POST under the retry policy and decode the JSON answer, mapping errors to types."""
        response = await self._request("POST", path, body)
        if response.status_code in SHRINK_STATUS:
            raise BatchTooLarge(error_detail(response))
        self._raise_for_status(response)
        try:
            return response.json()
        except ValueError as exc:
            raise EmbeddingProtocolError(
                f"{self.service} answered {path} with something that is not JSON: "
                f"{response.text[:200]!r}"
            ) from exc

    def _raise_for_status(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        detail = error_detail(response)
        raise EmbeddingRejected(
            f"{self.service} at {self._client.base_url} refused {response.request.url.path}: "
            f"HTTP {detail.status_code}: {detail.message}",
            status_code=detail.status_code,
            error_type=detail.error_type,
        )

    def _check_vectors(self, vectors: list[list[float]], expected: int) -> None:
        """Same count as inputs, same dimension as every vector before them."""
        if len(vectors) != expected:
            raise EmbeddingProtocolError(
                f"{self.service} returned {len(vectors)} vectors for {expected} inputs"
            )
        for vector in vectors:
            if self._dimension is None:
                if not vector:
                    raise EmbeddingProtocolError(f"{self.service} returned an empty vector")
                self._dimension = len(vector)
            elif len(vector) != self._dimension:
                raise EmbeddingProtocolError(
                    f"{self.service} returned a {len(vector)}-dimensional vector after "
                    f"{self._dimension}-dimensional ones: has the served model changed?"
                )


def as_vector(value: Any, service: str) -> list[float]:
    """A JSON array of numbers as a list of floats, or a protocol error."""
    if not isinstance(value, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    ):
        raise EmbeddingProtocolError(f"{service} returned a vector that is not a list of numbers")
    return [float(x) for x in value]
