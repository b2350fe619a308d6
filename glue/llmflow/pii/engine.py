"""The PII analyzer: Presidio's ``AnalyzerEngine`` on a no-op NLP engine, Korean recognizers.

Why no spaCy: the default English pipeline labels Korean RRNs and phone numbers as dates,
costs ~90 ms per KB, and no model can be downloaded in an air-gapped install. Every
recognizer is a regex plus validation (:mod:`llmflow.pii.recognizers`). Korean has no
tokens to match context words against, so context is looked up in a character window
around each match instead of Presidio's lemma-based enhancer.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, NoOpNlpEngine

from llmflow.pii.config import PiiConfig
from llmflow.pii.recognizers import build_recognizers
from llmflow.pii.report import PiiFinding, PiiReport

__all__ = ["PiiEngine", "PiiFinding", "WindowContextEnhancer"]

_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")
# English predefined recognizers that ours replace (Presidio's libphonenumber recognizer
# alone costs 2-29 ms/KiB) or that find nothing personal (dates, UUIDs).
_EN_REPLACED = {
    "EMAIL_ADDRESS", "CREDIT_CARD", "IP_ADDRESS", "PHONE_NUMBER", "DATE_TIME", "URL", "UUID",
}  # fmt: skip


class PiiEngine:
    """Finds PII in text. Build once per process (imports Presidio, compiles patterns) and
    share: :meth:`analyze` is thread-safe (it holds no per-call state)."""

    def __init__(self, config: PiiConfig) -> None:
        self.config = config
        self.languages = list(config.languages)
        self._analyzer = _build_analyzer(config)
        self._thresholds = {
            entity: rc.threshold
            for entity, rc in config.recognizers.items()
            if rc.threshold is not None
        }
        # The no-op NLP engine builds an empty spaCy Doc per call; the recognizers never
        # read it, so one per language is enough.
        self._artifacts = {
            lang: self._analyzer.nlp_engine.process_text("", lang) for lang in self.languages
        }
        self._entities = {
            lang: self._analyzer.get_supported_entities(language=lang) for lang in self.languages
        }
        for lang in self.languages:  # Presidio compiles regexes lazily: do it now, once.
            self._analyzer.analyze(text="warm-up 010-0000-0000 김철수 과장", language=lang)

    @property
    def entities(self) -> list[str]:
        """Entity types this engine can report."""
        return sorted(self._analyzer.get_supported_entities(language=self.languages[0]))

    def analyze(
        self,
        text: str,
        language: str | None = None,
        entities: Sequence[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[PiiFinding]:
        """Find PII in ``text``; ``language`` picks a recognizer set, else Hangul in the
        text picks "ko".

        Overlapping findings are resolved to the most confident (then longest) one, so a
        report counts places in the text, not recognizer hits.
        """
        if not text.strip():
            return []
        threshold = self.config.score_threshold if score_threshold is None else score_threshold
        lang = self._language_for(text, language)
        results = self._analyzer.analyze(
            text=text,
            language=lang,
            entities=list(entities) if entities else self._entities[lang],
            score_threshold=min([threshold, *self._thresholds.values()]),
            nlp_artifacts=self._artifacts[lang],
        )
        ranked = sorted(results, key=lambda r: (-r.score, r.start - r.end, r.start, r.entity_type))
        kept: list[PiiFinding] = []
        for r in ranked:
            if r.score < self._thresholds.get(r.entity_type, threshold):
                continue
            if _is_dummy_value(text[r.start : r.end]):
                continue
            if all(r.end <= k.start or r.start >= k.end for k in kept):
                meta = r.recognition_metadata or {}
                recognizer = str(meta.get(RecognizerResult.RECOGNIZER_NAME_KEY, ""))
                score = round(r.score, 4)
                kept.append(PiiFinding(r.entity_type, r.start, r.end, score, recognizer))
        return sorted(kept, key=lambda f: (f.start, f.end))

    def report(self, texts: Iterable[str]) -> PiiReport:
        """Scan every text of one document into a single report."""
        report = PiiReport()
        for text in texts:
            report.add(self.analyze(text))
        return report

    def _language_for(self, text: str, language: str | None) -> str:
        if language in self.languages:
            return language
        if "ko" in self.languages and (_HANGUL.search(text) or "en" not in self.languages):
            return "ko"
        return "en" if "en" in self.languages else self.languages[0]


def _is_dummy_value(value: str) -> bool:
    """Template values such as 010-0000-0000 or 000-00-00000 identify nobody."""
    digits = "".join(ch for ch in value if ch.isdigit())
    return len(digits) >= 8 and not digits[3:].strip("0")


def _build_analyzer(config: PiiConfig) -> AnalyzerEngine:
    languages = list(config.languages)
    nlp_engine = NoOpNlpEngine(
        models=[{"lang_code": lang, "model_name": "no_op"} for lang in languages]
    )
    registry = _FrozenRegistry(supported_languages=languages)
    # The predefined loader warns once per recognizer of a language we do not run (es, it,
    # pl, ...): noise in every process start.
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if "en" in languages:
        # Presidio's English pattern recognizers (US SSN, IBAN, ...) for English text.
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
        registry.recognizers = [
            r
            for r in registry.recognizers
            if not _EN_REPLACED & set(r.supported_entities)
            and all(config.enabled(e) for e in r.supported_entities)
        ]
    # Korean identifiers also appear in English documents of Korean companies, so the
    # Korean set runs for every language.
    for lang in languages:
        for recognizer in build_recognizers(lang, config.enabled):
            registry.add_recognizer(recognizer)
    return _KoreanAnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=languages,
        default_score_threshold=config.score_threshold,
        context_aware_enhancer=WindowContextEnhancer(
            context_similarity_factor=0.35,
            min_score_with_context_similarity=0.4,
            context_prefix_count=config.context_window[0],
            context_suffix_count=config.context_window[1],
        ),
    )


class _FrozenRegistry(RecognizerRegistry):
    """A registry that answers ``get_recognizers`` from a cache once built.

    Presidio filters the recognizer list per requested entity on every call (a list
    comprehension over entities × recognizers: a sixth of the analysis time here); our
    registry never changes after the engine is built.
    """

    def get_recognizers(
        self,
        language: str,
        entities: list[str] | None = None,
        all_fields: bool = False,
        ad_hoc_recognizers: list[EntityRecognizer] | None = None,
    ) -> list[EntityRecognizer]:
        if ad_hoc_recognizers:
            return list(super().get_recognizers(language, entities, all_fields, ad_hoc_recognizers))
        key = (language, tuple(entities or ()), all_fields)
        cache: dict[tuple[str, tuple[str, ...], bool], list[EntityRecognizer]]
        cache = self.__dict__.setdefault("_llmflow_cache", {})
        found = cache.get(key)
        if found is None:
            found = list(super().get_recognizers(language, entities, all_fields))
            cache[key] = found
        return found


class _KoreanAnalyzerEngine(AnalyzerEngine):
    """Presidio's engine with one context pass instead of one per recognizer.

    The stock engine offers every recognizer its own results for recognizer-level context
    enhancement — O(recognizers × results) list building per call, a fifth of the whole
    analysis time with 40 recognizers — and none of ours (nor Presidio's Korean pattern
    recognizers) implements it. The window enhancer then runs once over all results.
    """

    def _enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        return self.context_aware_enhancer.enhance_using_context(
            text=text,
            raw_results=raw_results,
            nlp_artifacts=nlp_artifacts,
            recognizers=recognizers,
            context=context,
        )


class WindowContextEnhancer(ContextAwareEnhancer):
    """Looks for a recognizer's context words as substrings of the characters around a
    match: works for Korean without a tokenizer, and for English under the no-op NLP
    engine. Scoring mirrors Presidio's lemma enhancer (+0.35, at least 0.4)."""

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        by_id = {r.id: r for r in recognizers}
        extra = [word.lower() for word in context or []]
        lowered: str | None = None
        for result in raw_results:
            meta = result.recognition_metadata or {}
            recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, ""))
            if recognizer is None or not recognizer.context or result.score >= self.MAX_SCORE:
                continue
            if meta.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                continue
            if lowered is None:
                lowered = text.lower()
            window = (
                lowered[max(0, result.start - self.context_prefix_count) : result.start]
                + "\n"
                + lowered[result.end : result.end + self.context_suffix_count]
            )
            words = [w.lower() for w in recognizer.context] + extra
            if any(word and word in window for word in words):
                boosted = max(
                    result.score + self.context_similarity_factor,
                    self.min_score_with_context_similarity,
                )
                result.score = min(boosted, self.MAX_SCORE)
                meta[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
        return raw_results
