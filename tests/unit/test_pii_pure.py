"""The parts of the PII engine that need no Presidio: name grammar, validators, policy
rules, pseudonyms (incl. streamed restore) and masks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from llmflow.errors import ConfigurationError
from llmflow.pii import names, validators
from llmflow.pii.config import Action, PiiConfig, Surface, load_config
from llmflow.pii.pseudonyms import Pseudonymizer, mask_value

REPO = Path(__file__).resolve().parents[2]


def found_names(text: str, min_score: float = 0.5) -> list[str]:
    return [text[s:e] for s, e, score, _ in names.find_names(text) if score >= min_score]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("추가 문의는 담당자 이재훈 주무관 (02-2148-3847) 까지", ["이재훈"]),
        ("진행 상황은 정유진 과장이 담당합니다.", ["정유진"]),
        ("경찰관은 차예진 경사였습니다.", ["차예진"]),
        ("성명: 강민서\n주소: 서울", ["강민서"]),
        ('{"name": "한도현", "dept": "HR"}', ["한도현"]),
        ("원고: 최지훈 (660312-1234562)", ["최지훈"]),
        ("대표이사: 박지훈(朴志勳) — 1972년", ["박지훈(朴志勳)"]),
        ("신청인: 다나카 료마 (田中良真)", ["다나카 료마"]),
        ("- 강민서가 자료 정리 맡음", ["강민서"]),
        ("본인 (홍지원, 1991년 3월 27일생)", ["홍지원"]),
        ("감사관 황보영진 (단장)", ["황보영진"]),
    ],
)
def test_names_with_evidence(text: str, expected: list[str]) -> None:
    assert found_names(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "정리된 자료를 이번 주에 전달합니다.",  # words that start with surname syllables
        "인사과 (02-3475-6182) 로 문의",  # an office, not a person
        "기저질환자 (의사 진단서 첨부)",  # shape of name + title, syllables of no name
        "강원도 (춘천) 출장",
        "김 과장에게 전달",  # a surname alone identifies nobody
        "2026년 정기 점검 결과를 공유합니다.",
    ],
)
def test_words_that_look_like_names_are_not_names(text: str) -> None:
    assert found_names(text) == []


def test_a_name_found_once_is_found_everywhere() -> None:
    text = "이정훈 과장이 보고했다. 이정훈에게 회신 바람. 이정훈씨 부재 시 다른 분께."
    accepted = {text[s:e] for s, e, score, _ in names.find_names(text) if score >= 0.85}
    assert accepted == {"이정훈"}
    assert len(names.propagate(text, accepted)) == 3


@pytest.mark.parametrize(
    ("fn", "value", "verdict"),
    [
        (validators.luhn_valid, "4242-4242-4242-4242", True),
        (validators.luhn_valid, "4242-4242-4242-4241", None),  # kept unscored, not dropped
        (validators.luhn_valid, "1234", False),
        (validators.corp_reg_valid, "110111-0247381", True),
        (validators.corp_reg_valid, "110111-0247385", None),
        (validators.pnu_valid, "1168010100107360001", None),
        (validators.pnu_valid, "9968010100107360001", False),
        (validators.birth_date_valid, "1991년 3월 27일", None),
        (validators.birth_date_valid, "1991년 13월 27일", False),
        (validators.ipv4_valid, "0.0.0.0", False),
    ],
)
def test_validators(fn: validators.Validator, value: str, verdict: bool | None) -> None:
    assert fn(value) is verdict


def test_shipped_policy_loads_and_resolves_rules_first_match_tenant_first() -> None:
    config = load_config(REPO / "policies" / "presidio" / "policy.yaml")
    # unique identifiers are masked at ingest, names stay searchable
    assert config.action_for("KR_RRN", Surface.INGEST) is Action.MASK
    assert config.action_for("PERSON", Surface.INGEST) is Action.ALLOW
    # a secret knowledge base refuses documents with personal data
    assert config.action_for("PERSON", Surface.INGEST, "secret") is Action.BLOCK
    # the tenant's own rules come first
    assert config.action_for("KR_RRN", Surface.INGEST, tenant="dept-hr") is Action.BLOCK
    assert config.action_for("PERSON", Surface.INGEST, tenant="dept-hr") is Action.REDACT
    assert config.action_for("PHONE_NUMBER", Surface.INGEST, tenant="dept-hr") is Action.ALLOW
    # prompts are pseudonymised, logs masked
    assert config.action_for("PERSON", Surface.PROMPT) is Action.PSEUDONYMIZE
    assert config.action_for("PERSON", Surface.PROMPT, "secret") is Action.BLOCK
    assert config.action_for("EMAIL_ADDRESS", Surface.LOGS) is Action.MASK


def test_policy_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("rules:\n  - {surface: ingest, action: shred}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"(?s)policy\.yaml is invalid.*action"):
        load_config(bad)
    bad.write_text("rules: [\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigurationError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValidationError, match="unknown classification"):
        PiiConfig.model_validate({"rules": [{"classification": "top", "action": "mask"}]})


def test_pseudonyms_are_stable_per_value_and_restored() -> None:
    p = Pseudonymizer()
    a = p.pseudonym("PERSON", "김도현")
    b = p.pseudonym("PERSON", "이서연")
    assert (a, b, p.pseudonym("PERSON", "김도현")) == ("<PERSON_1>", "<PERSON_2>", "<PERSON_1>")
    assert p.pseudonym("PHONE_NUMBER", "010-1234-5678") == "<PHONE_NUMBER_1>"
    answer = "<PERSON_1>님께 <PHONE_NUMBER_1>로 연락했고 <PERSON_2>님은 부재중입니다."
    assert p.restore(answer) == "김도현님께 010-1234-5678로 연락했고 이서연님은 부재중입니다."
    # another request's pseudonymizer knows nothing of these values
    assert Pseudonymizer().restore(answer) == answer


def test_streamed_answer_is_restored_at_every_split_point() -> None:
    p = Pseudonymizer()
    p.pseudonym("PERSON", "김도현")
    p.pseudonym("PERSON", "이서연")
    answer = "담당은 <PERSON_1>이고 부담당은 <PERSON_2>입니다. <PERSON_3>은 없는 사람."
    expected = "담당은 김도현이고 부담당은 이서연입니다. <PERSON_3>은 없는 사람."
    for i in range(len(answer)):
        for j in range(i, len(answer)):
            stream = p.stream()
            out = stream.feed(answer[:i]) + stream.feed(answer[i:j]) + stream.feed(answer[j:])
            assert out + stream.flush() == expected, (i, j)
    # nothing is held back longer than a pseudonym could be
    stream = p.stream()
    assert stream.feed("안녕하세요 <PER") == "안녕하세요 "
    assert stream.feed("SON_1>님") == "김도현님"


@pytest.mark.parametrize(
    ("entity", "value", "masked"),
    [
        ("PERSON", "김도현", "김**"),
        ("KR_RRN", "880101-1234568", "880101-1******"),
        ("PHONE_NUMBER", "010-4582-7104", "010-****-7104"),
        ("CREDIT_CARD", "4242-4242-4242-4242", "****-****-****-4242"),
        ("KR_BANK_ACCOUNT", "신한은행 110-4872-153649", "**** ***-****-**3649"),
        ("EMAIL_ADDRESS", "ms.kang@gmail.com", "m******@gmail.com"),
        ("ADDRESS", "서울특별시 강서구 화곡로 287", "***** *** *** ***"),
    ],
)
def test_masks_keep_the_format(entity: str, value: str, masked: str) -> None:
    assert mask_value(entity, value) == masked
