"""Evaluation harness: answers of a model (base, adapter, any gateway model) on a dataset's
validation examples, scored by rule-based metrics and an LLM judge, written as JSONL / CSV /
Parquet, logged to MLflow, and compared between two models.

Every model call goes through the platform's gateway (OpenAI-compatible
``/v1/chat/completions``), so evaluation obeys the same policy, PII guard and accounting as
any other use, and an adapter is evaluated exactly as it is served.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from llmflow.errors import InvalidRequest, ServiceUnavailable
from llmflow.training.metrics import (
    RegexCheck,
    Tokenizer,
    aggregate,
    char_tokens,
    corpus_bleu,
    score_example,
)

JUDGE_PROMPT = """You grade an assistant's answer against a reference answer.
Question:
{question}

Reference answer:
{reference}

Assistant's answer:
{answer}

Score the assistant's answer from 1 (wrong or unhelpful) to 5 (correct and complete; wording
may differ). Reply with JSON only: {{"score": <1-5>, "reason": "<one sentence>"}}"""
_SCORE = re.compile(r'"score"\s*:\s*([1-5])\b|^\s*([1-5])\b')


@dataclass(frozen=True, slots=True)
class EvalExample:
    id: str
    question: str
    reference: str
    system: str | None = None


def load_alpaca(path: Path, limit: int | None = None) -> list[EvalExample]:
    """Alpaca records (``instruction``, ``input``, ``output``, optional ``system``)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"evaluation set {path}: {exc}") from exc
    if not isinstance(records, list):
        raise InvalidRequest(f"evaluation set {path}: expected a JSON list of alpaca records")
    out = []
    for i, rec in enumerate(records[:limit] if limit else records):
        question = "\n".join(p for p in (rec.get("instruction"), rec.get("input")) if p)
        out.append(EvalExample(str(i), question, str(rec.get("output", "")), rec.get("system")))
    return out


@dataclass(slots=True)
class EvalRow:
    example_id: str
    model: str
    question: str
    reference: str
    prediction: str
    exact_match: float
    rouge_l: float
    bleu: float
    judge_score: float | None
    judge_reason: str
    latency_ms: float
    regex: dict[str, bool] = field(default_factory=dict)


@dataclass(slots=True)
class EvalReport:
    model: str
    rows: list[EvalRow]
    metrics: dict[str, float]
    tokenizer: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "metrics": self.metrics,
            "rows": [asdict(r) for r in self.rows],
        }


class GatewayChat:
    """Chat completions through the gateway with one credential."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def complete(
        self,
        model: str,
        messages: list[dict[str, str]],
        max_tokens: int,
        temperature: float = 0.0,
    ) -> str:
        try:
            r = await self.client.post(
                "/v1/chat/completions",
                json={
                    "model": model,
                    "messages": messages,
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                },
                headers=self.headers,
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"gateway unreachable: {exc}") from exc
        if r.status_code != 200:
            raise ServiceUnavailable(
                f"gateway answered {r.status_code} for {model}: {r.text[:300]}"
            )
        content = r.json()["choices"][0]["message"].get("content")
        return str(content or "")


def parse_judge(text: str) -> tuple[float | None, str]:
    """The judge's 1-5 score and reason; None when the answer is not a score."""
    try:
        data = json.loads(text.strip().removeprefix("```json").removesuffix("```"))
        if isinstance(data, dict) and int(data.get("score", 0)) in range(1, 6):
            return float(data["score"]), str(data.get("reason", ""))
    except (ValueError, TypeError):
        pass
    m = _SCORE.search(text)
    if m:
        return float(m.group(1) or m.group(2)), text.strip()[:200]
    return None, text.strip()[:200]


async def evaluate_model(
    chat: GatewayChat,
    model: str,
    examples: Sequence[EvalExample],
    *,
    judge_model: str | None = None,
    checks: Sequence[RegexCheck] = (),
    tokenize: Tokenizer = char_tokens,
    tokenizer_name: str = "char",
    max_tokens: int = 256,
    concurrency: int = 4,
) -> EvalReport:
    """Answer every example with ``model``, score it; grade it with ``judge_model`` if set."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)

    async def one(ex: EvalExample) -> EvalRow:
        messages = ([{"role": "system", "content": ex.system}] if ex.system else []) + [
            {"role": "user", "content": ex.question}
        ]
        async with gate:
            t0 = loop.time()
            prediction = await chat.complete(model, messages, max_tokens)
            latency = (loop.time() - t0) * 1000
            score, reason = None, ""
            if judge_model:
                prompt = JUDGE_PROMPT.format(
                    question=ex.question, reference=ex.reference, answer=prediction
                )
                verdict = await chat.complete(
                    judge_model, [{"role": "user", "content": prompt}], 128
                )
                score, reason = parse_judge(verdict)
        s = score_example(prediction, ex.reference, checks, tokenize)
        return EvalRow(
            ex.id, model, ex.question, ex.reference, prediction, s.exact_match, s.rouge_l,
            s.bleu, score, reason, latency, s.regex,
        )  # fmt: skip

    rows = list(await asyncio.gather(*(one(ex) for ex in examples)))
    from llmflow.training.metrics import ExampleScores

    metrics = aggregate([ExampleScores(r.exact_match, r.rouge_l, r.bleu, r.regex) for r in rows])
    if rows:
        metrics["corpus_bleu"] = corpus_bleu(
            [r.prediction for r in rows], [r.reference for r in rows], tokenize
        )
        metrics["latency_ms_mean"] = sum(r.latency_ms for r in rows) / len(rows)
    if judge_model:
        scored = [r.judge_score for r in rows if r.judge_score is not None]
        metrics["judge_parsed_ratio"] = len(scored) / len(rows) if rows else 0.0
        if scored:
            metrics["judge_score_mean"] = sum(scored) / len(scored)
    return EvalReport(model, rows, metrics, tokenizer_name)


def _flat(row: EvalRow) -> dict[str, Any]:
    data = asdict(row)
    regex = data.pop("regex")
    data.update({f"regex_{k}": v for k, v in regex.items()})
    return data


def write_results(report: EvalReport, out_dir: Path, stem: str) -> list[Path]:
    """``<stem>.jsonl``, ``<stem>.csv``, ``<stem>.parquet`` (one row per example) and
    ``<stem>.metrics.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [_flat(r) for r in report.rows]
    jsonl = out_dir / f"{stem}.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    csv_path = out_dir / f"{stem}.csv"
    fields = list(rows[0]) if rows else ["example_id"]
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = out_dir / f"{stem}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    metrics = out_dir / f"{stem}.metrics.json"
    metrics.write_text(
        json.dumps(
            {"model": report.model, "tokenizer": report.tokenizer, "metrics": report.metrics},
            indent=2,
            ensure_ascii=False,
        ),
        "utf-8",
    )
    return [jsonl, csv_path, parquet, metrics]


def compare(a: EvalReport, b: EvalReport) -> dict[str, Any]:
    """Metric by metric (b - a) and per-example wins on ROUGE-L, for a base-vs-adapter or
    champion-vs-candidate decision."""
    keys = sorted(set(a.metrics) | set(b.metrics))
    metrics = {
        k: {
            "a": a.metrics.get(k),
            "b": b.metrics.get(k),
            "delta": (b.metrics[k] - a.metrics[k]) if k in a.metrics and k in b.metrics else None,
        }
        for k in keys
    }
    by_id = {r.example_id: r for r in a.rows}
    wins = {"a": 0, "b": 0, "tie": 0}
    for rb in b.rows:
        ra = by_id.get(rb.example_id)
        if ra is None:
            continue
        key = (
            "tie"
            if abs(ra.rouge_l - rb.rouge_l) < 1e-9
            else ("b" if rb.rouge_l > ra.rouge_l else "a")
        )
        wins[key] += 1
    return {"a": a.model, "b": b.model, "metrics": metrics, "rouge_l_wins": wins}


def comparison_markdown(report: dict[str, Any]) -> str:
    """The comparison as a Markdown table (for MLflow and people)."""
    lines = [
        f"# {report['a']} vs {report['b']}",
        "",
        f"| metric | {report['a']} | {report['b']} | delta |",
        "|---|---:|---:|---:|",
    ]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    for key, m in report["metrics"].items():
        lines.append(f"| {key} | {fmt(m['a'])} | {fmt(m['b'])} | {fmt(m['delta'])} |")
    w = report["rouge_l_wins"]
    lines += ["", f"ROUGE-L per example: {report['a']} wins {w['a']}, "
              f"{report['b']} wins {w['b']}, ties {w['tie']}."]  # fmt: skip
    return "\n".join(lines) + "\n"
