"""Cross-reference parsing and resolution (Korean statutes/rules, English documents)."""

from __future__ import annotations

import pytest

from llmflow.graph.references import (
    article_headings,
    find_references,
    heading_target,
    law_family,
    normalise_key,
)


def keys(text: str, title: str) -> list[str]:
    return [r.key for r in find_references(text, title)]


def test_unqualified_articles_resolve_within_the_citing_document() -> None:
    refs = find_references("제61조제1항제2호 및 제18조의2를 적용한다.", "한빛전자 취업규칙")
    assert [(r.key, r.paragraph, r.item) for r in refs] == [
        ("한빛전자취업규칙#제61조", 1, 2),
        ("한빛전자취업규칙#제18조의2", None, None),
    ]


def test_named_acts_and_same_act_follow_the_last_named_act() -> None:
    text = "「근로기준법」 제60조와 같은 법 제61조, 그리고 보수규정 제4조 및 같은 법 제2조"
    assert keys(text, "취업규칙") == [
        "근로기준법#제60조",
        "근로기준법#제61조",
        "보수규정#제4조",
        "보수규정#제2조",
    ]


def test_a_decree_cites_its_parent_act_its_decree_and_its_rules() -> None:
    text = "법 제17조에 따라 영 제30조 및 규칙 제5조를 준용한다. 이 영 제3조도 같다."
    assert keys(text, "근로기준법 시행령") == [
        "근로기준법#제17조",
        "근로기준법시행령#제30조",
        "근로기준법시행규칙#제5조",
        "근로기준법시행령#제3조",
    ]


def test_detailed_rules_cite_the_rule_they_implement() -> None:
    text = "규정 제5조제2항에 따른 원격접속과 이 세칙 제3조"
    assert keys(text, "정보보안 규정 시행세칙")[0] == "정보보안규정#제5조"
    assert law_family("정보보안 규정 시행세칙") == ("정보보안규정", "시행세칙")


def test_supplementary_provisions_and_annexes() -> None:
    text = "부칙 제2조에 따른 경과조치와 별표 1의 기준"
    assert keys(text, "여비규정") == ["여비규정#부칙제2조", "여비규정#별표1"]


def test_article_headings_at_line_starts_are_definitions_not_citations() -> None:
    text = "제5조(목적) 이 규정은 제7조의 절차를 정한다.\n제6조(정의) 정의는 다음과 같다."
    assert keys(text, "인사규정") == ["인사규정#제7조"]
    assert article_headings(text) == [("제5조", "목적"), ("제6조", "정의")]


@pytest.mark.parametrize(
    ("heading", "target"),
    [
        ("제5조(목적)", "제5조"),
        ("제18조의2(특례)", "제18조의2"),
        ("[별표 2] 지급 기준", "별표2"),
        ("부칙", "부칙"),
        ("Section 4.2 Scope", "section 4.2"),
        ("4.2 Scope", "section 4.2"),
        ("Article 12: Duties", "article 12"),
        ("Appendix A", "appendix A"),
        ("Introduction", None),
        ("총칙", None),
    ],
)
def test_heading_targets(heading: str, target: str | None) -> None:
    assert heading_target(heading) == target


def test_articles_under_the_supplementary_provisions_are_their_own_anchors() -> None:
    assert heading_target("제2조(경과조치)", in_supplement=True) == "부칙제2조"


def test_english_references() -> None:
    text = "See Section 4.2, Sections 5 and Article 5(b); details in Appendix A."
    assert keys(text, "Travel Policy") == [
        "travel policy#section 4.2",
        "travel policy#section 5",
        "travel policy#article 5",
        "travel policy#appendix A",
    ]


def test_names_normalise_for_comparison() -> None:
    assert normalise_key("「근로 기준법」") == "근로기준법"
    assert normalise_key("  Moscow   State University. ") == "moscow state university"
    assert law_family("근로기준법 시행규칙") == ("근로기준법", "시행규칙")
    assert law_family("취업규칙") == ("취업규칙", "")


def test_duplicate_citations_count_once() -> None:
    assert keys("제3조 및 제3조, 다시 제3조", "규정") == ["규정#제3조"]
