"""Counting text in embedding-model tokens, exactly when we can and roughly when we must.

The chunker needs counts in the embedding model's tokens: a chunk that is 200 "words" may be
600 tokens of Korean for one model and 150 for another, and whatever exceeds the model's
input length is silently truncated away by the server. The exact count needs the model's
tokenizer, which the local backend has and a remote one has only if its files ship with
the installation (``EmbeddingSettings.model_path``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from llmflow.models.embedding.errors import EmbeddingModelNotFound

TokenCounter = Callable[[str], int]

_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|[^\sA-Za-z0-9]")


def approximate_token_count(text: str) -> int:
    """A deliberately high estimate of subword tokens, for when no tokenizer is available.

    Latin words count one token per four letters (at least one), digit runs one per three
    digits, and every other visible character (Hangul syllable, Han character, punctuation)
    one token. Subword vocabularies of multilingual models (XLM-R for bge-m3, e5) need
    roughly 0.5-1 tokens per Hangul syllable, so for Korean this overcounts: chunks come
    out smaller than asked, never longer than the model reads.
    """
    total = 0
    for piece in _PIECES.findall(text):
        first = piece[0]
        if first.isascii() and first.isalpha():
            total += max(1, math.ceil(len(piece) / 4))
        elif first.isascii() and first.isdigit():
            total += max(1, math.ceil(len(piece) / 3))
        else:
            total += 1
    return total


def load_token_counter(model_dir: Path) -> TokenCounter:
    """An exact counter from a Hugging Face model directory.

    Prefers ``tokenizer.json`` through the Rust ``tokenizers`` library (fast, no torch);
    falls back to ``transformers.AutoTokenizer`` for models that ship only a vocabulary or
    a SentencePiece file. Both only read local files. Truncation and padding configured in
    ``tokenizer.json`` (all-MiniLM-L6-v2 ships ``Fixed(128)`` padding) are switched off:
    a count must be the text's true length, not the tokenizer's window.
    """
    if not model_dir.is_dir():
        raise EmbeddingModelNotFound(f"tokenizer directory {model_dir} does not exist")
    tokenizer_json = model_dir / "tokenizer.json"
    if tokenizer_json.is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(tokenizer_json))
        fast.no_truncation()
        fast.no_padding()

        def count_fast(text: str) -> int:
            return len(fast.encode(text, add_special_tokens=False).ids)

        return count_fast

    try:
        from transformers import AutoTokenizer

        slow = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EmbeddingModelNotFound(f"no usable tokenizer in {model_dir}: {exc}") from exc

    def count_slow(text: str) -> int:
        ids = slow(text, add_special_tokens=False, truncation=False)["input_ids"]
        return len(ids)

    return count_slow
