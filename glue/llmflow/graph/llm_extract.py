"""LLM graph extraction: LlamaIndex's ``SchemaLLMPathExtractor`` through an OpenAI-compatible
endpoint (normally the LLMFlow gateway, so PII guard, quotas and usage apply to it too).

On only when ``graph.llm.base_url`` and ``graph.llm.model`` are set; without them the graph
is the deterministic one, and ingest says so once in the log. It runs per document at ingest
(incremental: nothing is recomputed for other documents), chunk by chunk within a
per-document token budget and chunk cap; the tokens are those the endpoint reports in
``usage`` (read from the responses, so the count is the server's, not an estimate), and the
job statistics carry the cost. A failed call costs that chunk's triplets, never the ingest.

Triplets become ``Entity`` nodes (typed by the schema) joined by ``RELATED_TO`` edges whose
``relation`` property keeps the extracted label, and the chunk ``MENTIONS`` both ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import httpx

from llmflow.graph.base import GraphEdge, GraphNode
from llmflow.graph.config import GraphLlmSettings
from llmflow.graph.extract import entity_key, node_id

log = logging.getLogger(__name__)

EntityType = Literal[
    "PERSON", "ORGANIZATION", "PLACE", "LAW", "ARTICLE", "TERM", "PRODUCT", "EVENT", "DATE",
    "AMOUNT",
]  # fmt: skip
RelationType = Literal[
    "RELATED_TO", "PART_OF", "DEFINES", "REFERS_TO", "APPLIES_TO", "REQUIRES", "LOCATED_IN",
    "MEMBER_OF", "WORKS_FOR", "CREATED_BY", "AMOUNT_OF",
]  # fmt: skip


@dataclass(slots=True)
class LlmExtractionReport:
    calls: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    triplets: int = 0
    chunks: int = 0
    skipped_chunks: int = 0
    seconds: float = 0.0

    def stats(self) -> dict[str, Any]:
        return {f"graph_llm_{k}": (round(v, 3) if isinstance(v, float) else v)
                for k, v in asdict(self).items()}  # fmt: skip


class _Usage:
    """Counts the tokens each response reports (an httpx response hook)."""

    def __init__(self) -> None:
        self.prompt = self.completion = self.calls = 0

    async def __call__(self, response: httpx.Response) -> None:
        await response.aread()
        self.calls += 1
        try:
            usage = response.json().get("usage") or {}
        except ValueError:
            return
        self.prompt += int(usage.get("prompt_tokens") or 0)
        self.completion += int(usage.get("completion_tokens") or 0)


def llm_extraction_enabled(settings: GraphLlmSettings) -> bool:
    return bool(settings.base_url and settings.model)


async def extract_with_llm(
    settings: GraphLlmSettings,
    document_id: str,
    chunks: Sequence[tuple[str, str]],
) -> tuple[list[GraphNode], list[GraphEdge], LlmExtractionReport]:
    """Triplets from ``(chunk_id, text)`` pairs within the document's caps."""
    from llama_index.core.indices.property_graph import SchemaLLMPathExtractor
    from llama_index.core.llms.llm import LLM
    from llama_index.core.schema import TextNode
    from llama_index.llms.openai_like import OpenAILike

    report = LlmExtractionReport()
    t0 = time.perf_counter()
    usage = _Usage()
    client = httpx.AsyncClient(
        event_hooks={"response": [usage]}, timeout=httpx.Timeout(settings.timeout_s)
    )

    class _TextStructuredLLM(OpenAILike):  # type: ignore[misc]
        """LlamaIndex's OpenAI class adds ``tool_choice: required`` to every structured
        predict, even for a model it was told cannot call functions; vLLM (like OpenAI)
        refuses ``tool_choice`` without ``tools``. The base LLM's text-completion program
        is what a model without function calling needs."""

        async def astructured_predict(
            self, output_cls: Any, prompt: Any, llm_kwargs: Any = None, **prompt_args: Any
        ) -> Any:
            return await LLM.astructured_predict(
                self, output_cls, prompt, llm_kwargs=llm_kwargs, **prompt_args
            )

    llm = _TextStructuredLLM(
        model=settings.model or "",
        api_base=settings.base_url,
        api_key=settings.api_key.get_secret_value() if settings.api_key else "unused",
        is_chat_model=True,
        is_function_calling_model=False,
        context_window=8192,
        max_tokens=512,
        timeout=settings.timeout_s,
        max_retries=1,
        async_http_client=client,
    )
    extractor = SchemaLLMPathExtractor(
        llm,
        # LlamaIndex documents Literal schemas here; its annotation says type[Any]
        possible_entities=EntityType,  # type: ignore[arg-type]
        possible_relations=RelationType,  # type: ignore[arg-type]
        strict=True,
        # any relation between any two schema types (LlamaIndex's default schema would
        # prune most of ours)
        kg_validation_schema=[
            (a, r, b)
            for a in get_args(EntityType)
            for r in get_args(RelationType)
            for b in get_args(EntityType)
        ],
        max_triplets_per_chunk=settings.max_triplets_per_chunk,
        num_workers=1,
    )
    nodes: dict[str, GraphNode] = {}
    edges: list[GraphEdge] = []
    try:
        for i, (chunk_id, text) in enumerate(chunks):
            spent = usage.prompt + usage.completion
            if i >= settings.max_chunks_per_document or spent >= settings.max_tokens_per_document:
                report.skipped_chunks = len(chunks) - i
                break
            report.chunks += 1
            calls_before = usage.calls
            try:
                [done] = await extractor.acall([TextNode(text=text)])
            except Exception as exc:  # the endpoint failed: this chunk has no LLM triplets
                report.failed_calls += max(1, usage.calls - calls_before)
                log.warning("LLM graph extraction failed on a chunk: %s", exc)
                continue
            found = done.metadata.get("relations", [])
            for rel in found:
                src = _entity(nodes, rel.source_id, _label_of(done, rel.source_id))
                dst = _entity(nodes, rel.target_id, _label_of(done, rel.target_id))
                if src is None or dst is None or src == dst:
                    continue
                report.triplets += 1
                props = {"relation": rel.label, "source": "llm"}
                edges.append(GraphEdge(src, dst, "RELATED_TO", document_id, 1.0, props))
                edges.append(GraphEdge(f"c:{chunk_id}", src, "MENTIONS", document_id))
                edges.append(GraphEdge(f"c:{chunk_id}", dst, "MENTIONS", document_id))
    finally:
        await client.aclose()
    report.calls = usage.calls
    report.prompt_tokens, report.completion_tokens = usage.prompt, usage.completion
    report.seconds = time.perf_counter() - t0
    return list(nodes.values()), edges, report


def _label_of(node: Any, name: str) -> str:
    for entity in node.metadata.get("nodes", []):
        if getattr(entity, "name", None) == name:
            return str(entity.label)
    return "TERM"


def _entity(nodes: dict[str, GraphNode], name: str, label: str) -> str | None:
    key = entity_key(str(name))
    if len(key) < 2:
        return None
    nid = node_id("e", key)
    nodes.setdefault(nid, GraphNode(nid, "Entity", str(name), None, {"key": key, "type": label}))
    return nid
