"""OpenAI-compatible embedding servers: vLLM, Infinity, TEI's ``/v1`` route, LocalAI.

Contract (OpenAI API reference, "Create embeddings"): ``POST /v1/embeddings`` with
``{"model", "input": [...], "encoding_format": "float"}`` answers
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [...]}],
"model", "usage"}``. The spec does not promise ``data`` in input order, so vectors are
placed by ``index``.
"""

from __future__ import annotations

import math
from typing import Any

from llmflow.models.embedding._remote import RemoteEmbedder, as_vector
from llmflow.models.embedding.errors import EmbeddingProtocolError


class OpenAIEmbedder(RemoteEmbedder):
    """Embeds through ``POST {url}/v1/embeddings``; ``url`` may or may not end in ``/v1``.

    The API key, when configured, is sent as ``Authorization: Bearer``; vLLM and Infinity
    run without one inside the cluster. Vectors are L2-normalised here because not every
    server does it (vLLM returns whatever the model's pooler gives), and the vector store
    ranks by inner product.
    """

    service = "OpenAI-compatible embedding server"

    @property
    def _path(self) -> str:
        # httpx appends a request path to the base URL's path, so ".../v1" + "/embeddings".
        base_path = self._client.base_url.path.rstrip("/")
        return "/embeddings" if base_path.endswith("/v1") else "/v1/embeddings"

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        body = await self._post_json(
            self._path,
            {"model": self.model_name, "input": batch, "encoding_format": "float"},
        )
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise EmbeddingProtocolError(
                f"{self.service} answer has no 'data' list: is embedding.url a TEI native "
                "server (provider 'tei')?"
            )
        placed: list[list[float] | None] = [None] * len(batch)
        for item in data:
            index = _index_of(item)
            if not 0 <= index < len(batch) or placed[index] is not None:
                raise EmbeddingProtocolError(
                    f"{self.service} returned index {index} for a batch of {len(batch)}"
                )
            placed[index] = _normalised(as_vector(item.get("embedding"), self.service))
        missing = [i for i, vector in enumerate(placed) if vector is None]
        if missing:
            raise EmbeddingProtocolError(
                f"{self.service} returned no vector for inputs {missing[:10]}"
            )
        return [vector for vector in placed if vector is not None]


def _index_of(item: Any) -> int:
    index = item.get("index") if isinstance(item, dict) else None
    if not isinstance(index, int) or isinstance(index, bool):
        raise EmbeddingProtocolError("an embedding in 'data' has no integer 'index'")
    return index


def _normalised(vector: list[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    if norm == 0.0:
        return vector
    return [x / norm for x in vector]
