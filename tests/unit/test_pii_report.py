"""PII report aggregation and the stored form (no Presidio needed)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from llmflow.pii.report import PiiFinding, PiiReport


def test_report_counts_findings_across_elements() -> None:
    report = PiiReport.from_findings(
        [PiiFinding("PHONE_NUMBER", 0, 13, 0.85), PiiFinding("KR_RRN", 20, 34, 1.0)]
    )
    report.add([PiiFinding("PHONE_NUMBER", 3, 16, 0.5)], {"PHONE_NUMBER": "allow"})
    report.add([], {"KR_RRN": "mask"})
    assert report.counts == {"KR_RRN": 1, "PHONE_NUMBER": 2}
    assert report.total == 3
    assert report.max_score == 1.0
    assert report.actions == {"KR_RRN": "mask", "PHONE_NUMBER": "allow"}
    assert report.has_pii


def test_empty_report() -> None:
    report = PiiReport.from_findings([])
    assert (report.counts, report.total, report.max_score, report.has_pii) == ({}, 0, 0.0, False)
    assert report.to_dict() == {"counts": {}, "total": 0, "max_score": 0.0, "actions": {}}


def test_stored_form_round_trips_through_json() -> None:
    report = PiiReport.from_findings(
        [PiiFinding("EMAIL_ADDRESS", 5, 20, 0.95), PiiFinding("CREDIT_CARD", 30, 49, 1.0)]
    )
    report.add([], {"CREDIT_CARD": "mask"})
    stored = json.loads(json.dumps(report.to_dict()))
    assert stored == {
        "counts": {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1},
        "total": 2,
        "max_score": 1.0,
        "actions": {"CREDIT_CARD": "mask"},
    }
    assert PiiReport.from_dict(stored) == report
    # reports stored before actions existed still read
    assert PiiReport.from_dict({"counts": {"KR_RRN": 2}}).total == 2


def test_findings_and_reports_have_no_field_for_the_matched_text() -> None:
    assert [f.name for f in dataclasses.fields(PiiFinding)] == [
        "entity_type",
        "start",
        "end",
        "score",
        "recognizer",
    ]
    assert set(PiiReport.from_findings([]).to_dict()) == {"counts", "total", "max_score", "actions"}


def test_importing_the_pure_modules_does_not_load_presidio() -> None:
    # Presidio drags in torch/transformers (~13 s); code that only reads stored reports,
    # policies or pseudonyms (the API, the CLI's --help) must not pay for it.
    code = (
        "import sys, llmflow.pii.report, llmflow.pii.config, llmflow.pii.pseudonyms, "
        "llmflow.pii.names, llmflow.pii.validators, llmflow.api.app; "
        "print('presidio_analyzer' in sys.modules, 'presidio_anonymizer' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
