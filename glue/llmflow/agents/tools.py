"""The research tools: what the agent may call, as OpenAI function specs and as a Protocol.

The graph only knows :class:`ResearchTools`; :mod:`llmflow.agents.runtime_tools` implements
it with the platform's hybrid search and graph service, unit tests with a fake. Every method
takes the caller's principal: the tenant of a tool call is the caller's, always.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from llmflow.auth.principal import Principal
    from llmflow.retrieve.hybrid import SearchResult

TOOL_NAMES = ("hybrid_search", "graph_neighbourhood", "follow_reference", "fetch_section")


@dataclass(frozen=True, slots=True)
class Passage:
    """A chunk a tool returned, with what a citation needs."""

    chunk_id: str
    text: str
    document_id: str
    title: str = ""
    source: str = ""
    page: int | None = None
    section: str = ""
    knowledge_base: str = ""
    score: float = 0.0

    @classmethod
    def from_result(cls, r: SearchResult) -> Passage:
        return cls(
            chunk_id=r.chunk_id,
            text=r.text,
            document_id=r.document_id,
            title=r.title,
            source=r.source,
            page=r.page,
            section=r.section,
            knowledge_base=r.knowledge_base,
            score=float(r.score),
        )

    def citation(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "title": self.title,
            "source": self.source,
            "page": self.page,
            "section": self.section,
            "chunk_id": self.chunk_id,
            "knowledge_base": self.knowledge_base,
        }

    def for_model(self, max_chars: int) -> dict[str, Any]:
        text = self.text if len(self.text) <= max_chars else self.text[:max_chars] + " …"
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "title": self.title,
            "section": self.section,
            "page": self.page,
            "knowledge_base": self.knowledge_base,
            "score": round(self.score, 4),
            "text": text,
        }


class ResearchTools(Protocol):
    """The operations behind the agent's tools, all scoped to the caller's tenant."""

    async def knowledge_bases(self, principal: Principal) -> dict[str, str]:
        """The knowledge bases the principal may search → their data classification."""

    async def search(
        self, principal: Principal, kb_names: Sequence[str], query: str, top_k: int
    ) -> list[Passage]: ...

    async def neighbourhood(
        self, principal: Principal, kb_names: Sequence[str], node: str, hops: int, limit: int
    ) -> dict[str, Any]:
        """The subgraph around a node id or an entity/section name (``Subgraph.to_dict()``)."""

    async def follow_reference(
        self, principal: Principal, kb_names: Sequence[str], chunk_id: str, reference: str | None
    ) -> list[Passage]:
        """The chunks of the sections a chunk cites (one citation, or all of them)."""

    async def section(
        self, principal: Principal, kb_names: Sequence[str], document_id: str, section: str | None
    ) -> list[Passage]:
        """A document's section in full, in reading order (the whole document if None)."""


_KBS = {
    "type": "array",
    "items": {"type": "string"},
    "description": "knowledge bases to use (default: every knowledge base of this run)",
}


def tool_specs(names: Sequence[str] = TOOL_NAMES) -> list[dict[str, Any]]:
    """The tools in OpenAI's ``tools`` format (function calling, JSON Schema parameters)."""
    specs: dict[str, dict[str, Any]] = {
        "hybrid_search": {
            "description": "Search the knowledge bases (dense + keyword). Returns passages "
            "with chunk_id and document_id you can pass to the other tools.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "what to look for"},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 20},
                    "knowledge_bases": _KBS,
                },
                "required": ["query"],
            },
        },
        "graph_neighbourhood": {
            "description": "The knowledge graph around an entity, section or node id: which "
            "sections, chunks and entities connect to it (1-2 hops).",
            "parameters": {
                "type": "object",
                "properties": {
                    "node": {"type": "string", "description": "node id, entity or section name"},
                    "hops": {"type": "integer", "minimum": 1, "maximum": 2},
                    "knowledge_bases": _KBS,
                },
                "required": ["node"],
            },
        },
        "follow_reference": {
            "description": "Open what a passage cites (e.g. 제5조제2항, 'Section 4.2'): the "
            "passages of the referenced article or section.",
            "parameters": {
                "type": "object",
                "properties": {
                    "chunk_id": {"type": "string", "description": "the citing passage"},
                    "reference": {
                        "type": "string",
                        "description": "one reference as written in the passage; omit for all",
                    },
                    "knowledge_bases": _KBS,
                },
                "required": ["chunk_id"],
            },
        },
        "fetch_section": {
            "description": "Read a section of a document in full, in order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "document_id": {"type": "string"},
                    "section": {"type": "string", "description": "section title; omit for all"},
                    "knowledge_bases": _KBS,
                },
                "required": ["document_id"],
            },
        },
    }
    return [{"type": "function", "function": {"name": n, **specs[n]}} for n in names]


class ToolArgumentError(ValueError):
    """The model called a tool with arguments that do not fit its schema: told to the model."""


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's ``function.arguments`` (a JSON string per OpenAI's contract)."""
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ToolArgumentError(f"arguments are not valid JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise ToolArgumentError("arguments must be a JSON object")
    return value


def optional_text(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise ToolArgumentError(f"'{name}' must be a string")
    return value.strip()


def required_text(args: dict[str, Any], name: str) -> str:
    value = optional_text(args, name)
    if value is None:
        raise ToolArgumentError(f"'{name}' is required")
    return value


def int_arg(args: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = args.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolArgumentError(f"'{name}' must be an integer")
    return max(low, min(high, int(value)))


def kb_arg(args: dict[str, Any], allowed: Sequence[str]) -> list[str]:
    """The knowledge bases a call names, which must be among the run's; default all."""
    value = args.get("knowledge_bases")
    if value is None or value == []:
        return list(allowed)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ToolArgumentError("'knowledge_bases' must be a list of names")
    outside = [v for v in value if v not in allowed]
    if outside:
        raise ToolArgumentError(
            f"knowledge base(s) {outside} are not available to this run; use {list(allowed)}"
        )
    return list(dict.fromkeys(value))
