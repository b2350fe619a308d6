from __future__ import annotations

import pytest

from llmflow.errors import InvalidRequest
from llmflow.index.milvus import ChunkIndex, Hit, collection_name
from llmflow.retrieve.hybrid import fuse_rrf, fuse_scores
from llmflow.retrieve.metadata_filter import MetadataCondition, matches, validate


def hits(*ids: str) -> list[Hit]:
    return [Hit(i, 1.0, {}) for i in ids]


def test_fusion_normalised_and_weighted() -> None:
    fused = fuse_rrf(
        {"dense": hits("a", "b"), "lexical": hits("a", "c")}, {"dense": 1, "lexical": 1}, 60
    )
    assert fused[0][0] == "a" and fused[0][1] == pytest.approx(1.0)
    assert all(0 < s <= 1 for _, s, _ in fused)
    # a weak dense signal only breaks ties: lexical order wins
    fused = fuse_rrf(
        {"dense": hits("c", "b"), "lexical": hits("b", "c")}, {"dense": 0.1, "lexical": 1}, 60
    )
    assert [c for c, _, _ in fused] == ["b", "c"]
    # zero weight: the signal's ranks are reported but do not score
    fused = fuse_rrf({"dense": hits("x"), "lexical": hits("y")}, {"dense": 0.0, "lexical": 1}, 60)
    assert [c for c, _, _ in fused] == ["y"]


def scored(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(i, s, {}) for i, s in pairs]


def test_score_fusion_keeps_margins() -> None:
    # lexical has a clear winner; a weak dense signal disagreeing only slightly cannot flip it
    lexical = scored(("a", 40.0), ("b", 12.0), ("c", 11.0))
    dense = scored(("b", 0.88), ("c", 0.87), ("a", 0.86))
    fused = fuse_scores({"dense": dense, "lexical": lexical}, {"dense": 0.1, "lexical": 1.0})
    assert [c for c, _, _ in fused][:1] == ["a"]
    # near-tie in lexical: the dense signal decides
    lexical = scored(("a", 12.1), ("b", 12.0), ("c", 3.0))
    fused = fuse_scores({"dense": dense, "lexical": lexical}, {"dense": 1.0, "lexical": 1.0})
    assert fused[0][0] == "b"
    assert all(0.0 <= s <= 1.0 for _, s, _ in fused)
    top = fuse_scores({"lexical": scored(("x", 5.0))}, {"lexical": 1.0, "dense": 1.0})
    assert top[0][1] == 1.0


def test_scope_filter_always_has_tenant_and_refuses_injection() -> None:
    assert ChunkIndex.scope_filter("acme", ["kb1", "kb2"], "d1") == (
        'tenant_id == "acme" and kb_id in ["kb1", "kb2"] and document_id == "d1"'
    )
    for evil in ['t" or tenant_id != "', "a b", "", "x\\", "ä"]:
        with pytest.raises(ValueError):
            ChunkIndex.scope_filter(evil)
    with pytest.raises(ValueError):
        ChunkIndex.scope_filter("acme", ['k" or 1==1 or "'])


def test_collection_name_per_embedding_schema() -> None:
    assert (
        collection_name("llmflow_chunks", "BAAI/bge-m3", 1024) == "llmflow_chunks_baai_bge_m3_1024"
    )


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("contains", "규정", True),
        ("not contains", "규정", False),
        ("start with", "보안", True),
        ("end with", ".hwpx", True),
        ("is", "보안규정.hwpx", True),
        ("is not", "x", True),
        ("empty", None, False),
        ("not empty", None, True),
        ("=", 3, True),
        ("≠", 3, False),
        (">", 2, True),
        ("<", 2, False),
        ("≥", 3, True),
        ("≤", 2, False),
        ("before", "2030-01-01", True),
        ("after", "2030-01-01", False),
    ],
)
def test_dify_comparison_operators(op: str, value: object, expected: bool) -> None:
    meta = {"document_name": "보안규정.hwpx", "page": 3, "updated": "2026-01-01"}
    field = {
        "=": "page",
        "≠": "page",
        ">": "page",
        "<": "page",
        "≥": "page",
        "≤": "page",
        "before": "updated",
        "after": "updated",
    }.get(op, "document_name")
    cond = MetadataCondition.model_validate(
        {
            "logical_operator": "and",
            "conditions": [{"name": [field], "comparison_operator": op, "value": value}],
        }
    )
    validate(cond)
    assert matches(meta, cond) is expected


def test_logical_or_and_unknown_operator() -> None:
    cond = MetadataCondition.model_validate(
        {
            "logical_operator": "or",
            "conditions": [
                {"name": ["page"], "comparison_operator": "=", "value": 9},
                {"name": "document_name", "comparison_operator": "contains", "value": "보안"},
            ],
        }
    )
    assert matches({"page": 1, "document_name": "보안.pdf"}, cond)
    assert not matches({"page": 1, "document_name": "휴가.pdf"}, cond)
    with pytest.raises(InvalidRequest, match="unsupported comparison_operator"):
        validate(
            MetadataCondition.model_validate(
                {"conditions": [{"name": ["a"], "comparison_operator": "regex", "value": ".*"}]}
            )
        )
