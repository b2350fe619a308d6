"""PII report aggregation and the stored form (no Presidio needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from llmflow.ingest.pii import PiiFinding, PiiReport, PiiScanner


def test_report_counts_findings_across_elements() -> None:
    report = PiiReport.from_findings(
        [PiiFinding("PHONE_NUMBER", 0, 13, 0.85), PiiFinding("KR_RRN", 20, 34, 1.0)]
    )
    report.add([PiiFinding("PHONE_NUMBER", 3, 16, 0.5)])
    report.add([])
    assert report.counts == {"KR_RRN": 1, "PHONE_NUMBER": 2}
    assert report.total == 3
    assert report.max_score == 1.0
    assert report.has_pii


def test_empty_report() -> None:
    report = PiiReport.from_findings([])
    assert (report.counts, report.total, report.max_score, report.has_pii) == ({}, 0, 0.0, False)
    assert report.to_dict() == {"counts": {}, "total": 0, "max_score": 0.0}


def test_stored_form_round_trips_through_json() -> None:
    report = PiiReport.from_findings(
        [PiiFinding("EMAIL_ADDRESS", 5, 20, 0.95), PiiFinding("CREDIT_CARD", 30, 49, 1.0)]
    )
    stored = json.loads(json.dumps(report.to_dict()))
    assert stored == {
        "counts": {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1},
        "total": 2,
        "max_score": 1.0,
    }
    assert PiiReport.from_dict(stored) == report


def test_findings_and_reports_have_no_field_for_the_matched_text() -> None:
    assert [f.name for f in dataclasses.fields(PiiFinding)] == [
        "entity_type",
        "start",
        "end",
        "score",
    ]
    assert set(PiiReport.from_findings([]).to_dict()) == {"counts", "total", "max_score"}


def test_unsupported_language_is_rejected_before_presidio_loads() -> None:
    with pytest.raises(ValueError, match="subset of"):
        PiiScanner(languages=["ja"])
    with pytest.raises(ValueError):
        PiiScanner(languages=[])


def test_importing_the_module_does_not_load_presidio() -> None:
    # Presidio drags in torch/transformers (~13 s); code that only reads stored reports
    # (the API) must not pay for it.
    code = "import sys, llmflow.ingest.pii; print('presidio_analyzer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
