from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmflow.errors import InvalidRequest
from llmflow.eval.datasets import load_dataset
from llmflow.eval.metrics import mrr_at, ndcg_at, percentile, recall_at
from llmflow.eval.retrieval import write_rows


def test_metrics_by_hand() -> None:
    ranked = ["d3", "d1", "d7", "d2"]
    assert recall_at(ranked, {"d1", "d2"}, 1) == 0.0
    assert recall_at(ranked, {"d1", "d2"}, 2) == 0.5
    assert recall_at(ranked, {"d1", "d2"}, 4) == 1.0
    assert mrr_at(ranked, {"d1"}) == 0.5
    assert mrr_at(ranked, {"zz"}) == 0.0
    # one relevant doc at rank 2: DCG = 1/log2(3), IDCG = 1
    assert ndcg_at(ranked, {"d1"}) == pytest.approx(0.6309, abs=1e-4)
    assert ndcg_at(["d1"], {"d1"}) == 1.0
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([1.0] * 99 + [100.0], 99) == 1.0
    assert percentile([1.0] * 98 + [100.0, 100.0], 99) == 100.0


def test_loaders_beir_and_squad(tmp_path: Path) -> None:
    beir = tmp_path / "b.json"
    beir.write_text(
        json.dumps(
            {
                "corpus": {"d1": {"title": "T", "text": "x"}, "d2": {"title": "U", "text": "y"}},
                "queries": {"q1": "x?", "q2": "y?"},
                "qrels": {"q1": {"d1": 1}, "q2": {"d2": 1}},
            }
        )
    )
    ds = load_dataset(beir)
    assert ds.corpus["d1"] == ("T", "x") and ds.qrels["q2"] == {"d2": 1}
    assert list(ds.limited(1).queries) == ["q1"] and len(ds.limited(1).corpus) == 2

    squad = tmp_path / "s.json"
    squad.write_text(
        json.dumps(
            {
                "data": [
                    {
                        "title": "서울",
                        "paragraphs": [
                            {
                                "context": "서울은 수도이다.",
                                "qas": [{"id": "1", "question": "수도는?", "answers": []}],
                            }
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    ds = load_dataset(squad)
    (doc_id,) = ds.corpus
    assert ds.corpus[doc_id] == ("서울", "서울은 수도이다.") and ds.qrels["1"] == {doc_id: 1}

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(InvalidRequest):
        load_dataset(bad)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_rows_written_in_each_format(tmp_path: Path, suffix: str) -> None:
    rows = [{"qid": "1", "retrieved": ["a", "b"], "recall@1": 1.0}]
    out = tmp_path / f"rows{suffix}"
    write_rows(out, rows)
    assert out.stat().st_size > 0
    if suffix == ".jsonl":
        assert json.loads(out.read_text())["retrieved"] == ["a", "b"]
    with pytest.raises(InvalidRequest):
        write_rows(tmp_path / "rows.xlsx", rows)
