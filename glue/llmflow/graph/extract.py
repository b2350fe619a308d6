"""Deterministic graph extraction: always on, no LLM, no network.

From one ingested document it derives (seed 004 §2.5 plus the section structure):

* ``Document`` ─HAS_CHUNK→ ``Chunk``; ``Document`` ─HAS_SECTION→ ``Section`` (headings, and
  article headings met inside the text: regulations often arrive as plain paragraphs);
  ``Section`` ─HAS_SECTION→ sub-sections, ─HAS_CHUNK→ its chunks.
* ``Chunk`` ─REFERS_TO→ ``Section`` for every explicit citation (:mod:`.references`).
* ``Entity`` nodes: Korean noun phrases from the Kiwi pass the lexical index makes anyway
  (compound nouns, proper nouns, 「bracketed」 act names) and English proper-noun phrases
  (capitalised runs, with their leading/trailing sub-phrases so that "Lomonosov Moscow State
  University" also meets the article titled "Moscow State University"). ``Chunk``
  ─MENTIONS→ ``Entity``; co-mentioned entities ─RELATED_TO─ each other (weight = chunks).
* The document is ``ABOUT`` the entity its title names (how a mention reaches the document
  that describes it: the multi-hop bridge); ``ABOUT`` its topics (metadata ``topic``/
  ``category``/``tags``, and an act's family: 근로기준법, its 시행령 and 시행규칙 share one), and
  its title entity ``BELONGS_TO`` them.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmflow.graph.base import DocumentGraph, EdgeType, GraphEdge, GraphNode
from llmflow.graph.references import (
    article_headings,
    find_references,
    heading_target,
    law_family,
    normalise_key,
)

MAX_ENTITIES_PER_CHUNK = 40
MAX_RELATED_PER_CHUNK = 8
_LAW_TITLE = re.compile(r"(법|법률|시행령|시행규칙|규칙|규정|령)$")
_PAREN_SUFFIX = re.compile(r"\s*\([^)]*\)\s*$")
_BRACKETED = re.compile(r"「([^」]{2,60})」")

_CAP = r"[A-Z\u00C0-\u00DE][\w'’\-.]*[\w]|[A-Z]"
_CONNECT = r"(?:of|the|de|da|del|della|di|du|la|le|van|von|der|den|y|and|for|&|on|in)"
_EN_PHRASE = re.compile(rf"(?<![\w])(?:{_CAP})(?:\s+(?:{_CONNECT}\s+)*(?:{_CAP}))*")
_EN_STOP_CAPS = frozenset(
    (
        "a an the of to in on for and or is are was were be been by with as at from that this "
        "these those it its into than then there which who whom what when where how he she they "
        "we you i his her their our your my me him them us if but not no yes so also after "
        "before during while since until although however though both each all any some many "
        "most other such one two three first second new old its mr mrs ms dr st"
    ).split()
)


def node_id(prefix: str, key: str) -> str:
    return f"{prefix}:{hashlib.sha256(key.encode()).hexdigest()[:24]}"


def entity_key(name: str) -> str:
    """An entity's key: the normalised name without a disambiguating suffix such as
    ``John Smith (footballer)``."""
    return normalise_key(_PAREN_SUFFIX.sub("", name) or name)


@dataclass(slots=True)
class ChunkInput:
    chunk_id: str
    index: int
    text: str
    section_path: list[str]
    phrases: list[str] = field(default_factory=list)
    """Korean noun phrases (``KoreanAnalyzer.analyze_with_phrases``)."""


@dataclass(slots=True)
class DocumentInput:
    document_id: str
    title: str
    chunks: list[ChunkInput]
    topics: list[str] = field(default_factory=list)


def english_phrases(text: str) -> list[str]:
    """Capitalised runs and their leading/trailing sub-phrases (two words or more)."""
    out: list[str] = []
    for m in _EN_PHRASE.finditer(text):
        words = m.group(0).split()
        while words and words[-1].lower() in _EN_STOP_CAPS:
            words.pop()
        while words and words[0].lower() in _EN_STOP_CAPS:
            words.pop(0)
        if not words:
            continue
        phrase = " ".join(words)
        if len(words) == 1 and (len(phrase) < 3 or phrase.isdigit()):
            continue
        out.append(phrase)
        caps = [i for i, w in enumerate(words) if w[0].isupper()]
        if len(caps) >= 3:
            for i in caps[1:-1]:
                out.append(" ".join(words[i:]))  # suffixes: "Moscow State University"
                out.append(" ".join(words[: i + 1]))  # prefixes
    return out


def _entities(chunk: ChunkInput) -> list[tuple[str, str]]:
    """(key, display name) in order of first mention, capped."""
    seen: dict[str, str] = {}
    candidates: Iterable[str] = (
        *(m.group(1) for m in _BRACKETED.finditer(chunk.text)),
        *chunk.phrases,
        *english_phrases(chunk.text),
    )
    for name in candidates:
        key = entity_key(name)
        if len(key) < 2 or key.isdigit():
            continue
        seen.setdefault(key, name.strip())
        if len(seen) >= MAX_ENTITIES_PER_CHUNK:
            break
    return list(seen.items())


class _Builder:
    def __init__(self, doc: DocumentInput) -> None:
        self.doc = doc
        self.doc_node = f"d:{doc.document_id}"
        self.nodes: dict[str, GraphNode] = {}
        self.edges: dict[tuple[str, str, str], GraphEdge] = {}

    def node(self, node: GraphNode) -> str:
        self.nodes.setdefault(node.id, node)
        return node.id

    def edge(
        self,
        src: str,
        dst: str,
        type_: EdgeType,
        weight: float = 1.0,
        props: dict[str, Any] | None = None,
    ) -> None:
        k = (src, type_, dst)
        prev = self.edges.get(k)
        if prev is not None:
            self.edges[k] = GraphEdge(
                src, dst, prev.type, prev.document_id, prev.weight + weight, prev.props
            )
            return
        self.edges[k] = GraphEdge(src, dst, type_, self.doc.document_id, weight, props or {})

    def entity(self, key: str, name: str) -> str:
        return self.node(GraphNode(node_id("e", key), "Entity", name, None, {"key": key}))

    def section(self, key: str, name: str, anchor: str | None) -> str:
        props: dict[str, Any] = {"key": key}
        if anchor:
            props["anchor"] = anchor
        return self.node(GraphNode(node_id("s", key), "Section", name, self.doc.document_id, props))


def extract_document(doc: DocumentInput) -> DocumentGraph:
    """The document's subgraph (see the module docstring)."""
    b = _Builder(doc)
    own_key = normalise_key(doc.title)
    family, _ = law_family(doc.title)
    b.node(GraphNode(b.doc_node, "Document", doc.title, doc.document_id, {"key": own_key}))
    title_entity = b.entity(entity_key(doc.title), doc.title)
    b.edge(b.doc_node, title_entity, "ABOUT")
    topics = [t for t in doc.topics if t.strip()]
    if _LAW_TITLE.search(family) and family != own_key:
        topics.append(family)
    elif _LAW_TITLE.search(own_key):
        topics.append(own_key)
    for topic in dict.fromkeys(topics):
        key = normalise_key(topic)
        tid = b.node(GraphNode(node_id("t", key), "Topic", topic, None, {"key": key}))
        b.edge(b.doc_node, tid, "ABOUT")
        b.edge(title_entity, tid, "BELONGS_TO")

    for chunk in doc.chunks:
        articles = article_headings(chunk.text)
        if articles:  # name a chunk after the article it holds: paths read "제25조(통상임금)"
            name = f"{articles[0][0]}({articles[0][1]})"
        else:
            name = chunk.section_path[-1] if chunk.section_path else doc.title
        cid = b.node(
            GraphNode(f"c:{chunk.chunk_id}", "Chunk", name, doc.document_id, {"index": chunk.index})
        )
        # weight 1/(1+index): a capped walk from a document reaches its opening chunks first
        b.edge(b.doc_node, cid, "HAS_CHUNK", weight=1.0 / (1 + chunk.index))
        # section structure: the heading path, then article headings inside the text
        parent, path_keys = b.doc_node, list[str]()
        in_supplement = False
        own_sections: set[str] = set()
        for heading in chunk.section_path:
            if heading.strip() == doc.title.strip() and not path_keys:
                continue  # the document title is the Document itself
            in_supplement = in_supplement or heading_target(heading) == "부칙"
            anchor = heading_target(heading, in_supplement)
            path_keys.append(normalise_key(heading))
            key = f"{own_key}#{anchor}" if anchor else f"{doc.document_id}#h:{'/'.join(path_keys)}"
            sid = b.section(key, heading, anchor)
            b.edge(parent, sid, "HAS_SECTION")
            parent = sid
        if parent != b.doc_node:
            b.edge(parent, cid, "HAS_CHUNK")
            own_sections.add(parent)
        for anchor, title in article_headings(chunk.text, in_supplement):
            sid = b.section(f"{own_key}#{anchor}", f"{anchor}({title})", anchor)
            b.edge(parent, sid, "HAS_SECTION")
            b.edge(sid, cid, "HAS_CHUNK")
            own_sections.add(sid)
        for ref in find_references(chunk.text, doc.title):
            target = node_id("s", ref.key)
            if target in own_sections:
                continue
            props: dict[str, Any] = {"text": ref.text, "target": ref.key}
            if ref.paragraph is not None:
                props["paragraph"] = ref.paragraph
            if ref.item is not None:
                props["item"] = ref.item
            b.edge(cid, target, "REFERS_TO", props=props)
        # entities, mentions, co-mentions
        mentioned = [b.entity(key, name) for key, name in _entities(chunk)]
        for eid in mentioned:
            b.edge(cid, eid, "MENTIONS")
        head = mentioned[:MAX_RELATED_PER_CHUNK]
        for i, a in enumerate(head):
            for c in head[i + 1 :]:
                if a != c:
                    src, dst = sorted((a, c))
                    b.edge(src, dst, "RELATED_TO")
    return DocumentGraph(doc.document_id, list(b.nodes.values()), list(b.edges.values()))


def merge_into(
    graph: DocumentGraph, nodes: Sequence[GraphNode], edges: Sequence[GraphEdge]
) -> DocumentGraph:
    """The document's graph plus more nodes and edges (an LLM's): nodes already there are
    kept, an edge already there gains the other's weight (one row per edge and document)."""
    by_id = {n.id: n for n in graph.nodes}
    for n in nodes:
        by_id.setdefault(n.id, n)
    merged: dict[tuple[str, str, str], GraphEdge] = {}
    for e in [*graph.edges, *edges]:
        k = (e.src, e.type, e.dst)
        prev = merged.get(k)
        merged[k] = e if prev is None else GraphEdge(
            prev.src, prev.dst, prev.type, prev.document_id, prev.weight + e.weight,
            {**e.props, **prev.props},
        )  # fmt: skip
    return DocumentGraph(graph.document_id, list(by_id.values()), list(merged.values()))


def graph_stats(graphs: Sequence[DocumentGraph]) -> dict[str, int]:
    """Node counts by label and edge counts by type over some document graphs."""
    counts: Counter[str] = Counter()
    for g in graphs:
        counts.update(n.label for n in g.nodes)
        counts.update(e.type for e in g.edges)
    return dict(counts)
