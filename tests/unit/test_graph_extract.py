"""Deterministic graph extraction: structure, references, entities, subjects, topics."""

from __future__ import annotations

from llmflow.graph.extract import (
    ChunkInput,
    DocumentInput,
    english_phrases,
    entity_key,
    extract_document,
    node_id,
)


def _doc() -> DocumentInput:
    return DocumentInput(
        document_id="doc1",
        title="한빛전자 취업규칙",
        chunks=[
            ChunkInput(
                "c0",
                0,
                "제12조(연차휴가) ① 회사는 15일의 유급휴가를 준다.\n"
                "② 미사용 연차휴가는 제25조에 따른 통상임금으로 보상한다.",
                ["한빛전자 취업규칙"],
                ["연차휴가", "유급휴가", "통상임금"],
            ),
            ChunkInput(
                "c1",
                1,
                "제25조(통상임금) 통상임금은 「보수규정」 제4조에 따라 산정한다.",
                ["한빛전자 취업규칙"],
                ["통상임금", "보수규정"],
            ),
        ],
        topics=["인사"],
    )


def _edges(graph, type_):  # type: ignore[no-untyped-def]
    return {(e.src, e.dst) for e in graph.edges if e.type == type_}


def test_structure_sections_and_chunks() -> None:
    g = extract_document(_doc())
    labels = {n.id: n.label for n in g.nodes}
    art12, art25 = node_id("s", "한빛전자취업규칙#제12조"), node_id("s", "한빛전자취업규칙#제25조")
    assert labels[art12] == labels[art25] == "Section"
    assert ("d:doc1", "c:c0") in _edges(g, "HAS_CHUNK")
    assert {(art12, "c:c0"), (art25, "c:c1")} <= _edges(g, "HAS_CHUNK")
    assert {("d:doc1", art12), ("d:doc1", art25)} <= _edges(g, "HAS_SECTION")
    names = {n.id: n.name for n in g.nodes}
    assert names["c:c1"] == "제25조(통상임금)"  # paths read as articles
    # the document's opening chunks weigh most: a capped walk reaches them first
    weights = {e.dst: e.weight for e in g.edges if e.type == "HAS_CHUNK" and e.src == "d:doc1"}
    assert weights["c:c0"] > weights["c:c1"]
    assert all(e.document_id == "doc1" for e in g.edges)


def test_references_point_at_the_cited_article_even_in_another_regulation() -> None:
    g = extract_document(_doc())
    refs = {(e.src, e.dst): e.props for e in g.edges if e.type == "REFERS_TO"}
    assert ("c:c0", node_id("s", "한빛전자취업규칙#제25조")) in refs
    assert ("c:c1", node_id("s", "보수규정#제4조")) in refs  # resolved once 보수규정 is ingested
    assert refs[("c:c1", node_id("s", "보수규정#제4조"))]["text"] == "「보수규정」 제4조"
    # a chunk does not cite the article it holds
    assert not any(
        src == "c:c1" and dst == node_id("s", "한빛전자취업규칙#제25조") for src, dst in refs
    )


def test_entities_mentions_subject_and_topics() -> None:
    g = extract_document(_doc())
    wage = node_id("e", "통상임금")
    assert ("c:c0", wage) in _edges(g, "MENTIONS") and ("c:c1", wage) in _edges(g, "MENTIONS")
    # the bracketed act name is an entity as well
    assert ("c:c1", node_id("e", "보수규정")) in _edges(g, "MENTIONS")
    title = node_id("e", entity_key("한빛전자 취업규칙"))
    assert ("d:doc1", title) in _edges(g, "ABOUT")
    topic = node_id("t", "인사")
    assert ("d:doc1", topic) in _edges(g, "ABOUT") and (title, topic) in _edges(g, "BELONGS_TO")
    related = _edges(g, "RELATED_TO")
    assert tuple(sorted((node_id("e", "연차휴가"), wage))) in related
    assert not [e for e in g.edges if e.type == "RELATED_TO" and e.src == e.dst]


def test_co_mentions_in_several_chunks_add_up_on_one_edge() -> None:
    doc = _doc()
    doc.chunks.append(ChunkInput("c2", 2, "보상 기준", [], ["연차휴가", "통상임금"]))
    g = extract_document(doc)
    pair = tuple(sorted((node_id("e", "연차휴가"), node_id("e", "통상임금"))))
    [edge] = [e for e in g.edges if e.type == "RELATED_TO" and (e.src, e.dst) == pair]
    assert edge.weight == 2.0


def test_shared_nodes_belong_to_no_document() -> None:
    g = extract_document(_doc())
    for n in g.nodes:
        if n.label in ("Entity", "Topic"):
            assert n.document_id is None
        else:
            assert n.document_id == "doc1"


def test_an_act_family_is_a_topic_shared_by_the_act_and_its_decrees() -> None:
    act = extract_document(DocumentInput("a", "근로기준법", []))
    decree = extract_document(DocumentInput("b", "근로기준법 시행령", []))
    topic = node_id("t", "근로기준법")
    assert ("d:a", topic) in _edges(act, "ABOUT") and ("d:b", topic) in _edges(decree, "ABOUT")


def test_english_proper_noun_phrases_with_their_sub_phrases() -> None:
    text = (
        "Sergei Tokarev was a professor at Lomonosov Moscow State University. "
        "The city of Moscow is large. It was founded in 1147."
    )
    phrases = english_phrases(text)
    assert "Sergei Tokarev" in phrases
    assert "Lomonosov Moscow State University" in phrases
    assert "Moscow State University" in phrases  # meets the article of that title
    assert "Moscow" in phrases
    assert "It" not in phrases and "The" not in phrases


def test_entity_keys_drop_disambiguation_suffixes() -> None:
    assert entity_key("John Smith (footballer)") == "john smith"
    assert entity_key("근로 기준법") == "근로기준법"


def test_sections_from_headings_with_english_numbering() -> None:
    doc = DocumentInput(
        "en",
        "Travel Policy",
        [
            ChunkInput("x0", 0, "Claims follow Section 5.", ["Travel Policy", "4 Allowances"]),
            ChunkInput("x1", 1, "Receipts are kept.", ["Travel Policy", "5 Claims"]),
        ],
    )
    g = extract_document(doc)
    s5 = node_id("s", "travel policy#section 5")
    assert ("c:x0", s5) in _edges(g, "REFERS_TO")
    assert (s5, "c:x1") in _edges(g, "HAS_CHUNK")
