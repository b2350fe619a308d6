from __future__ import annotations

import pytest

from llmflow.ingest.chunk import Chunker, split_sentences
from llmflow.ingest.elements import Element


def words(text: str) -> int:
    return len(text.split())


def test_sections_tables_and_sizes() -> None:
    body = " ".join(f"문장{i}입니다." for i in range(60))
    elements = [
        Element("제1장 총칙", type="Title"),
        Element(body, section_path=["제1장 총칙"]),
        Element("제2장 휴가", type="Title"),
        Element(
            "종류 일수\n연차 15",
            type="Table",
            table_html="<table><tr><td>연차</td></tr></table>",
            section_path=["제2장 휴가"],
            page=2,
        ),
        Element("휴가는 미리 신청한다.", section_path=["제2장 휴가"]),
    ]
    chunks = Chunker(words, max_tokens=20, overlap_tokens=4).split(elements, "doc1", 1)
    first_section = [c for c in chunks if c.section_path == ["제1장 총칙"]]
    assert len(first_section) >= 3
    assert all(c.token_count <= 20 for c in chunks if c.table_html is None)
    tables = [c for c in chunks if c.table_html]
    assert len(tables) == 1 and tables[0].page == 2 and tables[0].section == "제2장 휴가"
    # a chunk never mixes two sections
    assert not any("제1장" in c.text and "휴가는" in c.text for c in chunks)
    # overlap: consecutive chunks of a section share their boundary sentence
    assert first_section[1].text.split("\n")[0] in first_section[0].text


def test_chunk_ids_are_deterministic() -> None:
    els = [Element("가 나 다 라 마 " * 30)]
    a = Chunker(words, 32, 0).split(els, "d", 3)
    b = Chunker(words, 32, 0).split(els, "d", 3)
    c = Chunker(words, 32, 0).split(els, "d", 4)
    assert [x.chunk_id for x in a] == [x.chunk_id for x in b]
    assert {x.chunk_id for x in a}.isdisjoint(x.chunk_id for x in c)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        Chunker(words, 8, 0)
    with pytest.raises(ValueError):
        Chunker(words, 100, 60)


def test_sentence_split_korean_and_english() -> None:
    assert split_sentences("첫 문장입니다. 둘째 문장이다. Third one! Fourth?") == [
        "첫 문장입니다.",
        "둘째 문장이다.",
        "Third one!",
        "Fourth?",
    ]


def test_headings_alone_are_not_chunks() -> None:
    els = [
        Element("규정", type="Title"),
        Element("제1장", type="Title", section_path=["규정"]),
        Element("본문 내용이다.", section_path=["규정", "제1장"]),
    ]
    chunks = Chunker(words, 32, 0).split(els, "d", 1)
    assert [c.text for c in chunks] == ["제1장\n본문 내용이다."]
    assert chunks[0].section_path == ["규정", "제1장"]
    only = Chunker(words, 32, 0).split([Element("제목뿐", type="Title")], "d", 1)
    assert [c.text for c in only] == ["제목뿐"]
