"""Retrieval evaluation datasets: BEIR-style JSON and SQuAD v1.1 (KorQuAD) JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llmflow.errors import InvalidRequest

Format = Literal["beir", "squad"]


@dataclass(slots=True)
class RetrievalDataset:
    name: str
    corpus: dict[str, tuple[str, str]]
    """doc id → (title, text)"""
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def limited(self, limit: int | None) -> RetrievalDataset:
        if not limit:
            return self
        qids = [q for q in self.queries if q in self.qrels][:limit]
        return RetrievalDataset(
            self.name,
            self.corpus,
            {q: self.queries[q] for q in qids},
            {q: self.qrels[q] for q in qids},
        )


def detect_format(raw: dict[str, Any]) -> Format:
    if "corpus" in raw and "queries" in raw:
        return "beir"
    if "data" in raw and isinstance(raw["data"], list):
        return "squad"
    raise InvalidRequest(
        "dataset is neither BEIR-style JSON {corpus, queries, qrels} "
        "nor SQuAD JSON {data:[{paragraphs}]}"
    )


def load_dataset(path: Path, fmt: Format | None = None) -> RetrievalDataset:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read dataset {path}: {exc}") from exc
    fmt = fmt or detect_format(raw)
    return _beir(path.stem, raw) if fmt == "beir" else _squad(path.stem, raw)


def _beir(name: str, raw: dict[str, Any]) -> RetrievalDataset:
    corpus = {
        str(k): (str(v.get("title", "")), str(v.get("text", ""))) for k, v in raw["corpus"].items()
    }
    queries = {
        str(k): str(v if isinstance(v, str) else v.get("text", ""))
        for k, v in raw["queries"].items()
    }
    qrels = {
        str(q): {str(d): int(s) for d, s in rel.items() if int(s) > 0}
        for q, rel in raw.get("qrels", {}).items()
    }
    return RetrievalDataset(name, corpus, queries, qrels)


def _squad(name: str, raw: dict[str, Any]) -> RetrievalDataset:
    corpus: dict[str, tuple[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for a_idx, article in enumerate(raw["data"]):
        title = str(article.get("title", ""))
        for p_idx, para in enumerate(article.get("paragraphs", [])):
            doc_id = f"a{a_idx:04d}-p{p_idx:03d}"
            corpus[doc_id] = (title, str(para["context"]))
            for qa in para.get("qas", []):
                qid = str(qa["id"])
                queries[qid] = str(qa["question"])
                qrels[qid] = {doc_id: 1}
    return RetrievalDataset(name, corpus, queries, qrels)
