"""From source examples to the files of one dataset version: PII scrub, deduplication,
train/validation split, quality report, LLaMA-Factory files.

Everything here is CPU-bound and synchronous; the service runs it in a worker thread.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llmflow.errors import PiiBlocked
from llmflow.training.datasets.examples import (
    Example,
    Format,
    check_llamafactory_rows,
    choose_format,
    content_key,
    dataset_info,
    dumps,
    to_alpaca,
    to_sharegpt,
)
from llmflow.training.datasets.readers import Rejection

if TYPE_CHECKING:
    from llmflow.pii.anonymize import PiiGuard

PII_SURFACE = "anonymize"
"""The PII policy surface applied to training data. A model memorises what it is trained on
and can repeat it to anyone, so training data is treated like text released out of its
context: the ``anonymize`` surface, whose default rule masks every entity type (a tenant may
``block`` types there, which rejects the row). ``ingest`` would keep names and phone numbers
searchable and ``prompt`` pseudonymises per request, neither fits data that leaves for good."""


@dataclass
class PiiScrub:
    """How the PII policy was applied and what it found (counts only, never values)."""

    surface: str = PII_SURFACE
    classification: str = "internal"
    entities: dict[str, int] = field(default_factory=dict)
    actions: dict[str, str] = field(default_factory=dict)
    examples_changed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "surface": self.surface,
            "classification": self.classification,
            "entities": dict(sorted(self.entities.items())),
            "actions": dict(sorted(self.actions.items())),
            "examples_changed": self.examples_changed,
        }


def scrub(
    examples: Sequence[Example],
    guard: PiiGuard,
    *,
    tenant: str,
    classification: str,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[Example], list[Rejection], PiiScrub]:
    """Apply the tenant's PII policy to every text of every example."""
    from llmflow.pii.config import Surface

    report = PiiScrub(classification=classification)
    entities: Counter[str] = Counter()
    kept: list[Example] = []
    rejected: list[Rejection] = []
    for example in examples:
        texts = example.texts()
        try:
            results = [
                guard.apply(t, Surface(PII_SURFACE), classification=classification, tenant=tenant)
                if t
                else None
                for t in texts
            ]
        except PiiBlocked as exc:
            rejected.append(Rejection(example.ref, "pii_blocked", ", ".join(exc.entities)))
            if progress is not None:
                progress(1)
            continue
        new_texts = [r.text if r is not None else t for r, t in zip(results, texts, strict=True)]
        for r in results:
            if r is not None:
                entities.update(r.counts)
                report.actions.update({k: v.value for k, v in r.actions.items()})
        if new_texts != texts:
            report.examples_changed += 1
            example = example.with_texts(new_texts)
        kept.append(example)
        if progress is not None:
            progress(1)
    report.entities = dict(entities)
    return kept, rejected, report


def deduplicate(examples: Sequence[Example]) -> tuple[list[Example], list[Rejection]]:
    """Exact duplicates after :func:`~llmflow.training.datasets.examples.normalize`
    (NFKC, case-fold, whitespace collapsed) of every text; the first occurrence stays."""
    seen: dict[str, str] = {}
    kept: list[Example] = []
    dropped: list[Rejection] = []
    for example in examples:
        key = content_key(example)
        if key in seen:
            dropped.append(Rejection(example.ref, "duplicate", f"same as {seen[key]}"))
            continue
        seen[key] = example.ref
        kept.append(example)
    return kept, dropped


def _bucket(seed: int, example: Example) -> float:
    digest = hashlib.sha256(f"{seed}\x1f{content_key(example)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split(
    examples: Sequence[Example], val_ratio: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Deterministic split by a seeded hash of each example's content: the same example lands
    on the same side in every version (a validation row never leaks into a later train split
    because other rows were added). At least one validation example when ``val_ratio > 0``
    and there are two or more examples; source order is kept within each split."""
    if val_ratio <= 0 or len(examples) < 2:
        return list(examples), []
    buckets = [_bucket(seed, e) for e in examples]
    val_idx = {i for i, b in enumerate(buckets) if b < val_ratio}
    if not val_idx:
        val_idx = {min(range(len(examples)), key=buckets.__getitem__)}
    if len(val_idx) == len(examples):
        val_idx.discard(max(val_idx, key=buckets.__getitem__))
    train = [e for i, e in enumerate(examples) if i not in val_idx]
    val = [e for i, e in enumerate(examples) if i in val_idx]
    return train, val


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "max": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(statistics.fmean(ordered), 1),
        "p50": float(statistics.median(ordered)),
        "p95": float(p95),
    }


def quality_report(
    *,
    source_rows: int,
    train: Sequence[Example],
    val: Sequence[Example],
    rejected: Sequence[Rejection],
    pii: PiiScrub,
) -> dict[str, Any]:
    """Counts a person reviews before training: what was dropped and why, empty optional
    fields, lengths in characters (prompt = last question with its input; response = the
    final answer), turns per example, PII found."""
    kept = [*train, *val]
    reasons = Counter(r.reason for r in rejected)
    return {
        "source_rows": source_rows,
        "examples": len(kept),
        "train": len(train),
        "validation": len(val),
        "rejected": dict(sorted(reasons.items())),
        "duplicates_dropped": reasons.get("duplicate", 0),
        "rejected_rows": [r.to_dict() for r in rejected[:200]],
        "empty_fields": {
            "system": sum(1 for e in kept if not e.system.strip()),
            "input": sum(1 for e in kept if not e.input.strip()),
        },
        "multi_turn": sum(1 for e in kept if len(e.turns) > 2),
        "lengths_chars": {
            "prompt": _stats([len(e.prompt) for e in kept]),
            "response": _stats([len(e.response) for e in kept]),
            "turns": _stats([len(e.turns) for e in kept]),
        },
        "pii": pii.to_dict(),
    }


@dataclass
class PreparedDataset:
    """The files of one version, before they are stored."""

    name: str
    format: Format
    files: dict[str, bytes]
    """file name → bytes: ``<name>_train.json``, ``<name>_val.json``, ``dataset_info.json``"""
    report: dict[str, Any]
    train_rows: int
    val_rows: int

    @property
    def content_sha256(self) -> str:
        """Hash of the data files: two imports of the same data give the same hash."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()


def build_files(
    name: str,
    fmt: Format | None,
    train: Sequence[Example],
    val: Sequence[Example],
    report: dict[str, Any],
) -> PreparedDataset:
    """LLaMA-Factory files for both splits and the ``dataset_info.json`` describing them;
    the rows are checked against the loader contract before anything is stored."""
    fmt = fmt or choose_format([*train, *val])
    convert = to_alpaca if fmt == "alpaca" else to_sharegpt
    split_files = {"train": f"{name}_train.json", "val": f"{name}_val.json"}
    info = dataset_info(name, fmt, split_files)
    files: dict[str, bytes] = {}
    for split_name, examples in (("train", train), ("val", val)):
        rows = [convert(e) for e in examples]
        check_llamafactory_rows(rows, info[f"{name}_{split_name}"])
        files[split_files[split_name]] = dumps(rows)
    files["dataset_info.json"] = dumps_obj(info)
    return PreparedDataset(name, fmt, files, {**report, "format": fmt}, len(train), len(val))


def dumps_obj(value: Any) -> bytes:
    import json

    return (json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()
