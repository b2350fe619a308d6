"""The per-document PII report stored with a document: counts and actions, never values."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class PiiFinding:
    """One detected span: offsets into the analysed text, never the text itself."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str = ""

    def to_dict(self) -> dict[str, object]:
        return {
            "type": self.entity_type,
            "start": self.start,
            "end": self.end,
            "score": self.score,
            "recognizer": self.recognizer,
        }


@dataclass(slots=True)
class PiiReport:
    """PII found in one document: counts per entity type and the action the policy took."""

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    max_score: float = 0.0
    actions: dict[str, str] = field(default_factory=dict)
    """entity type → action taken at ingest (allow, mask, redact, hash, pseudonymize)"""

    @classmethod
    def from_findings(cls, findings: Iterable[PiiFinding]) -> PiiReport:
        """Aggregate findings (from any number of texts) into one report."""
        report = cls()
        report.add(findings)
        return report

    def add(self, findings: Iterable[PiiFinding], actions: dict[str, str] | None = None) -> None:
        """Fold more findings into the report (e.g. the next element of the document)."""
        counts = Counter(self.counts)
        for finding in findings:
            counts[finding.entity_type] += 1
            self.max_score = max(self.max_score, finding.score)
        self.counts = dict(sorted(counts.items()))
        self.total = sum(self.counts.values())
        if actions:
            self.actions = dict(sorted({**self.actions, **actions}.items()))

    @property
    def has_pii(self) -> bool:
        return self.total > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form stored per document."""
        return {
            "counts": dict(self.counts),
            "total": self.total,
            "max_score": self.max_score,
            "actions": dict(self.actions),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PiiReport:
        """Read back what :meth:`to_dict` stored."""
        counts = {str(k): int(v) for k, v in dict(data.get("counts", {})).items()}
        actions = {str(k): str(v) for k, v in dict(data.get("actions", {})).items()}
        max_score = float(data.get("max_score", 0.0))
        return cls(counts=counts, total=sum(counts.values()), max_score=max_score, actions=actions)
