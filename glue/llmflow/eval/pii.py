"""`llmflow eval pii`: PII detection quality and throughput against a labelled corpus.

Three dataset formats load into one sample type (:class:`PiiSample`):

* ``ko-pii-spans`` — JSONL ``{"text", "spans": [{"label", "start", "end", "text"}]}``;
* ``ko-pii`` — JSONL ``{"text", "pii": [{"type", "text"}]}`` without offsets: each entity is
  located in the text, the k-th listing of a text at its k-th occurrence (see
  :func:`locate_entities`); one that cannot be found keeps
  ``start``/``end`` of ``None`` and still takes part in entity-set matching;
* ``presidio`` — presidio-research ``InputSample`` JSON: a list of
  ``{"full_text", "spans": [{"entity_type", "entity_value", "start_position",
  "end_position"}]}``.

Offsets everywhere are Python ``str`` indices (Unicode code points), end exclusive. A span
whose ``text`` disagrees with the document at its offsets is rejected, because it almost always
means byte or UTF-16 offsets, which would silently score as misses.

Three matching rules, each reported as micro precision/recall/F1 overall and per label:

* ``exact`` — same label, same ``start`` and ``end``;
* ``overlap`` — same label and at least one shared character; each gold span and each
  prediction is matched at most once, pairs taken greedily by overlap size;
* ``entity-set`` — position-insensitive: per document, the **set** of
  ``(label, normalised text)`` pairs (whitespace runs collapsed to one space, ends stripped).
  A set rather than a multiset because the question it answers is "was every distinct
  personal value in this document found", which is what value-based masking needs; repeated
  mentions are already counted by the two positional rules.

Labels are stripped of surrounding whitespace on both sides. A detector's labels are translated
to the evaluation labels through ``label_map`` (a label mapped to ``None`` is dropped and counted
in ``dropped_predictions``; a label missing from the map is kept as is). ``gold_label_map`` does
the same for the dataset's labels (the presidio default folds ``STREET_ADDRESS`` and ``GPE`` into
``LOCATION``). A gold label the detector never emits still counts against recall.

A ratio with a zero denominator is 0.0, except when there was nothing to find and nothing was
predicted (tp = fp = fn = 0), which scores 1.0.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

from llmflow.errors import InvalidRequest
from llmflow.eval.metrics import percentile

PiiFormat = Literal["ko-pii-spans", "ko-pii", "presidio"]
MatchRule = Literal["exact", "overlap", "entity-set"]

PII_FORMATS: tuple[PiiFormat, ...] = get_args(PiiFormat)
MATCH_RULES: tuple[MatchRule, ...] = get_args(MatchRule)

LabelMap = Mapping[str, str | None]

#: Detector label → presidio-research dataset label. Presidio's own entity names map to
#: themselves; the Korean corpus labels (which our engine emits) map to their nearest
#: presidio-research counterpart. Korean-only identifiers (RRN, BUSINESS_REG, …) are absent on
#: purpose: found in that English corpus they are false positives under their own label.
PRESIDIO_RESEARCH_LABEL_MAP: dict[str, str | None] = {
    # Presidio entity types
    "PERSON": "PERSON",
    "LOCATION": "LOCATION",
    "ADDRESS": "LOCATION",
    "STREET_ADDRESS": "LOCATION",
    "GPE": "LOCATION",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "DATE_TIME": "DATE_TIME",
    "ORGANIZATION": "ORGANIZATION",
    "NRP": "NRP",
    "IP_ADDRESS": "IP_ADDRESS",
    "URL": "DOMAIN_NAME",
    "DOMAIN_NAME": "DOMAIN_NAME",
    "AGE": "AGE",
    "TITLE": "TITLE",
    "ZIP_CODE": "ZIP_CODE",
    # Korean corpus labels
    "PHONE": "PHONE_NUMBER",
    "FAX": "PHONE_NUMBER",
    "EMAIL": "EMAIL_ADDRESS",
    "CARD": "CREDIT_CARD",
    "IP": "IP_ADDRESS",
    "DT_BIRTH": "DATE_TIME",
    "POSTAL_CODE": "ZIP_CODE",
    "POSITION": "TITLE",
    "NATIONALITY": "NRP",
    "DRIVER_LICENSE": "US_DRIVER_LICENSE",
}

#: presidio-research dataset label → evaluation label: street addresses and geo-political
#: entities are both "where someone is", and no detector we compare separates them.
PRESIDIO_RESEARCH_GOLD_MAP: dict[str, str | None] = {
    "STREET_ADDRESS": "LOCATION",
    "GPE": "LOCATION",
}

_WS = re.compile(r"\s+")


# ── data types ──────────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class GoldSpan:
    """One annotated entity. ``start``/``end`` are ``None`` when the dataset gave no offsets and
    the text could not be located in the document."""

    label: str
    start: int | None
    end: int | None
    text: str

    @property
    def located(self) -> bool:
        return self.start is not None and self.end is not None


@dataclass(slots=True)
class PiiSample:
    text: str
    spans: list[GoldSpan]
    sample_id: str = ""
    """Where the sample came from (``line 12``, ``sample 3``) for messages."""


@dataclass(frozen=True, slots=True)
class PredSpan:
    label: str
    start: int
    end: int
    text: str
    score: float | None = None
    recognizer: str | None = None


class DetectedSpan(Protocol):
    """What a detector may return: anything with ``label``, ``start`` and ``end`` (``text``,
    ``score`` and ``recognizer`` are read when present)."""

    @property
    def label(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...


Detector = Callable[[str], Sequence[DetectedSpan]]


@dataclass(slots=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp, self)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn, self)

    @property
    def f1(self) -> float:
        if self.tp == self.fp == self.fn == 0:
            return 1.0
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn)

    def add(self, other: Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
        }


def _ratio(num: int, den: int, c: Counts) -> float:
    if den:
        return num / den
    return 1.0 if c.tp == c.fp == c.fn == 0 else 0.0


@dataclass(slots=True)
class RuleScores:
    rule: MatchRule
    overall: Counts = field(default_factory=Counts)
    per_label: dict[str, Counts] = field(default_factory=dict)

    def label(self, name: str) -> Counts:
        return self.per_label.setdefault(name, Counts())


@dataclass(slots=True)
class Throughput:
    """Time spent inside the detector only (``time.perf_counter``, one process), and the CPU
    time of those calls (``time.process_time``): on a shared machine wall time drifts with
    the neighbours' load, CPU time per byte does not — it is the per-core figure."""

    documents: int = 0
    utf8_bytes: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    cpu_seconds: float = 0.0

    @property
    def mb_per_cpu_s(self) -> float | None:
        """Megabytes per CPU second: throughput per core."""
        return self.utf8_bytes / 1e6 / self.cpu_seconds if self.cpu_seconds > 0 else None

    @property
    def docs_per_s(self) -> float | None:
        return self.documents / self.seconds if self.seconds > 0 else None

    @property
    def mb_per_s(self) -> float | None:
        """Megabytes (10**6 bytes of UTF-8) per second."""
        return self.utf8_bytes / 1e6 / self.seconds if self.seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        dps, mbs = self.docs_per_s, self.mb_per_s
        return {
            "documents": self.documents,
            "utf8_bytes": self.utf8_bytes,
            "seconds": round(self.seconds, 4),
            "docs_per_s": round(dps, 2) if dps is not None else None,
            "mb_per_s": round(mbs, 4) if mbs is not None else None,
            "cpu_seconds": round(self.cpu_seconds, 4),
            "mb_per_cpu_s": round(self.mb_per_cpu_s, 4) if self.mb_per_cpu_s else None,
            "latency_p50_ms": round(percentile(self.latencies_ms, 50), 3),
            "latency_p99_ms": round(percentile(self.latencies_ms, 99), 3),
        }


@dataclass(slots=True)
class PiiEvalReport:
    dataset: str
    documents: int
    gold_spans: int
    predicted_spans: int
    rules: dict[MatchRule, RuleScores]
    support: dict[str, int]
    """Gold spans per (evaluation) label."""
    predicted: dict[str, int]
    """Predicted spans per (evaluation) label, after mapping."""
    unlocated_gold: int = 0
    """Gold spans without offsets: always misses under ``exact`` and ``overlap``."""
    dropped_predictions: dict[str, int] = field(default_factory=dict)
    """Predictions whose detector label ``label_map`` maps to ``None``, by detector label."""
    throughput: Throughput | None = None

    def labels(self) -> list[str]:
        """Every label seen in gold or predictions: by support (descending), then name."""
        names = set(self.support) | set(self.predicted)
        return sorted(names, key=lambda n: (-self.support.get(n, 0), n))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (``llmflow eval pii --json``)."""
        return {
            "dataset": self.dataset,
            "documents": self.documents,
            "gold_spans": self.gold_spans,
            "predicted_spans": self.predicted_spans,
            "unlocated_gold": self.unlocated_gold,
            "dropped_predictions": dict(sorted(self.dropped_predictions.items())),
            "overall": {rule: s.overall.to_dict() for rule, s in self.rules.items()},
            "per_label": {
                name: {
                    "support": self.support.get(name, 0),
                    "predicted": self.predicted.get(name, 0),
                    **{
                        rule: s.per_label.get(name, Counts()).to_dict()
                        for rule, s in self.rules.items()
                    },
                }
                for name in self.labels()
            },
            "throughput": self.throughput.to_dict() if self.throughput else None,
        }

    def render_table(self) -> str:
        """Plain-text table: one row per label and an overall row, P/R/F1 under each rule."""
        rules = list(self.rules)
        head = ["label", "support", "pred"] + [f"{r} {m}" for r in rules for m in ("P", "R", "F1")]
        rows: list[list[str]] = []

        def cells(name: str, support: int, pred: int, get: Callable[[RuleScores], Counts]) -> None:
            row = [name, str(support), str(pred)]
            for r in rules:
                c = get(self.rules[r])
                row += [f"{c.precision:.3f}", f"{c.recall:.3f}", f"{c.f1:.3f}"]
            rows.append(row)

        for name in self.labels():
            cells(name, self.support.get(name, 0), self.predicted.get(name, 0), _of_label(name))
        cells("(micro)", self.gold_spans, self.predicted_spans, lambda s: s.overall)
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

        def line(r: list[str]) -> str:
            return "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )

        out = [line(head), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in rows[:-1]]
        out += ["  ".join("-" * w for w in widths), line(rows[-1])]
        lines = [f"{self.dataset}: {self.documents} documents, {self.gold_spans} gold spans", ""]
        lines += out
        if self.unlocated_gold:
            lines.append(f"\n{self.unlocated_gold} gold spans could not be located in their text")
        if self.dropped_predictions:
            dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped_predictions.items()))
            lines.append(f"dropped predictions (unmapped labels): {dropped}")
        if self.throughput and self.throughput.seconds > 0:
            t = self.throughput.to_dict()
            lines.append(
                f"\ndetector: {t['docs_per_s']} docs/s, {t['mb_per_s']} MB/s wall, "
                f"{t['mb_per_cpu_s']} MB per CPU second "
                f"({t['utf8_bytes']} UTF-8 bytes in {t['seconds']} s, "
                f"p50 {t['latency_p50_ms']} ms, p99 {t['latency_p99_ms']} ms per document)"
            )
        return "\n".join(lines)


def _of_label(name: str) -> Callable[[RuleScores], Counts]:
    return lambda scores: scores.per_label.get(name, Counts())


# ── loading ─────────────────────────────────────────────────────────────────────────────────


def load_pii_dataset(path: Path, fmt: PiiFormat, limit: int | None = None) -> list[PiiSample]:
    """Read a PII dataset in one of :data:`PII_FORMATS`; ``limit`` keeps the first N samples.

    Raises :class:`InvalidRequest` naming the file and line (or sample index) of the first
    malformed record.
    """
    if fmt not in PII_FORMATS:
        raise InvalidRequest(f"unknown PII dataset format {fmt!r}; use one of {PII_FORMATS}")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read PII dataset {path}: {exc}") from exc
    if fmt == "presidio":
        return _presidio(path, raw, limit)
    parse = _ko_pii_spans if fmt == "ko-pii-spans" else _ko_pii
    samples: list[PiiSample] = []
    for where, item in _jsonl(path, raw):
        if limit is not None and len(samples) >= limit:
            break
        try:
            samples.append(parse(item, where))
        except _Malformed as exc:
            raise InvalidRequest(f"{path}: {where}: {exc} (format {fmt})") from None
    return samples


class _Malformed(ValueError):
    pass


def _jsonl(path: Path, raw: str) -> Iterable[tuple[str, dict[str, Any]]]:
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as exc:
            raise InvalidRequest(f"{path}: line {n}: not valid JSON: {exc}") from None
        if not isinstance(item, dict):
            raise InvalidRequest(f"{path}: line {n}: expected a JSON object per line")
        yield f"line {n}", item


def _text_field(item: Mapping[str, Any], key: str) -> str:
    text = item.get(key)
    if not isinstance(text, str):
        raise _Malformed(f"field {key!r} must be a string")
    return text


def _list_field(item: Mapping[str, Any], key: str) -> list[Any]:
    value = item.get(key, [])
    if not isinstance(value, list):
        raise _Malformed(f"field {key!r} must be a list")
    return value


def _label(value: Any, key: str, idx: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _Malformed(f"entity {idx}: {key!r} must be a non-empty string")
    return value.strip()


def _offsets(text: str, start: Any, end: Any, idx: int) -> tuple[int, int]:
    if type(start) is not int or type(end) is not int:
        raise _Malformed(f"entity {idx}: start/end must be integers")
    if not 0 <= start < end <= len(text):
        raise _Malformed(
            f"entity {idx}: offsets [{start}, {end}) outside the text (length {len(text)})"
        )
    return start, end


def _check_surface(text: str, start: int, end: int, surface: Any, idx: int) -> str:
    actual = text[start:end]
    if surface is None:
        return actual
    if surface != actual:
        raise _Malformed(
            f"entity {idx}: text {surface!r} differs from the document at [{start}, {end}) "
            f"({actual!r}); offsets must count Unicode code points, not bytes"
        )
    return actual


def _ko_pii_spans(item: Mapping[str, Any], where: str) -> PiiSample:
    text = _text_field(item, "text")
    spans: list[GoldSpan] = []
    for idx, s in enumerate(_list_field(item, "spans")):
        if not isinstance(s, dict):
            raise _Malformed(f"entity {idx}: expected an object")
        start, end = _offsets(text, s.get("start"), s.get("end"), idx)
        surface = _check_surface(text, start, end, s.get("text"), idx)
        spans.append(GoldSpan(_label(s.get("label"), "label", idx), start, end, surface))
    return PiiSample(text, spans, where)


def _ko_pii(item: Mapping[str, Any], where: str) -> PiiSample:
    text = _text_field(item, "text")
    entities: list[tuple[str, str]] = []
    for idx, e in enumerate(_list_field(item, "pii")):
        if not isinstance(e, dict):
            raise _Malformed(f"entity {idx}: expected an object")
        value = e.get("text")
        if not isinstance(value, str) or not value:
            raise _Malformed(f"entity {idx}: 'text' must be a non-empty string")
        entities.append((_label(e.get("type"), "type", idx), value))
    return PiiSample(text, locate_entities(text, entities), where)


def locate_entities(text: str, entities: Sequence[tuple[str, str]]) -> list[GoldSpan]:
    """Give offsets to ``(label, entity text)`` pairs listed without them.

    Occurrences are assigned in order per entity text: the k-th listing of a text gets the k-th
    occurrence of it that overlaps nothing already assigned. Counting per text rather than
    across the whole list keeps lists grouped by type (all names, then all phones) right. When
    the occurrences run out, the first free one anywhere is used, then the first not taken by an
    identical listing; text that does not occur keeps ``start``/``end`` of ``None``.
    """
    taken: list[tuple[int, int]] = []
    cursor: dict[str, int] = {}
    out: list[GoldSpan] = []
    for label, value in entities:
        size = len(value)
        occurrences = _occurrences(text, value)
        free = [o for o in occurrences if not any(o < e and s < o + size for s, e in taken)]
        pick = next((o for o in free if o >= cursor.get(value, 0)), None)
        if pick is None and free:
            pick = free[0]
        if pick is None:
            pick = next((o for o in occurrences if (o, o + size) not in taken), None)
        if pick is None:
            out.append(GoldSpan(label, None, None, value))
            continue
        taken.append((pick, pick + size))
        cursor[value] = pick + size
        out.append(GoldSpan(label, pick, pick + size, value))
    return out


def _occurrences(text: str, value: str) -> list[int]:
    found: list[int] = []
    i = text.find(value)
    while i >= 0:
        found.append(i)
        i = text.find(value, i + 1)
    return found


def _presidio(path: Path, raw: str, limit: int | None) -> list[PiiSample]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise InvalidRequest(
            f"{path}: presidio-research InputSample JSON must be a list of "
            '{"full_text", "spans": [...]} objects'
        )
    samples: list[PiiSample] = []
    for n, item in enumerate(data):
        if limit is not None and len(samples) >= limit:
            break
        where = f"sample {n}"
        try:
            if not isinstance(item, dict):
                raise _Malformed("expected an object")
            text = _text_field(item, "full_text")
            spans: list[GoldSpan] = []
            for idx, s in enumerate(_list_field(item, "spans")):
                if not isinstance(s, dict):
                    raise _Malformed(f"entity {idx}: expected an object")
                start, end = _offsets(text, s.get("start_position"), s.get("end_position"), idx)
                surface = _check_surface(text, start, end, s.get("entity_value"), idx)
                label = _label(s.get("entity_type"), "entity_type", idx)
                spans.append(GoldSpan(label, start, end, surface))
        except _Malformed as exc:
            raise InvalidRequest(f"{path}: {where}: {exc} (format presidio)") from None
        samples.append(PiiSample(text, spans, where))
    return samples


# ── predictions files ───────────────────────────────────────────────────────────────────────


def write_predictions(path: Path, predictions: Sequence[Sequence[PredSpan]]) -> None:
    """Write one JSONL line per sample, in sample order: ``{"spans": [{label, start, end,
    text, score?, recognizer?}]}``."""
    with path.open("w", encoding="utf-8") as fh:
        for spans in predictions:
            rows = []
            for p in spans:
                row: dict[str, Any] = {
                    "label": p.label,
                    "start": p.start,
                    "end": p.end,
                    "text": p.text,
                }
                if p.score is not None:
                    row["score"] = p.score
                if p.recognizer is not None:
                    row["recognizer"] = p.recognizer
                rows.append(row)
            fh.write(json.dumps({"spans": rows}, ensure_ascii=False) + "\n")


def read_predictions(
    path: Path, samples: Sequence[PiiSample], *, prefix: bool = False
) -> list[list[PredSpan]]:
    """Read a predictions JSONL file written for ``samples`` (same order, one line each).

    ``text`` may be omitted (it is then taken from the sample); ``score`` and ``recognizer``
    are optional. With ``prefix`` the file may hold more lines than ``samples`` (the samples are
    the first N of the dataset, as with ``limit``); the extra lines are not read.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"cannot read predictions {path}: {exc}") from exc
    out: list[list[PredSpan]] = []
    lines = list(_jsonl(path, raw))
    if prefix and len(lines) > len(samples):
        lines = lines[: len(samples)]
    if len(lines) != len(samples):
        raise InvalidRequest(
            f"{path}: {len(lines)} prediction lines for {len(samples)} samples; "
            "write one line per sample, in dataset order"
        )
    for (where, item), sample in zip(lines, samples, strict=True):
        try:
            spans: list[PredSpan] = []
            for idx, s in enumerate(_list_field(item, "spans")):
                if not isinstance(s, dict):
                    raise _Malformed(f"entity {idx}: expected an object")
                start, end = _offsets(sample.text, s.get("start"), s.get("end"), idx)
                score = s.get("score")
                if score is not None and not isinstance(score, int | float):
                    raise _Malformed(f"entity {idx}: 'score' must be a number")
                recognizer = s.get("recognizer")
                spans.append(
                    PredSpan(
                        _label(s.get("label"), "label", idx),
                        start,
                        end,
                        str(s["text"])
                        if isinstance(s.get("text"), str)
                        else sample.text[start:end],
                        float(score) if score is not None else None,
                        str(recognizer) if recognizer is not None else None,
                    )
                )
        except _Malformed as exc:
            raise InvalidRequest(f"{path}: {where}: {exc}") from None
        out.append(spans)
    return out


# ── scoring ─────────────────────────────────────────────────────────────────────────────────


def normalise_entity_text(text: str) -> str:
    """Whitespace runs to one space, ends stripped: the key of entity-set matching."""
    return _WS.sub(" ", text).strip()


def _map(label: str, mapping: LabelMap | None) -> str | None:
    label = label.strip()
    if mapping is None or label not in mapping:
        return label
    target = mapping[label]
    return target.strip() if target is not None else None


def _exact(gold: list[GoldSpan], pred: list[PredSpan]) -> int:
    g = Counter((s.start, s.end) for s in gold if s.start is not None and s.end is not None)
    p = Counter((s.start, s.end) for s in pred)
    return sum((g & p).values())


def _overlap(gold: list[GoldSpan], pred: list[PredSpan]) -> int:
    pairs: list[tuple[int, int, int, int]] = []
    for gi, g in enumerate(gold):
        if g.start is None or g.end is None:
            continue
        for pi, p in enumerate(pred):
            shared = min(g.end, p.end) - max(g.start, p.start)
            if shared > 0:
                # larger overlap first, then closer boundaries, then document order
                slack = abs(g.start - p.start) + abs(g.end - p.end)
                pairs.append((-shared, slack, gi, pi))
    pairs.sort()
    used_g: set[int] = set()
    used_p: set[int] = set()
    for _, _, gi, pi in pairs:
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
    return len(used_g)


def score_predictions(
    samples: Sequence[PiiSample],
    predictions: Sequence[Sequence[DetectedSpan]],
    label_map: LabelMap | None = None,
    gold_label_map: LabelMap | None = None,
    *,
    dataset: str = "",
    throughput: Throughput | None = None,
) -> PiiEvalReport:
    """Score pre-computed ``predictions`` (one list per sample, same order) against ``samples``
    under all three matching rules."""
    if len(predictions) != len(samples):
        raise InvalidRequest(
            f"{len(predictions)} prediction lists for {len(samples)} samples; "
            "give one list per sample, in dataset order"
        )
    rules = {r: RuleScores(r) for r in MATCH_RULES}
    support: Counter[str] = Counter()
    predicted: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    unlocated = 0
    for sample, raw_preds in zip(samples, predictions, strict=True):
        gold_by: dict[str, list[GoldSpan]] = {}
        for g in sample.spans:
            glabel = _map(g.label, gold_label_map)
            if glabel is None:
                continue
            gold_by.setdefault(glabel, []).append(g)
            support[glabel] += 1
            unlocated += not g.located
        pred_by: dict[str, list[PredSpan]] = {}
        for p in _as_pred_spans(sample.text, raw_preds):
            plabel = _map(p.label, label_map)
            if plabel is None:
                dropped[p.label.strip()] += 1
                continue
            pred_by.setdefault(plabel, []).append(p)
            predicted[plabel] += 1
        for name in gold_by.keys() | pred_by.keys():
            gold, pred = gold_by.get(name, []), pred_by.get(name, [])
            positional: tuple[tuple[MatchRule, int], ...] = (
                ("exact", _exact(gold, pred)),
                ("overlap", _overlap(gold, pred)),
            )
            for rule, tp in positional:
                c = Counts(tp, len(pred) - tp, len(gold) - tp)
                rules[rule].label(name).add(c)
                rules[rule].overall.add(c)
            gset = {normalise_entity_text(g.text) for g in gold}
            pset = {normalise_entity_text(p.text) for p in pred}
            c = Counts(len(gset & pset), len(pset - gset), len(gset - pset))
            rules["entity-set"].label(name).add(c)
            rules["entity-set"].overall.add(c)
    return PiiEvalReport(
        dataset=dataset,
        documents=len(samples),
        gold_spans=sum(support.values()),
        predicted_spans=sum(predicted.values()),
        rules=dict(rules),
        support=dict(support),
        predicted=dict(predicted),
        unlocated_gold=unlocated,
        dropped_predictions=dict(dropped),
        throughput=throughput,
    )


def _as_pred_spans(text: str, spans: Sequence[DetectedSpan]) -> list[PredSpan]:
    out: list[PredSpan] = []
    for s in spans:
        if isinstance(s, PredSpan):
            out.append(s)
            continue
        surface = getattr(s, "text", None)
        score = getattr(s, "score", None)
        recognizer = getattr(s, "recognizer", None)
        out.append(
            PredSpan(
                s.label,
                s.start,
                s.end,
                surface if isinstance(surface, str) else text[s.start : s.end],
                float(score) if isinstance(score, int | float) else None,
                str(recognizer) if recognizer is not None else None,
            )
        )
    return out


def run_detector(
    samples: Sequence[PiiSample], detect: Detector
) -> tuple[list[list[PredSpan]], Throughput]:
    """Run ``detect`` over every sample, timing only the calls themselves."""
    predictions: list[list[PredSpan]] = []
    tp = Throughput()
    for sample in samples:
        t, cpu = time.perf_counter(), time.process_time()
        spans = detect(sample.text)
        elapsed = time.perf_counter() - t
        tp.cpu_seconds += time.process_time() - cpu
        tp.seconds += elapsed
        tp.latencies_ms.append(elapsed * 1000)
        tp.documents += 1
        tp.utf8_bytes += len(sample.text.encode("utf-8"))
        predictions.append(_as_pred_spans(sample.text, spans))
    return predictions, tp


def evaluate(
    samples: Sequence[PiiSample],
    detect: Detector,
    label_map: LabelMap | None = None,
    gold_label_map: LabelMap | None = None,
    *,
    dataset: str = "",
) -> PiiEvalReport:
    """Run ``detect`` on every sample (single process, timed) and score it."""
    predictions, throughput = run_detector(samples, detect)
    return score_predictions(
        samples, predictions, label_map, gold_label_map, dataset=dataset, throughput=throughput
    )


def default_label_maps(fmt: PiiFormat) -> tuple[LabelMap | None, LabelMap | None]:
    """``(label_map, gold_label_map)`` used when the caller gives none: identity for the
    Korean formats (the engine emits the corpus labels), the presidio-research tables for
    ``presidio``."""
    if fmt == "presidio":
        return PRESIDIO_RESEARCH_LABEL_MAP, PRESIDIO_RESEARCH_GOLD_MAP
    return None, None


def run_pii_eval(
    dataset: Path,
    fmt: PiiFormat,
    detect: Detector | None = None,
    *,
    predictions: Path | None = None,
    label_map: LabelMap | None = None,
    gold_label_map: LabelMap | None = None,
    limit: int | None = None,
    write_predictions_to: Path | None = None,
) -> PiiEvalReport:
    """Load ``dataset`` and score either ``detect`` (run here, timed) or a ``predictions``
    JSONL file from another tool — exactly one of the two.

    Without ``label_map``/``gold_label_map`` the defaults of :func:`default_label_maps` apply.
    ``write_predictions_to`` keeps the detector's output in the predictions format.
    """
    if (detect is None) == (predictions is None):
        raise InvalidRequest("give either a detector or a predictions file, not both or neither")
    samples = load_pii_dataset(dataset, fmt, limit)
    default_pred, default_gold = default_label_maps(fmt)
    pred_map = label_map if label_map is not None else default_pred
    gold_map = gold_label_map if gold_label_map is not None else default_gold
    if detect is not None:
        preds, throughput = run_detector(samples, detect)
        if write_predictions_to is not None:
            write_predictions(write_predictions_to, preds)
        return score_predictions(
            samples, preds, pred_map, gold_map, dataset=dataset.name, throughput=throughput
        )
    if predictions is None:
        raise InvalidRequest("give either a detector or a predictions file")
    return score_predictions(
        samples,
        read_predictions(predictions, samples, prefix=limit is not None),
        pred_map,
        gold_map,
        dataset=dataset.name,
    )
