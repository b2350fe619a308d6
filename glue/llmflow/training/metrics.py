"""Rule-based answer metrics: exact match, ROUGE-L, BLEU and domain regex checks.

Tokenisation is what makes ROUGE/BLEU meaningful on Korean. Whitespace tokens ("어절") glue
particles and endings to stems (연차는, 연차를, 연차가 are three different tokens), so two
answers that say the same thing share few tokens. Two Korean-aware tokenisers are offered:

* ``char`` (default): Hangul is split into syllables, other scripts into words (letters and
  digits runs), punctuation dropped. Needs no model, is deterministic and language-neutral;
  syllable n-grams are the usual choice for Korean MT/summarisation scores.
* ``morph``: Kiwi morphemes (``llmflow.index.lexical.KoreanAnalyzer``, the platform's lexical
  analyser), closer to "words" but depends on the analyser's model and version.

Scores are in [0, 1]. BLEU is sentence BLEU-4 with uniform weights, the brevity penalty and
add-one smoothing of the 2-4-gram precisions (Lin & Och 2004), averaged over examples by
:func:`score_examples`; corpus BLEU is :func:`corpus_bleu`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

Tokenizer = Callable[[str], list[str]]
TokenizerName = Literal["char", "morph"]

_HANGUL = r"\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f"
_TOKEN = re.compile(rf"[{_HANGUL}]|[^\W{_HANGUL}_]+", re.UNICODE)


def normalize(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed, surrounding punctuation removed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return text.strip(" .,!?;:'\"()[]{}。、")


def char_tokens(text: str) -> list[str]:
    """Hangul syllables and non-Hangul word runs of the normalised text."""
    return _TOKEN.findall(normalize(text))


def morph_tokenizer(analyzer: object) -> Tokenizer:
    """Kiwi morphemes through the platform's analyser (``KoreanAnalyzer.analyze``)."""
    analyze = analyzer.analyze  # type: ignore[attr-defined]

    def tokens(text: str) -> list[str]:
        return str(analyze(normalize(text))).split()

    return tokens


def exact_match(prediction: str, reference: str) -> float:
    return 1.0 if normalize(prediction) == normalize(reference) else 0.0


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str, tokenize: Tokenizer = char_tokens) -> float:
    """ROUGE-L F1 (longest common subsequence of tokens)."""
    p, r = tokenize(prediction), tokenize(reference)
    lcs = _lcs(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def _bleu_stats(p: Sequence[str], r: Sequence[str], max_n: int) -> list[tuple[int, int]]:
    stats = []
    for n in range(1, max_n + 1):
        pn, rn = _ngrams(p, n), _ngrams(r, n)
        stats.append((sum((pn & rn).values()), max(len(p) - n + 1, 0)))
    return stats


def _bleu_from(stats: Sequence[tuple[int, int]], hyp_len: int, ref_len: int, smooth: bool) -> float:
    if hyp_len == 0:
        return 0.0
    logs = []
    for n, (match, total) in enumerate(stats, 1):
        if smooth and n > 1:
            match, total = match + 1, total + 1
        if match == 0 or total == 0:
            return 0.0
        logs.append(math.log(match / total))
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return bp * math.exp(sum(logs) / len(logs))


def bleu(
    prediction: str, reference: str, tokenize: Tokenizer = char_tokens, max_n: int = 4
) -> float:
    """Sentence BLEU-``max_n`` with add-one smoothing for n > 1."""
    p, r = tokenize(prediction), tokenize(reference)
    n = min(max_n, max(len(r), 1))
    return _bleu_from(_bleu_stats(p, r, n), len(p), len(r), smooth=True)


def corpus_bleu(
    predictions: Sequence[str], references: Sequence[str], tokenize: Tokenizer = char_tokens
) -> float:
    """Corpus BLEU-4 (Papineni et al.): n-gram counts summed over the corpus, no smoothing."""
    totals = [(0, 0)] * 4
    hyp_len = ref_len = 0
    for pred, ref in zip(predictions, references, strict=True):
        p, r = tokenize(pred), tokenize(ref)
        hyp_len, ref_len = hyp_len + len(p), ref_len + len(r)
        totals = [
            (a + m, b + t) for (a, b), (m, t) in zip(totals, _bleu_stats(p, r, 4), strict=True)
        ]
    return _bleu_from(totals, hyp_len, ref_len, smooth=False)


@dataclass(frozen=True, slots=True)
class RegexCheck:
    """A domain rule: the answer must (or must not) match ``pattern``, e.g. an article
    citation ``제\\d+조``, a date format, no resident registration number."""

    name: str
    pattern: str
    must_match: bool = True

    def passes(self, text: str) -> bool:
        return (re.search(self.pattern, text) is not None) == self.must_match


@dataclass(frozen=True, slots=True)
class ExampleScores:
    exact_match: float
    rouge_l: float
    bleu: float
    regex: dict[str, bool]


def score_example(
    prediction: str,
    reference: str,
    checks: Sequence[RegexCheck] = (),
    tokenize: Tokenizer = char_tokens,
) -> ExampleScores:
    return ExampleScores(
        exact_match=exact_match(prediction, reference),
        rouge_l=rouge_l(prediction, reference, tokenize),
        bleu=bleu(prediction, reference, tokenize),
        regex={c.name: c.passes(prediction) for c in checks},
    )


def aggregate(scores: Sequence[ExampleScores]) -> dict[str, float]:
    """Means over examples; a regex check's pass rate as ``regex_<name>``."""
    if not scores:
        return {}
    n = len(scores)
    out = {
        "exact_match": sum(s.exact_match for s in scores) / n,
        "rouge_l": sum(s.rouge_l for s in scores) / n,
        "bleu": sum(s.bleu for s in scores) / n,
    }
    for name in scores[0].regex:
        out[f"regex_{name}"] = sum(1.0 for s in scores if s.regex.get(name)) / n
    return out
