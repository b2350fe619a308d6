"""First-pass PII scan of ingested text: Presidio pattern recognizers, no NLP model.

Why no spaCy: the default English pipeline labels Korean RRNs and phone numbers as dates,
costs ~90 ms per KB, and no model can be downloaded in an air-gapped install. Every
recognizer here is a regex plus checksum/validation, so the analyzer runs on Presidio's
``NoOpNlpEngine``. Korean is agglutinative ("카드번호는", "010-1234-5678로") and has no
tokens to match context words against, so context is looked up in a character window
around each match instead of Presidio's lemma-based enhancer.

The full Korean PII engine (names, addresses, ...) plugs into the same seam later:
:meth:`PiiScanner.scan` returns :class:`PiiFinding` s and :class:`PiiReport` aggregates them.
Neither ever holds the matched text, because reports are stored with the document.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer

SUPPORTED_LANGUAGES = ("ko", "en")
_HANGUL = re.compile(r"[\uac00-\ud7a3\u3131-\u318e]")

# Digit-aware boundaries instead of Presidio's ``\b``: Hangul is a word character, so
# ``\b`` fails between a number and an attached particle ("4242-...-4242로").
_PHONE_AREA = r"(?:01[016789]|02|0[3-6][1-5]|070|080|050[2-8])"
_PHONE_NUMBER = r"\d{3,4}[-. ]\d{4}(?![\d-])"
_PHONE_PATTERNS: tuple[tuple[str, str, float], ...] = (
    ("KR phone", rf"(?<![\d.+-])\(?{_PHONE_AREA}(?:\)\s?|[-. ]){_PHONE_NUMBER}", 0.5),
    ("KR phone +82", r"(?<![\d+])\+82[-. ]?(?:\(0\))?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?"
     r"\d{3,4}[-. ]?\d{4}(?!\d)", 0.6),
    ("KR mobile, no separators", r"(?<!\d)01[016789]\d{7,8}(?!\d)", 0.4),
    # Company representative numbers (1588-xxxx): only with phone context nearby.
    ("KR representative number", r"(?<![\d-])1(?:5[4-9]|6\d|8\d)\d-\d{4}(?![\d-])", 0.3),
    # "+CC" and 9+ digits in all: "+12 34 56" in a formula is not a phone number.
    ("International", r"(?<![\w+])\+(?!82)(?=(?:[-. ()]{0,2}\d){9})[1-9]\d{0,2}[-. ]?"
     r"(?:\(\d{1,4}\)|\d{1,4})(?:[-. ]?\d{2,4}){2,4}(?![\d-])", 0.5),
    ("NANP", r"(?<![\d-])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ])[2-9]\d{2}[-.]\d{4}(?![\d-])", 0.3),
)  # fmt: skip
_EMAIL_PATTERN = (
    # ASCII only: Presidio's ``\w`` would take "메일은kim@corp.co.kr입니다" as one address.
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
)
_CARD_PATTERN = (
    r"(?<![\d-])(?:4\d{3}|5[0-5]\d{2}|6\d{3}|3\d{3})(?:[- ]?\d{3,4}){2}[- ]?\d{3,5}(?![\d-])"
)
_IPV4_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4_PATTERN = rf"(?<![\d.]){_IPV4_OCTET}(?:\.{_IPV4_OCTET}){{3}}(?![\d.]\d)"
# Presidio scores a match 1.0 once ``validate_result`` passes, and for driver's licences
# (region code only) and BRNs (a 1-in-10 checksum) that makes any 12- or 10-digit run a
# certain hit ("KEPCO-2026-04827193"). We keep only the printed, dashed layouts.
_BRN_PATTERN = r"(?<![\d-])\d{3}-\d{2}-\d{5}(?![\d-])"
_DRIVER_LICENSE_PATTERN = r"(?<![\d-])\d{2}-\d{2}-\d{6}-\d{2}(?![\d-])"

# Words that raise a weak match's score when found near it (Presidio's Korean recognizers
# ship Korean context words except for the RRN; the generic ones ship English only).
_CONTEXT = {
    "KR_RRN": ["주민등록번호", "주민번호", "주민등록", "resident registration", "rrn"],
    "PHONE_NUMBER": ["전화", "연락처", "휴대폰", "핸드폰", "휴대전화", "직통", "팩스", "대표번호",
                     "센터", "내선", "핫라인", "상담", "문의", "tel", "phone", "mobile", "fax"],
    "EMAIL_ADDRESS": ["이메일", "메일", "email", "e-mail"],
    "CREDIT_CARD": ["카드", "신용카드", "체크카드", "card", "visa", "mastercard", "amex"],
    "IP_ADDRESS": ["ip", "아이피", "접속", "서버", "server", "host"],
}  # fmt: skip
# English predefined recognizers replaced by the ones above (Presidio's libphonenumber
# PhoneRecognizer alone costs 2-29 ms/KiB) or dropped as not personal (dates, URLs, UUIDs).
_EN_DROPPED = {"EMAIL_ADDRESS", "CREDIT_CARD", "IP_ADDRESS", "PHONE_NUMBER", "DATE_TIME", "URL",
               "UUID"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One detected PII span; offsets into the scanned text, never the text itself."""

    entity_type: str
    start: int
    end: int
    score: float


@dataclass(slots=True)
class PiiReport:
    """PII found in one document, safe to store: counts per entity type, no values."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    max_score: float = 0.0

    @classmethod
    def from_findings(cls, findings: Iterable[PiiFinding]) -> PiiReport:
        """Aggregate findings (from any number of texts) into one report."""
        report = cls()
        report.add(findings)
        return report

    def add(self, findings: Iterable[PiiFinding]) -> None:
        """Fold more findings into the report (e.g. the next element of the document)."""
        counts = Counter(self.counts)
        for finding in findings:
            counts[finding.entity_type] += 1
            self.max_score = max(self.max_score, finding.score)
        self.counts = dict(sorted(counts.items()))
        self.total = sum(self.counts.values())

    @property
    def has_pii(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form stored per document."""
        return {"counts": dict(self.counts), "total": self.total, "max_score": self.max_score}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PiiReport:
        """Read back what :meth:`to_dict` stored."""
        counts = {str(k): int(v) for k, v in dict(data.get("counts", {})).items()}
        max_score = float(data.get("max_score", 0.0))
        return cls(counts=counts, total=sum(counts.values()), max_score=max_score)


class PiiScanner:
    """Scans text for PII with regex/checksum recognizers; build once, then share.

    Building imports Presidio (seconds: it pulls in torch/transformers) and compiles the
    recognizers, so the ingest worker keeps one instance. ``score_threshold`` drops weak
    matches: patterns that are ambiguous on their own (passport numbers, 1588-xxxx and
    North American numbers, US bank numbers) only pass with a context word nearby.
    """

    def __init__(
        self, languages: Sequence[str] = SUPPORTED_LANGUAGES, score_threshold: float = 0.4
    ) -> None:
        unknown = [lang for lang in languages if lang not in SUPPORTED_LANGUAGES]
        if not languages or unknown:
            raise ValueError(
                f"PII scan languages must be a non-empty subset of {SUPPORTED_LANGUAGES}; "
                f"got {list(languages)}"
            )
        self.languages = list(dict.fromkeys(languages))
        self.score_threshold = score_threshold
        self._analyzer = _build_analyzer(self.languages, score_threshold)
        for lang in self.languages:  # Presidio compiles regexes lazily: do it now, once.
            self._analyzer.analyze(text="warm-up 010-0000-0000", language=lang)

    def scan(self, text: str, language: str | None = None) -> list[PiiFinding]:
        """Find PII in ``text``; ``language`` picks a configured recognizer set, else Hangul
        in the text picks "ko".

        Overlapping findings of different types are resolved to the most confident one, so
        the counts in a report are counts of places in the text, not of recognizer hits.
        """
        if not text.strip():
            return []
        results = self._analyzer.analyze(text=text, language=self._language_for(text, language))
        ranked = sorted(results, key=lambda r: (-r.score, r.start - r.end, r.start, r.entity_type))
        kept: list[PiiFinding] = []
        for r in ranked:
            if _is_dummy_value(text[r.start : r.end]):
                continue
            if all(r.end <= k.start or r.start >= k.end for k in kept):
                kept.append(PiiFinding(r.entity_type, r.start, r.end, round(r.score, 4)))
        return sorted(kept, key=lambda f: (f.start, f.end))

    def scan_elements(self, texts: Iterable[str]) -> PiiReport:
        """Scan every element text of one document into a single report."""
        report = PiiReport()
        for text in texts:
            report.add(self.scan(text))
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


def _build_analyzer(languages: list[str], score_threshold: float) -> AnalyzerEngine:
    """Wire Presidio: no-op NLP engine, pattern recognizers only, window context."""
    from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NoOpNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        IpRecognizer,
        KrBrnRecognizer,
        KrDriverLicenseRecognizer,
        KrFrnRecognizer,
        KrPassportRecognizer,
        KrRrnRecognizer,
    )

    nlp_engine = NoOpNlpEngine(
        models=[{"lang_code": lang, "model_name": "no_op"} for lang in languages]
    )
    registry = RecognizerRegistry(supported_languages=languages)
    if "en" in languages:
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
        registry.recognizers = [
            r for r in registry.recognizers if not _EN_DROPPED & set(r.supported_entities)
        ]
    # Korean identifiers also appear in English documents of Korean companies, so the
    # Korean set runs for every language.
    for lang in languages:
        phone = [Pattern(name, regex, score) for name, regex, score in _PHONE_PATTERNS]
        recognizers: list[EntityRecognizer] = [
            KrRrnRecognizer(supported_language=lang,
                            context=KrRrnRecognizer.CONTEXT + _CONTEXT["KR_RRN"]),
            KrFrnRecognizer(supported_language=lang),
            KrBrnRecognizer(patterns=[Pattern("BRN", _BRN_PATTERN, 0.1)], supported_language=lang),
            KrPassportRecognizer(supported_language=lang),
            KrDriverLicenseRecognizer(patterns=[Pattern("Driver licence", _DRIVER_LICENSE_PATTERN,
                                                        0.05)], supported_language=lang),
            PatternRecognizer("PHONE_NUMBER", name="PhoneRecognizer", patterns=phone,
                              context=_CONTEXT["PHONE_NUMBER"], supported_language=lang),
            PatternRecognizer("EMAIL_ADDRESS", name="EmailRecognizer",
                              patterns=[Pattern("Email", _EMAIL_PATTERN, 0.6)],
                              context=_CONTEXT["EMAIL_ADDRESS"], supported_language=lang),
            CreditCardRecognizer(patterns=[Pattern("Card", _CARD_PATTERN, 0.3)],
                                 context=_CONTEXT["CREDIT_CARD"], supported_language=lang),
            IpRecognizer(patterns=[Pattern("IPv4", _IPV4_PATTERN, 0.5)],
                         context=_CONTEXT["IP_ADDRESS"], supported_language=lang),
        ]  # fmt: skip
        for recognizer in recognizers:
            registry.add_recognizer(recognizer)
    return AnalyzerEngine(
        registry=registry,
        nlp_engine=nlp_engine,
        supported_languages=languages,
        default_score_threshold=score_threshold,
        context_aware_enhancer=_window_context_enhancer(),
    )


def _window_context_enhancer(
    prefix_chars: int = 30, suffix_chars: int = 10
) -> ContextAwareEnhancer:
    """A ContextAwareEnhancer that looks for a recognizer's context words as substrings of
    the characters around a match: works for Korean without a tokenizer, and for English
    under the no-op NLP engine. Scoring mirrors Presidio's lemma enhancer (+0.35, >= 0.4)."""
    from presidio_analyzer import RecognizerResult
    from presidio_analyzer.context_aware_enhancers import ContextAwareEnhancer
    from presidio_analyzer.nlp_engine import NlpArtifacts

    class WindowContextEnhancer(ContextAwareEnhancer):
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
            for result in raw_results:
                meta = result.recognition_metadata or {}
                recognizer = by_id.get(meta.get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, ""))
                if recognizer is None or not recognizer.context:
                    continue
                if meta.get(RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY):
                    continue
                window = (
                    text[max(0, result.start - self.context_prefix_count) : result.start]
                    + "\n"
                    + text[result.end : result.end + self.context_suffix_count]
                ).lower()
                words = [w.lower() for w in recognizer.context] + extra
                if any(word and word in window for word in words):
                    boosted = result.score + self.context_similarity_factor
                    boosted = max(boosted, self.min_score_with_context_similarity)
                    result.score = min(boosted, self.MAX_SCORE)
            return raw_results

    return WindowContextEnhancer(
        context_similarity_factor=0.35,
        min_score_with_context_similarity=0.4,
        context_prefix_count=prefix_chars,
        context_suffix_count=suffix_chars,
    )
