"""Embedding models: one interface, a backend per kind of model server.

>>> embedder = build_embedder(settings.embedding)
>>> await embedder.warm_up()
>>> vectors = await embedder.embed_documents(chunks)
>>> await embedder.aclose()
"""

from __future__ import annotations

import random

import httpx

from llmflow.models._http import Sleep
from llmflow.models.embedding._tokens import approximate_token_count
from llmflow.models.embedding.base import Embedder
from llmflow.models.embedding.errors import (
    EmbeddingError,
    EmbeddingModelNotFound,
    EmbeddingNotReady,
    EmbeddingProtocolError,
    EmbeddingRejected,
    EmbeddingUnavailable,
)
from llmflow.models.embedding.local import LocalEmbedder, default_model_path
from llmflow.models.embedding.openai import OpenAIEmbedder
from llmflow.models.embedding.tei import TEIEmbedder, TEIInfo
from llmflow.settings import EmbeddingSettings

__all__ = [
    "Embedder",
    "EmbeddingError",
    "EmbeddingModelNotFound",
    "EmbeddingNotReady",
    "EmbeddingProtocolError",
    "EmbeddingRejected",
    "EmbeddingUnavailable",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "TEIEmbedder",
    "TEIInfo",
    "approximate_token_count",
    "build_embedder",
    "default_model_path",
]


def build_embedder(
    settings: EmbeddingSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    sleep: Sleep | None = None,
    rng: random.Random | None = None,
) -> Embedder:
    """The embedder that ``settings.provider`` names.

    For ``tei`` and ``openai``, ``settings.model_path`` is optional and, when set, points at
    a local copy of the served model's tokenizer so that ``count_tokens`` is exact.
    ``transport``, ``sleep`` and ``rng`` exist for tests (``httpx.MockTransport``, a
    no-op sleep, a seeded jitter); the local backend ignores them.
    """
    if settings.provider == "local":
        return LocalEmbedder(
            settings.model_path, model_name=settings.model, batch_size=settings.batch_size
        )
    if not settings.url:
        raise ValueError(f"embedding.url is required for provider {settings.provider!r}")
    cls: type[TEIEmbedder | OpenAIEmbedder] = (
        TEIEmbedder if settings.provider == "tei" else OpenAIEmbedder
    )
    return cls(
        settings.url,
        model_name=settings.model,
        batch_size=settings.batch_size,
        timeout_s=settings.timeout_s,
        max_retries=settings.max_retries,
        max_tokens=settings.max_tokens,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        tokenizer_path=settings.model_path,
        transport=transport,
        sleep=sleep,
        rng=rng,
    )
