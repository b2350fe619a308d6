from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from llmflow.errors import InvalidRequest
from llmflow.eval.pii import (
    MATCH_RULES,
    GoldSpan,
    PiiSample,
    PredSpan,
    evaluate,
    load_pii_dataset,
    locate_entities,
    read_predictions,
    run_pii_eval,
    score_predictions,
    write_predictions,
)


def _gold(text: str, *spans: tuple[str, int, int]) -> PiiSample:
    return PiiSample(text, [GoldSpan(label, s, e, text[s:e]) for label, s, e in spans])


def _pred(text: str, label: str, start: int, end: int) -> PredSpan:
    return PredSpan(label, start, end, text[start:end])


def _counts(report_dict: dict[str, Any], rule: str) -> tuple[int, int, int]:
    c = report_dict["overall"][rule]
    return c["tp"], c["fp"], c["fn"]


# ── matching rules ───────────────────────────────────────────────────────────────────────────

TEXT = "담당자 김도현 주무관 (02-2110-6543) 김도현"
#       0123456789...: 김도현 at 4-7, phone at 13-25, second 김도현 at 27-30


def test_boundary_difference_counts_only_under_overlap() -> None:
    sample = _gold(TEXT, ("PERSON", 4, 7), ("PHONE", 13, 25))
    # The phone predicted with its opening parenthesis: same entity, different boundary.
    preds = [[_pred(TEXT, "PERSON", 4, 7), _pred(TEXT, "PHONE", 12, 25)]]
    d = score_predictions([sample], preds).to_dict()
    assert _counts(d, "exact") == (1, 1, 1)
    assert _counts(d, "overlap") == (2, 0, 0)
    assert _counts(d, "entity-set") == (1, 1, 1)  # "(02-2110-6543" is not the gold text


def test_same_text_elsewhere_counts_only_under_entity_set() -> None:
    sample = _gold(TEXT, ("PERSON", 4, 7))
    preds = [[_pred(TEXT, "PERSON", 27, 30)]]  # the second mention, not the annotated one
    d = score_predictions([sample], preds).to_dict()
    assert _counts(d, "exact") == (0, 1, 1)
    assert _counts(d, "overlap") == (0, 1, 1)
    assert _counts(d, "entity-set") == (1, 0, 0)


def test_entity_set_is_a_set_with_whitespace_normalised() -> None:
    text = "서울특별시  강서구\n화곡로 287 / 서울특별시 강서구 화곡로 287"
    first, second = (0, text.index(" /")), (text.index("/ ") + 2, len(text))
    sample = _gold(text, ("ADDRESS", *first), ("ADDRESS", *second))
    d = score_predictions([sample], [[_pred(text, "ADDRESS", *second)]]).to_dict()
    # Both mentions normalise to one (label, text) pair: found once, it is found.
    assert _counts(d, "entity-set") == (1, 0, 0)
    assert _counts(d, "exact") == (1, 0, 1)


def test_label_must_agree_under_every_rule() -> None:
    sample = _gold(TEXT, ("PHONE", 13, 25))
    d = score_predictions([sample], [[_pred(TEXT, "FAX", 13, 25)]]).to_dict()
    for rule in MATCH_RULES:
        assert _counts(d, rule) == (0, 1, 1)


def test_overlap_matches_each_span_at_most_once() -> None:
    text = "x" * 40
    # Two predictions overlapping one gold span: one true positive, one false positive.
    d = score_predictions(
        [_gold(text, ("ID", 10, 20))], [[_pred(text, "ID", 8, 15), _pred(text, "ID", 12, 22)]]
    ).to_dict()
    assert _counts(d, "overlap") == (1, 1, 0)
    # One prediction spanning two gold spans: it can match only one of them.
    d = score_predictions(
        [_gold(text, ("ID", 0, 5), ("ID", 5, 10))], [[_pred(text, "ID", 0, 10)]]
    ).to_dict()
    assert _counts(d, "overlap") == (1, 0, 1)
    # Exact duplicates in the predictions: the second one is a false positive.
    d = score_predictions(
        [_gold(text, ("ID", 0, 5))], [[_pred(text, "ID", 0, 5), _pred(text, "ID", 0, 5)]]
    ).to_dict()
    assert _counts(d, "exact") == (1, 1, 0) and _counts(d, "overlap") == (1, 1, 0)


def test_overlap_pairs_by_largest_overlap_first() -> None:
    text = "x" * 40
    gold = _gold(text, ("ID", 0, 10), ("ID", 10, 20))
    # p1 overlaps gold A by 2 and gold B by 8; p2 overlaps gold A by 9. Greedy by overlap size
    # gives p1→B and p2→A (two matches); document order would give p1→A and leave p2 unpaired.
    preds = [[_pred(text, "ID", 8, 18), _pred(text, "ID", 1, 10)]]
    assert _counts(score_predictions([gold], preds).to_dict(), "overlap") == (2, 0, 0)


def test_labels_never_predicted_count_against_recall() -> None:
    sample = _gold(TEXT, ("PERSON", 4, 7), ("PHONE", 13, 25))
    report = score_predictions([sample], [[_pred(TEXT, "PERSON", 4, 7)]])
    d = report.to_dict()
    phone = d["per_label"]["PHONE"]
    assert phone["support"] == 1 and phone["predicted"] == 0
    for rule in MATCH_RULES:
        assert phone[rule]["recall"] == 0.0 and phone[rule]["f1"] == 0.0
        assert d["overall"][rule]["recall"] == 0.5
        assert d["overall"][rule]["precision"] == 1.0
    assert "PHONE" in report.render_table()


def test_empty_predictions_and_empty_gold() -> None:
    sample = _gold(TEXT, ("PERSON", 4, 7))
    d = score_predictions([sample], [[]]).to_dict()
    for rule in MATCH_RULES:
        assert d["overall"][rule] == {
            "tp": 0,
            "fp": 0,
            "fn": 1,
            "precision": 0.0,
            "recall": 0.0,
            "f1": 0.0,
        }
    d = score_predictions([_gold(TEXT)], [[_pred(TEXT, "PERSON", 4, 7)]]).to_dict()
    for rule in MATCH_RULES:
        assert _counts(d, rule) == (0, 1, 0) and d["overall"][rule]["precision"] == 0.0
    # Nothing to find and nothing predicted is a perfect score, not a division by zero.
    d = score_predictions([_gold(TEXT)], [[]]).to_dict()
    assert all(d["overall"][r]["f1"] == 1.0 for r in MATCH_RULES)


def test_label_maps_translate_drop_and_fold() -> None:
    sample = _gold(TEXT, ("PERSON", 4, 7), ("PHONE", 13, 25))
    preds = [
        [
            _pred(TEXT, "PER", 4, 7),
            _pred(TEXT, " PHONE_NUMBER ", 13, 25),
            _pred(TEXT, "DATE_TIME", 13, 25),
        ]
    ]
    label_map = {"PER": "PERSON", "PHONE_NUMBER": "PHONE", "DATE_TIME": None}
    report = score_predictions([sample], preds, label_map)
    assert _counts(report.to_dict(), "exact") == (2, 0, 0)
    assert report.dropped_predictions == {"DATE_TIME": 1}
    # The gold side can be folded too; a gold label mapped to None leaves the evaluation.
    report = score_predictions(
        [sample], [[_pred(TEXT, "NAME", 4, 7)]], None, {"PERSON": "NAME", "PHONE": None}
    )
    assert report.support == {"NAME": 1} and _counts(report.to_dict(), "exact") == (1, 0, 0)


def test_prediction_count_must_match_samples() -> None:
    with pytest.raises(InvalidRequest, match="2 prediction lists for 1 samples"):
        score_predictions([_gold(TEXT)], [[], []])


# ── loaders ─────────────────────────────────────────────────────────────────────────────────


def _jsonl(path: Path, rows: list[object] | list[str]) -> Path:
    path.write_text(
        "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows)
        + "\n",
        encoding="utf-8",
    )
    return path


def test_ko_pii_spans_loader(tmp_path: Path) -> None:
    good = {
        "text": TEXT,
        "spans": [{"label": " PHONE ", "start": 13, "end": 25, "text": "02-2110-6543"}],
    }
    path = _jsonl(tmp_path / "d.jsonl", [good, "", {"text": "없음", "spans": []}])
    samples = load_pii_dataset(path, "ko-pii-spans")
    assert len(samples) == 2
    assert samples[0].spans == [GoldSpan("PHONE", 13, 25, "02-2110-6543")]
    assert samples[1].sample_id == "line 3"
    assert len(load_pii_dataset(path, "ko-pii-spans", limit=1)) == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "abc", "spans": [', "line 2: not valid JSON"),
        ('["abc"]', "line 2: expected a JSON object"),
        ('{"spans": []}', "line 2: field 'text' must be a string"),
        ('{"text": "abc", "spans": {}}', "line 2: field 'spans' must be a list"),
        ('{"text": "abc", "spans": [{"label": "X", "start": 1, "end": 9}]}', "outside the text"),
        ('{"text": "abc", "spans": [{"label": "X", "start": "1", "end": 2}]}', "integers"),
        ('{"text": "abc", "spans": [{"label": "", "start": 1, "end": 2}]}', "'label' must be"),
        (
            '{"text": "가나다", "spans": [{"label": "X", "start": 0, "end": 1, "text": "나"}]}',
            "not bytes",
        ),
    ],
)
def test_ko_pii_spans_loader_rejects_malformed_lines(
    tmp_path: Path, line: str, message: str
) -> None:
    path = _jsonl(tmp_path / "bad.jsonl", [{"text": "ok", "spans": []}, line])
    with pytest.raises(InvalidRequest, match=re.escape(message)) as err:
        load_pii_dataset(path, "ko-pii-spans")
    assert str(path) in str(err.value) and "line 2" in str(err.value)


def test_ko_pii_loader_recovers_offsets(tmp_path: Path) -> None:
    text = "김민수 과장과 김민수 대리, 연락처 010-1234-5678. 김민수 배상"
    row = {
        "text": text,
        # grouped by type and not in text order; 김민수 listed twice for its first two mentions
        "pii": [
            {"type": "PHONE", "text": "010-1234-5678"},
            {"type": "PERSON", "text": "김민수"},
            {"type": "PERSON", "text": "김민수"},
            {"type": "PERSON", "text": "홍길동"},
        ],
    }
    path = _jsonl(tmp_path / "k.jsonl", [row, '{"text": "x", "pii": [{"type": "A"}]}'])
    with pytest.raises(InvalidRequest, match="line 2: entity 0: 'text' must be"):
        load_pii_dataset(path, "ko-pii")
    samples = load_pii_dataset(_jsonl(tmp_path / "k2.jsonl", [row]), "ko-pii")
    spans = samples[0].spans
    phone = text.index("010")
    assert (spans[0].start, spans[0].end) == (phone, phone + 13)
    # Listed after the phone, the names still take their first two mentions (counted per text),
    # not the mention that follows the phone; the second listing does not reuse the first.
    assert [(s.start, s.end) for s in spans[1:3]] == [(0, 3), (8, 11)]
    assert spans[3] == GoldSpan("PERSON", None, None, "홍길동") and not spans[3].located
    # An unlocatable gold span is a miss under positional rules and still scores as a set item.
    preds = [[PredSpan(s.label, s.start, s.end, s.text) for s in spans if s.located]]
    report = score_predictions(samples, preds)
    d = report.to_dict()
    assert report.unlocated_gold == 1
    assert _counts(d, "exact") == (3, 0, 1) and _counts(d, "entity-set") == (2, 0, 1)


def test_locate_entities_in_order() -> None:
    text = "A B A B A"
    spans = locate_entities(text, [("X", "A"), ("X", "B"), ("X", "A"), ("X", "A"), ("X", "A")])
    assert [s.start for s in spans] == [0, 2, 4, 8, None]


def test_presidio_loader(tmp_path: Path) -> None:
    data = [
        {
            "full_text": "Call John at 555-0100",
            "masked": "Call {{PERSON}} at {{PHONE_NUMBER}}",
            "spans": [
                {
                    "entity_type": "PERSON",
                    "entity_value": "John",
                    "start_position": 5,
                    "end_position": 9,
                },
                {
                    "entity_type": "PHONE_NUMBER",
                    "entity_value": "555-0100",
                    "start_position": 13,
                    "end_position": 21,
                },
            ],
            "template_id": 1,
            "metadata": None,
        }
    ]
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    samples = load_pii_dataset(path, "presidio")
    assert [(s.label, s.start, s.end, s.text) for s in samples[0].spans] == [
        ("PERSON", 5, 9, "John"),
        ("PHONE_NUMBER", 13, 21, "555-0100"),
    ]
    data.append({"text": "wrong key", "spans": []})
    path.write_text(json.dumps(data))
    with pytest.raises(InvalidRequest, match="sample 1: field 'full_text' must be a string"):
        load_pii_dataset(path, "presidio")
    path.write_text('{"full_text": "not a list"}')
    with pytest.raises(InvalidRequest, match="must be a list"):
        load_pii_dataset(path, "presidio")


def test_unknown_format_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="unknown PII dataset format"):
        load_pii_dataset(tmp_path / "x", "conll")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="cannot read PII dataset"):
        load_pii_dataset(tmp_path / "missing.jsonl", "ko-pii-spans")


# ── predictions files ───────────────────────────────────────────────────────────────────────


def test_predictions_file_round_trip(tmp_path: Path) -> None:
    samples = [_gold(TEXT, ("PERSON", 4, 7)), _gold("없음")]
    preds = [
        [
            PredSpan("PERSON", 4, 7, "김도현", 0.85, "KoreanNameRecognizer"),
            _pred(TEXT, "P", 13, 25),
        ],
        [],
    ]
    path = tmp_path / "pred.jsonl"
    write_predictions(path, preds)
    assert read_predictions(path, samples) == preds
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[1]) == {"spans": []}
    # Scoring the file gives what scoring the objects gives.
    assert score_predictions(samples, read_predictions(path, samples)).to_dict() == (
        score_predictions(samples, preds).to_dict()
    )


def test_predictions_file_errors(tmp_path: Path) -> None:
    samples = [_gold(TEXT)]
    path = _jsonl(tmp_path / "p.jsonl", [{"spans": []}, {"spans": []}])
    with pytest.raises(InvalidRequest, match="2 prediction lines for 1 samples"):
        read_predictions(path, samples)
    assert read_predictions(path, samples, prefix=True) == [[]]
    path = _jsonl(tmp_path / "q.jsonl", [{"spans": [{"label": "X", "start": 0, "end": 99}]}])
    with pytest.raises(InvalidRequest, match="line 1: entity 0: offsets"):
        read_predictions(path, samples)
    # text may be left out: it is taken from the sample
    path = _jsonl(tmp_path / "r.jsonl", [{"spans": [{"label": "X", "start": 4, "end": 7}]}])
    assert read_predictions(path, samples) == [[PredSpan("X", 4, 7, "김도현")]]


# ── the real corpus ─────────────────────────────────────────────────────────────────────────

PHONE = re.compile(r"(?<!\d)0\d{1,2}-\d{3,4}-\d{4}(?!\d)")


def _regex_detector(text: str) -> list[PredSpan]:
    return [PredSpan("PHONE", m.start(), m.end(), m.group()) for m in PHONE.finditer(text)]


@pytest.fixture(scope="module")
def ko_corpus_head(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = datasets_dir / "pii" / "ko_pii_eval_corpus.jsonl"
    if not src.is_file():
        pytest.skip("ko_pii_eval_corpus.jsonl is not present")
    head = tmp_path_factory.mktemp("pii") / "head.jsonl"
    head.write_text("".join(src.read_text(encoding="utf-8").splitlines(True)[:20]), "utf-8")
    return head


def test_regex_detector_on_real_corpus(ko_corpus_head: Path) -> None:
    report = run_pii_eval(ko_corpus_head, "ko-pii-spans", _regex_detector)
    d = report.to_dict()
    assert d["documents"] == 20 and d["gold_spans"] > 0
    assert set(d["overall"]) == set(MATCH_RULES)
    for rule in MATCH_RULES:
        for metric in ("precision", "recall", "f1"):
            assert 0.0 <= d["overall"][rule][metric] <= 1.0
    # PERSON is never predicted by this detector yet is in the table with its support.
    assert d["per_label"]["PERSON"]["support"] > 0
    assert d["per_label"]["PERSON"]["exact"]["recall"] == 0.0
    assert d["per_label"]["PHONE"]["exact"]["tp"] > 0
    tp = d["throughput"]
    assert tp["documents"] == 20 and tp["utf8_bytes"] > 0 and tp["docs_per_s"] > 0
    table = report.render_table()
    assert "(micro)" in table and "docs/s" in table and "MB/s" in table


def test_oracle_scores_one_on_real_corpus(ko_corpus_head: Path, tmp_path: Path) -> None:
    samples = load_pii_dataset(ko_corpus_head, "ko-pii-spans")
    gold = {
        s.text: [PredSpan(g.label, g.start or 0, g.end or 0, g.text) for g in s.spans]
        for s in samples
    }
    report = evaluate(samples, lambda text: gold[text])
    d = report.to_dict()
    for rule in MATCH_RULES:
        assert (d["overall"][rule]["precision"], d["overall"][rule]["recall"]) == (1.0, 1.0)
        assert d["overall"][rule]["f1"] == 1.0
    # The same oracle through a predictions file gives the same report.
    path = tmp_path / "oracle.jsonl"
    write_predictions(path, [gold[s.text] for s in samples])
    from_file = run_pii_eval(ko_corpus_head, "ko-pii-spans", predictions=path).to_dict()
    assert from_file["overall"] == d["overall"]
    with pytest.raises(InvalidRequest, match="either a detector or a predictions file"):
        run_pii_eval(ko_corpus_head, "ko-pii-spans", _regex_detector, predictions=path)


def test_real_presidio_research_file_loads(datasets_dir: Path) -> None:
    path = datasets_dir / "pii" / "presidio_synth_dataset_v2.json"
    if not path.is_file():
        pytest.skip("presidio_synth_dataset_v2.json is not present")
    samples = load_pii_dataset(path, "presidio", limit=50)
    assert len(samples) == 50 and sum(len(s.spans) for s in samples) > 0
    # the default presidio gold map folds street addresses and places into LOCATION
    report = run_pii_eval(path, "presidio", lambda text: [], limit=50)
    assert "STREET_ADDRESS" not in report.support and "GPE" not in report.support
