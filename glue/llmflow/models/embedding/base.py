"""The interface every embedding backend implements.

Like httpx's ``_transports/base.py``: one small abstract class here, one module per backend
(``local``, ``tei``, ``openai``), chosen by ``EmbeddingSettings.provider`` in
:func:`llmflow.models.embedding.build_embedder`. Nothing outside this package needs to know
which backend it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Embedder(ABC):
    """Turns text into dense vectors, and measures text in the model's own tokens.

    ``embed_documents`` and ``embed_query`` are separate because retrieval models may
    treat them differently (instruction prefixes); the backends here treat them alike.
    Vectors are L2-normalised, so inner product and cosine rank the same way.
    """

    model_name: str
    """The configured model name; collections are named after it."""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this embedder returns.

        Remote backends learn it from the server: reading it before ``warm_up()`` or the
        first embedding raises :class:`~llmflow.models.embedding.errors.EmbeddingNotReady`.
        """

    @property
    @abstractmethod
    def max_tokens(self) -> int:
        """Input length, in model tokens, beyond which the model truncates."""

    @abstractmethod
    async def warm_up(self) -> None:
        """Load the model or ask the server what it serves, so ``dimension`` is known.

        Idempotent. Call it at service start-up to fail fast on a wrong path or URL
        instead of on the first user upload.
        """

    @abstractmethod
    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in input order; batched by the configured batch size."""

    async def embed_query(self, text: str) -> list[float]:
        """The vector of one search query."""
        vectors = await self.embed_documents([text])
        return vectors[0]

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in the embedding model's tokens, special tokens excluded.

        The chunker sizes chunks with it. Special tokens ([CLS]/[SEP], <s>/</s>) are left
        out so that counts of pieces add up to the count of their concatenation (almost:
        a word split across pieces may tokenize differently). Subtract a few tokens from
        ``max_tokens`` for them when sizing. Synchronous and cheap: it never blocks on I/O.
        """

    @property
    def token_count_is_exact(self) -> bool:
        """False when ``count_tokens`` is an approximation (remote model, no tokenizer)."""
        return True

    @abstractmethod
    async def aclose(self) -> None:
        """Release the HTTP client or the model. The embedder is unusable afterwards."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
