"""Rule-based metrics (exact match, ROUGE-L, BLEU, regex), the judge's answer parsing and the
comparison report, on values computed by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmflow.training.evaluate import (
    EvalReport,
    EvalRow,
    compare,
    comparison_markdown,
    parse_judge,
    write_results,
)
from llmflow.training.metrics import (
    RegexCheck,
    aggregate,
    bleu,
    char_tokens,
    corpus_bleu,
    exact_match,
    rouge_l,
    score_example,
)


def test_exact_match_normalises_case_width_space_and_end_punctuation() -> None:
    assert exact_match("  Hello,   World! ", "hello, world") == 1.0
    assert exact_match("ＡＢＣ", "abc") == 1.0  # NFKC full-width
    assert exact_match("15일입니다.", "15일입니다") == 1.0
    assert exact_match("15일", "14일") == 0.0


def test_korean_tokens_are_syllables_and_latin_words() -> None:
    assert char_tokens("연차는 15일, LLMFlow!") == ["연", "차", "는", "15", "일", "llmflow"]
    # particles differ, the stem is shared: syllables see the overlap, eojeol would not
    assert rouge_l("연차는 15일", "연차가 15일") == pytest.approx(0.8)


def test_rouge_l_by_hand() -> None:
    # LCS("a b c d", "a c d e") = a c d = 3; P = 3/4, R = 3/4 → F1 0.75
    assert rouge_l("a b c d", "a c d e") == pytest.approx(0.75)
    assert rouge_l("", "a") == 0.0 and rouge_l("x y", "a b") == 0.0
    assert rouge_l("same words", "same words") == 1.0


def test_bleu_by_hand() -> None:
    assert bleu("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(1.0)
    assert bleu("dog", "cat") == 0.0
    # hyp "a b c d e" vs ref "a b c d f": p1 = 4/5, p2..p4 smoothed (3+1)/(4+1), (2+1)/(3+1),
    # (1+1)/(2+1); equal lengths → no brevity penalty
    expected = math.exp((math.log(4 / 5) + math.log(4 / 5) + math.log(3 / 4) + math.log(2 / 3)) / 4)
    assert bleu("a b c d e", "a b c d f") == pytest.approx(expected)
    # brevity penalty: a 2-token hypothesis against a 4-token reference
    short = bleu("a b", "a b c d", max_n=2)
    assert short == pytest.approx(math.exp(1 - 4 / 2) * math.exp((0 + math.log(2 / 2)) / 2))


def test_corpus_bleu_sums_counts_before_dividing() -> None:
    preds = ["a b c d", "e f g h"]
    assert corpus_bleu(preds, preds) == pytest.approx(1.0)
    assert corpus_bleu(["a b c d"], ["w x y z"]) == 0.0


def test_regex_checks_and_aggregate() -> None:
    checks = [RegexCheck("cites_article", r"제\d+조"), RegexCheck("no_rrn", r"\d{6}-\d{7}", False)]
    good = score_example("근로기준법 제60조에 따라 15일", "제60조 15일", checks)
    bad = score_example("주민번호 900101-1234567", "제60조 15일", checks)
    assert good.regex == {"cites_article": True, "no_rrn": True}
    assert bad.regex == {"cites_article": False, "no_rrn": False}
    agg = aggregate([good, bad])
    assert agg["regex_cites_article"] == 0.5 and agg["regex_no_rrn"] == 0.5
    assert 0 < agg["rouge_l"] < 1 and aggregate([]) == {}


def test_judge_answers_are_parsed_or_counted_as_unparsed() -> None:
    assert parse_judge('{"score": 4, "reason": "close"}') == (4.0, "close")
    assert parse_judge('```json\n{"score": 2, "reason": "x"}```')[0] == 2.0
    assert parse_judge("5 - fully correct")[0] == 5.0
    assert parse_judge("I cannot grade this")[0] is None
    assert parse_judge('{"score": 9}')[0] is None


def _row(i: str, model: str, pred: str, ref: str) -> EvalRow:
    s = score_example(pred, ref)
    return EvalRow(i, model, "q", ref, pred, s.exact_match, s.rouge_l, s.bleu, None, "", 1.0)


def test_comparison_report_and_files(tmp_path: Path) -> None:
    base = EvalReport("base", [_row("0", "base", "x", "연차 15일"), _row("1", "base", "ok", "ok")],
                      {"rouge_l": 0.5, "exact_match": 0.5}, "char")  # fmt: skip
    tuned = EvalReport("tuned", [_row("0", "tuned", "연차 15일", "연차 15일"),
                                 _row("1", "tuned", "ok", "ok")],
                       {"rouge_l": 1.0, "exact_match": 1.0}, "char")  # fmt: skip
    report = compare(base, tuned)
    assert report["metrics"]["rouge_l"]["delta"] == pytest.approx(0.5)
    assert report["rouge_l_wins"] == {"a": 0, "b": 1, "tie": 1}
    md = comparison_markdown(report)
    assert "| rouge_l | 0.5000 | 1.0000 | 0.5000 |" in md
    files = write_results(tuned, tmp_path, "tuned")
    assert [f.suffix for f in files] == [".jsonl", ".csv", ".parquet", ".json"]
    import pyarrow.parquet as pq

    table = pq.read_table(files[2])
    assert table.num_rows == 2 and "rouge_l" in table.column_names
    assert (tmp_path / "tuned.jsonl").read_text(encoding="utf-8").count("\n") == 2
