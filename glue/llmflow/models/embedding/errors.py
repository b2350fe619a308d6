"""The exceptions an :class:`~llmflow.models.embedding.Embedder` raises.

Callers decide by type: an ingest job retries later on :class:`EmbeddingUnavailable`,
marks the document failed on :class:`EmbeddingRejected`, and pages an operator on
:class:`EmbeddingModelNotFound` or :class:`EmbeddingProtocolError` (a misconfiguration,
not bad luck).
"""

from __future__ import annotations


class EmbeddingError(Exception):
    """Base class: embedding failed."""


class EmbeddingUnavailable(EmbeddingError):
    """The server stayed overloaded, unhealthy or unreachable through every retry.

    Transient by nature: the same request may succeed later.
    """


class EmbeddingRejected(EmbeddingError):
    """The server refused the request, and retrying it unchanged will not help.

    Raised for 4xx answers (bad API key, unknown model, an input the server will not take
    even alone in a batch) and for a 424/500 inference failure.
    """

    def __init__(self, message: str, *, status_code: int, error_type: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_type = error_type


class EmbeddingProtocolError(EmbeddingError):
    """The server answered 2xx with something that is not the contract we speak.

    Usually the URL points at the wrong kind of server (TEI's native API configured as
    ``openai`` or the other way round) or vectors change dimension between calls.
    """


class EmbeddingModelNotFound(EmbeddingError):
    """The local model directory is missing or is not a sentence-transformers model."""


class EmbeddingNotReady(EmbeddingError):
    """A property that a remote server has to tell us was read before it did.

    ``dimension`` of a remote embedder is known after ``await embedder.warm_up()`` or the
    first embedding call.
    """
