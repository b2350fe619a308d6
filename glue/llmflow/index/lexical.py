"""Korean-aware lexical analysis for BM25.

Milvus' built-in analyzers handle Korean badly (Lite only has ``standard`` and ``jieba``), so
we analyse text with Kiwi in our code and store the analysed form — content morphemes joined
by spaces — in a VARCHAR field that Milvus' BM25 function indexes with its ``standard``
analyzer. Queries go through the same analysis, so Milvus Lite and Milvus cluster rank alike.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

# Content-bearing Kiwi tags: nouns, numerals, predicate stems, roots, adverbs, foreign words,
# numbers, hanja. Particles (J*), endings (E*), affixes and punctuation carry no topic.
_KEEP_TAGS = frozenset(
    {"NNG", "NNP", "NNB", "NR", "NP", "VV", "VA", "XR", "MAG", "SL", "SN", "SH", "W_HASHTAG"}
)
_SINGLE_CHAR_NOISE = frozenset({"것", "수", "등", "때", "중", "및"})
_EN_STOP = frozenset(
    (
        "a an the of to in on for and or is are was were be been by with as at from that "
        "this it its into than then there which who whom what when where how"
    ).split()
)
_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


class KoreanAnalyzer:
    """Kiwi-backed analyser; thread-safe; load once per process (≈2 s).

    ``num_workers=-1`` lets Kiwi use every core for batches (``analyze_many``).
    """

    def __init__(self, num_workers: int = -1) -> None:
        from kiwipiepy import Kiwi

        self._kiwi = Kiwi(num_workers=num_workers)
        self._lock = threading.Lock()

    def _terms(self, tokens: Iterable[Any]) -> list[str]:
        terms: list[str] = []
        for tok in tokens:
            tag = tok.tag.split("-")[0]  # Kiwi marks irregular conjugations as VV-R / VA-I
            if tag not in _KEEP_TAGS:
                continue
            form = tok.form.lower() if tag == "SL" else tok.form
            if tag == "SL" and form in _EN_STOP:
                continue
            if form in _SINGLE_CHAR_NOISE:
                continue
            form = _NON_WORD.sub("", form)
            if form:
                terms.append(form)
        return terms

    def analyze(self, text: str) -> str:
        """Analysed form of ``text``: space-separated content morphemes."""
        if not text.strip():
            return ""
        with self._lock:
            tokens = self._kiwi.tokenize(text)
        return " ".join(self._terms(tokens))

    def analyze_many(self, texts: Sequence[str]) -> list[str]:
        """Batch analysis (Kiwi parallelises a batch over its worker threads)."""
        if not texts:
            return []
        with self._lock:
            results = list(self._kiwi.tokenize(list(texts)))
        return [" ".join(self._terms(tokens)) for tokens in results]

    def analyze_with_phrases(
        self, texts: Sequence[str], phrase_from: Sequence[int]
    ) -> list[tuple[str, list[str]]]:
        """One Kiwi pass giving the analysed form of each text and its Korean noun phrases
        (compound nouns and proper nouns) found at or after character ``phrase_from[i]``
        (the graph extractor's entity candidates; the embedded header is skipped)."""
        if not texts:
            return []
        with self._lock:
            results = list(self._kiwi.tokenize(list(texts)))
        return [
            (" ".join(self._terms(tokens)), noun_phrases(tokens, start))
            for tokens, start in zip(results, phrase_from, strict=True)
        ]


_NOUN_TAGS = frozenset({"NNG", "NNP", "SH"})


def noun_phrases(tokens: Iterable[Any], start: int = 0) -> list[str]:
    """Maximal runs of adjacent nouns (``연차`` ``유급`` ``휴가`` → ``연차유급휴가``) and
    single proper nouns; a lone common noun (``경우``, ``규정``) is too generic to be an
    entity. Runs break at any other morpheme or a gap of more than one space."""
    phrases: list[str] = []
    run: list[Any] = []

    def close() -> None:
        if len(run) >= 2 or (len(run) == 1 and run[0].tag == "NNP" and len(run[0].form) >= 2):
            phrases.append("".join(t.form for t in run))
        run.clear()

    for tok in tokens:
        if tok.start < start:
            continue
        if tok.tag in _NOUN_TAGS and tok.form not in _SINGLE_CHAR_NOISE:
            gap = tok.start - (run[-1].start + run[-1].len) if run else 0
            # two proper nouns side by side (삼성전자 서울) are two entities
            if run and (gap > 1 or (gap == 1 and "NNP" in (tok.tag, run[-1].tag))):
                close()
            run.append(tok)
            if len(run) == 6:
                close()
        else:
            close()
    close()
    return phrases


def hangul_ratio(text: str) -> float:
    """Share of Hangul among letters: a cheap, robust language signal for ko vs en."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    hangul = sum(1 for c in letters if "\uac00" <= c <= "\ud7a3" or "\u3131" <= c <= "\u318e")
    return hangul / len(letters)


def detect_language(text: str) -> str | None:
    """'ko', 'en' or None — enough to weigh fusion signals by the embedder's competence."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    ratio = hangul_ratio(text)
    if ratio >= 0.3:
        return "ko"
    if sum(1 for c in letters if c.isascii()) / len(letters) >= 0.7:
        return "en"
    return None
