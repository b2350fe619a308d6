"""Hugging Face Text Embeddings Inference (TEI), through its native API.

The native ``/embed`` route rather than TEI's OpenAI-compatible one, because only the native
one lets us say ``truncate``: an over-long chunk is embedded from its first
``max_input_length`` tokens instead of failing the whole batch. ``GET /info`` tells us the
server's limits before the first batch (contract: ``router/src/http/server.rs`` and the
``Info`` struct in ``router/src/lib.rs`` of huggingface/text-embeddings-inference).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from llmflow.models.embedding._remote import RemoteEmbedder, as_vector
from llmflow.models.embedding.errors import EmbeddingProtocolError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TEIInfo:
    """The parts of TEI's ``GET /info`` that shape our requests.

    ``max_batch_tokens`` is kept for diagnostics only: TEI's own queue packs inputs into
    forward passes of at most that many tokens, so a client batch never has to respect it.
    """

    model_id: str
    max_client_batch_size: int
    max_input_length: int
    max_batch_tokens: int
    version: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> TEIInfo:
        """Parse ``/info``; a missing limit is a protocol error, not a silent default."""
        if not isinstance(body, dict):
            raise EmbeddingProtocolError("TEI /info did not return a JSON object")
        try:
            return cls(
                model_id=str(body["model_id"]),
                max_client_batch_size=int(body["max_client_batch_size"]),
                max_input_length=int(body["max_input_length"]),
                max_batch_tokens=int(body["max_batch_tokens"]),
                version=None if body.get("version") is None else str(body["version"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmbeddingProtocolError(f"TEI /info lacks or garbles {exc}") from exc


class TEIEmbedder(RemoteEmbedder):
    """Embeds through ``POST /embed`` of a TEI server.

    Requests are ``{"inputs": [...], "truncate": true, "normalize": true}`` and answers a
    JSON array of vectors in input order. The batch size is capped by the server's
    ``max_client_batch_size`` and ``max_tokens`` becomes its ``max_input_length``.
    """

    service = "TEI"

    _info: TEIInfo | None = None
    _info_checked = False

    @property
    def info(self) -> TEIInfo | None:
        """What ``/info`` said, once asked; ``None`` if the server does not route ``/info``."""
        return self._info

    async def _learn_server(self) -> None:
        if self._info_checked:
            return
        response = await self._request("GET", "/info")
        self._info_checked = True
        if response.status_code == 404:
            # A gateway in front of TEI may expose /embed only; the 413/422 shrinking still
            # finds the batch limit, we just cannot know max_input_length in advance.
            log.warning("TEI at %s has no /info; using configured limits", self._client.base_url)
            return
        self._raise_for_status(response)
        try:
            body = response.json()
        except ValueError as exc:
            raise EmbeddingProtocolError(f"TEI /info is not JSON: {response.text[:200]!r}") from exc
        info = TEIInfo.from_json(body)
        self._info = info
        self._batch_size = max(1, min(self._batch_size, info.max_client_batch_size))
        self._max_tokens = info.max_input_length
        if _model_basename(info.model_id) != _model_basename(self.model_name):
            # Air-gapped servers often load from a path (/data/bge-m3), so only the last
            # component is compared, and only to warn: the name is configuration, not truth.
            log.warning(
                "TEI serves %r but embedding.model is %r: vectors will be stored under the "
                "configured name",
                info.model_id,
                self.model_name,
            )

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        body = await self._post_json(
            "/embed", {"inputs": batch, "truncate": True, "normalize": True}
        )
        if not isinstance(body, list):
            raise EmbeddingProtocolError(
                "TEI /embed did not return a JSON array: is embedding.url an OpenAI-compatible "
                "server (provider 'openai')?"
            )
        return [as_vector(item, self.service) for item in body]


def _model_basename(model: str) -> str:
    return PurePosixPath(model.rstrip("/")).name.lower()
