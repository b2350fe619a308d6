from __future__ import annotations

import pytest

from llmflow.index.lexical import KoreanAnalyzer, detect_language


@pytest.fixture(scope="module")
def analyzer() -> KoreanAnalyzer:
    return KoreanAnalyzer()


def test_korean_particles_and_endings_are_dropped(analyzer: KoreanAnalyzer) -> None:
    terms = analyzer.analyze("개인정보를 수집하는 경우에는 동의를 받아야 합니다.").split()
    assert {"개인", "정보", "수집", "동의"} <= set(terms)
    assert "를" not in terms and "는" not in terms and "합니다" not in terms


def test_inflected_forms_meet_at_the_stem(analyzer: KoreanAnalyzer) -> None:
    # the query and the document phrase the verb differently; BM25 must see the same term
    doc = set(analyzer.analyze("연차휴가는 15일을 부여한다").split())
    query = set(analyzer.analyze("연차 휴가를 며칠 부여하나요?").split())
    assert {"연차", "휴가", "부여"} <= doc & query


def test_latin_terms_lowercased_and_batch_equals_single(analyzer: KoreanAnalyzer) -> None:
    texts = ["HanbitVPN 접속 시 MFA를 사용한다.", "The VPN requires MFA."]
    assert analyzer.analyze_many(texts) == [analyzer.analyze(t) for t in texts]
    assert "mfa" in analyzer.analyze(texts[1]).split() and "the" not in analyzer.analyze(texts[1])


def test_language_detection() -> None:
    assert detect_language("정보보안 규정 제5조") == "ko"
    assert detect_language("Remote work policy") == "en"
    assert detect_language("12345 !!") is None
