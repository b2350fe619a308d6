"""The Korean PII engine on the real Presidio analyzer and anonymizer (no NLP model)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from llmflow.errors import PiiBlocked
from llmflow.eval.pii import load_pii_dataset, score_predictions
from llmflow.pii.anonymize import PiiGuard, PiiMaskingFilter, mask, mask_data, set_default_guard
from llmflow.pii.config import Action, ActionRule, Surface, load_config
from llmflow.pii.engine import PiiEngine
from llmflow.pii.labels import KO_PII_LABELS
from llmflow.pii.report import PiiFinding

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
POLICY = REPO / "policies" / "presidio" / "policy.yaml"
EVAL_CORPUS = REPO.parent / "shared" / "datasets" / "pii" / "ko_pii_eval_corpus.jsonl"
SALT = b"test-salt"


@pytest.fixture(scope="module")
def engine() -> PiiEngine:
    return PiiEngine(load_config(POLICY))


@pytest.fixture(scope="module")
def guard(engine: PiiEngine) -> PiiGuard:
    guard = PiiGuard(engine, SALT)
    set_default_guard(guard)
    return guard


def spans(text: str, findings: list[PiiFinding]) -> list[tuple[str, str]]:
    return [(f.entity_type, text[f.start : f.end]) for f in findings]


@pytest.mark.parametrize(
    ("text", "entity_type", "value"),
    [
        ("홍길동의 주민등록번호는 880101-1234568입니다.", "KR_RRN", "880101-1234568"),
        # issued since October 2020: no checksum, the label carries it
        ("주민등록번호: 211005-3123456", "KR_RRN", "211005-3123456"),
        ("외국인등록번호 850315-5345676 확인 바랍니다.", "KR_FRN", "850315-5345676"),
        ("휴대폰 010-2345-6789로 연락 주세요.", "PHONE_NUMBER", "010-2345-6789"),
        ("해외에서는 +82-10-2345-6789 번호로 걸어 주세요.", "PHONE_NUMBER", "+82-10-2345-6789"),
        ("민원실 02)2110-6543 으로 문의하세요.", "PHONE_NUMBER", "02)2110-6543"),
        ("대표번호 (02) 2110-6543", "PHONE_NUMBER", "(02) 2110-6543"),
        ("회신: 팩스 02-3475-9999", "FAX_NUMBER", "팩스 02-3475-9999"),
        ("자세한 내용은 kim.minsu@corp.co.kr으로 보내 주세요.", "EMAIL_ADDRESS",
         "kim.minsu@corp.co.kr"),
        ("결제 카드 4242-4242-4242-4242로 승인되었습니다.", "CREDIT_CARD", "4242-4242-4242-4242"),
        # a failed Luhn check with a card label is still a card number
        ("카드번호: 5424-1234-5678-9012", "CREDIT_CARD", "5424-1234-5678-9012"),
        ("의심 접속 IP는 121.135.247.182에서 확인됨.", "IP_ADDRESS", "121.135.247.182"),
        ("사업자등록번호: 120-81-47521", "KR_BRN", "120-81-47521"),
        ("법인등록번호 110111-0247381", "KR_CORP_REG", "110111-0247381"),
        ("운전면허번호 11-12-345678-90 (서울)", "KR_DRIVER_LICENSE", "11-12-345678-90"),
        ("여권번호 (미국): 487291637", "KR_PASSPORT", "487291637"),
        ("급여 계좌: 신한은행 110-4872-153649", "KR_BANK_ACCOUNT", "신한은행 110-4872-153649"),
        ("건강보험증 번호: 1-08472916384", "KR_HEALTH_INSURANCE", "1-08472916384"),
        ("차량번호 47하2918 의 운반차량", "KR_VEHICLE_PLATE", "47하2918"),
        ("거주지는 인천광역시 부평구 부평대로 87 입니다.", "ADDRESS",
         "인천광역시 부평구 부평대로 87"),
        ("현장: 경기도 성남시 분당구 정자동 178-3", "ADDRESS", "경기도 성남시 분당구 정자동 178-3"),
        ("본인 (1991년 3월 27일생) 은", "DATE_OF_BIRTH", "1991년 3월 27일"),
        ("지원 자격: 만 18세 이상 34세 이하 청년", "AGE", "만 18세 이상 34세 이하"),
        ("사번 20210847 기준 자료", "KR_EMPLOYEE_ID", "20210847"),
        ("사건번호: 2026가합12849", "KR_COURT_CASE", "2026가합12849"),
        ("접수번호: 민원-2026-32847", "KR_PETITION_ID", "민원-2026-32847"),
        ("처방번호: Rx-2026-05-04827193", "KR_PRESCRIPTION", "Rx-2026-05-04827193"),
        ("필지고유번호: 1168010100107360001", "KR_PNU", "1168010100107360001"),
        ("담당자 이서연 주무관에게", "PERSON", "이서연"),
    ],
)  # fmt: skip
def test_korean_pii_is_found_with_its_exact_span(
    engine: PiiEngine, text: str, entity_type: str, value: str
) -> None:
    assert spans(text, engine.analyze(text)) == [(entity_type, value)]


def test_checksums_raise_confidence(engine: PiiEngine) -> None:
    valid = engine.analyze("번호 880101-1234568")  # passes the pre-2020 checksum
    unchecked = engine.analyze("번호 211005-3123456")  # does not: lower, still reported
    assert valid[0].score == 1.0
    assert [f.entity_type for f in unchecked] == ["KR_RRN"] and unchecked[0].score < 1.0


def test_several_kinds_in_one_sentence(engine: PiiEngine) -> None:
    text = (
        "신청인 김철수(주민등록번호 900101-1234568, 연락처 010-9876-5432, "
        "이메일 cs.kim@naver.com)의 카드 5105-1051-0510-5100 결제 건"
    )
    assert spans(text, engine.analyze(text)) == [
        ("PERSON", "김철수"),
        ("KR_RRN", "900101-1234568"),
        ("PHONE_NUMBER", "010-9876-5432"),
        ("EMAIL_ADDRESS", "cs.kim@naver.com"),
        ("CREDIT_CARD", "5105-1051-0510-5100"),
    ]


def test_clean_korean_paragraph_has_no_findings(engine: PiiEngine) -> None:
    text = (
        "2026년 3월 15일 열린 제12차 운영위원회에서는 2026-0412호 안건으로 상반기 예산 "
        "1,234,567,000원의 집행 계획을 심의하였다. 전년 대비 집행률은 87.5% 로 0.3%p 상승했고, "
        "시스템 가용성 목표 99.95% 와 응답 시간 200ms 이하 기준을 유지하기로 했다. "
        "다음 회의는 4월 2일 오후 2시 본관 301호에서 열리며 자료는 제3-2 별표를 참고한다. "
        "정부는 이번 정책을 전국 지방자치단체와 함께 추진하며 한국 경제에 미칠 영향을 검토한다."
    )
    assert engine.analyze(text) == []


def test_ambiguous_numbers_need_context(engine: PiiEngine) -> None:
    assert engine.analyze("재고 코드 M12345678 항목을 확인") == []
    text = "본인 여권번호는 M12345678 입니다"
    assert spans(text, engine.analyze(text)) == [("KR_PASSPORT", "M12345678")]
    assert engine.analyze("견적 합계 1588-2000 단위") == []
    text = "고객센터 1588-2000 으로 문의"
    assert spans(text, engine.analyze(text)) == [("PHONE_NUMBER", "1588-2000")]
    assert engine.analyze("서울대학교, 연세대학교, 고려대학교 입시 설명회 일정") == []
    text = "연세대학교 행정학과 졸업"
    assert spans(text, engine.analyze(text)) == [("EDUCATION", "연세대학교"), ("MAJOR", "행정학과")]


def test_invalid_and_pseudonym_numbers_are_not_reported(engine: PiiEngine) -> None:
    assert engine.analyze("주문 4242-4242-4242-4241 (Luhn 불일치)") == []
    assert engine.analyze("양식 예시: 연락처 010-0000-0000, 사업자번호 000-00-00000") == []


def test_english_text_runs_english_recognizers(engine: PiiEngine) -> None:
    text = (
        "Contact John at john.doe@example.com, +82-10-2345-6789 or +1 415-555-0132 (Seoul "
        "office), SSN 536-22-8726. Release 4.2 ships on 2024-05-01 to 250 sites."
    )
    assert spans(text, engine.analyze(text)) == [
        ("EMAIL_ADDRESS", "john.doe@example.com"),
        ("PHONE_NUMBER", "+82-10-2345-6789"),
        ("PHONE_NUMBER", "+1 415-555-0132"),
        ("US_SSN", "536-22-8726"),
    ]


def test_every_policy_action(guard: PiiGuard) -> None:
    text = "담당 이서연 주무관 (010-4582-7104), 주민번호 880101-1234568"
    masked = guard.apply(text, Surface.LOGS)
    assert masked.text == "담당 이** 주무관 (010-****-7104), 주민번호 880101-1******"
    assert masked.actions == {
        "PERSON": Action.MASK, "PHONE_NUMBER": Action.MASK, "KR_RRN": Action.MASK,
    }  # fmt: skip
    ingest = guard.apply(text, Surface.INGEST)  # identifiers masked, the rest searchable
    assert ingest.text == "담당 이서연 주무관 (010-4582-7104), 주민번호 880101-1******"
    hr = guard.apply("담당 이서연 주무관 (010-4582-7104)", Surface.INGEST, tenant="dept-hr")
    assert hr.text == "담당 <PERSON> 주무관 (010-4582-7104)"  # redact
    with pytest.raises(PiiBlocked) as blocked:
        guard.apply(text, Surface.INGEST, tenant="dept-hr")
    assert blocked.value.entities == ["KR_RRN"] and "880101" not in blocked.value.detail
    with pytest.raises(PiiBlocked):
        guard.apply(text, Surface.PROMPT, classification="secret")
    assert guard.apply("공지사항입니다.", Surface.INGEST, classification="secret").text == (
        "공지사항입니다."
    )


def test_hash_action_is_salted_and_stable(engine: PiiEngine) -> None:
    config = engine.config.model_copy(update={"rules": [ActionRule(action=Action.HASH)]})
    hashing = PiiGuard(PiiEngine(config), SALT)
    first = hashing.apply("연락처 010-4582-7104", Surface.ANONYMIZE).text
    again = hashing.apply("전화 010-4582-7104 로", Surface.ANONYMIZE).text
    digest = first.removeprefix("연락처 ")
    assert len(digest) == 64 and digest in again
    assert digest != hashlib.sha256(b"010-4582-7104").hexdigest()  # not a bare hash
    other_salt = PiiGuard(hashing.engine, b"other").apply("연락처 010-4582-7104", Surface.ANONYMIZE)
    assert other_salt.text != first


def test_pseudonymize_and_restore_round_trip(guard: PiiGuard) -> None:
    prompt = (
        "김도현 과장(010-4582-7104)과 이서연 주무관에게 보낼 회신 초안을 써 줘. "
        "김도현 과장님 메일은 dh.kim@corp.kr 이야."
    )
    result = guard.apply(prompt, Surface.PROMPT)
    sent = result.text
    for value in ("김도현", "010-4582-7104", "이서연", "dh.kim@corp.kr"):
        assert value not in sent
    assert sent.count("<PERSON_1>") == 2 and "<PERSON_2>" in sent
    assert result.pseudonymizer is not None
    answer = "<PERSON_1> 과장님, <PERSON_2> 주무관님께 <EMAIL_ADDRESS_1>로 회신드립니다."
    restored = result.pseudonymizer.restore(answer)
    assert restored == "김도현 과장님, 이서연 주무관님께 dh.kim@corp.kr로 회신드립니다."
    stream = result.pseudonymizer.stream()
    pieces = [stream.feed(answer[i : i + 3]) for i in range(0, len(answer), 3)]
    assert "".join(pieces) + stream.flush() == restored


def test_mask_for_logs_and_traces(guard: PiiGuard, caplog: pytest.LogCaptureFixture) -> None:
    line = "user 김민서 (sid=20210384) logged in from 121.135.247.182, call 010-4582-7104"
    masked = mask(line)
    for value in ("김민서", "20210384", "121.135.247.182", "4582"):
        assert value not in masked
    trace = {"input": [{"role": "user", "content": "이서연 주무관 010-1234-5678"}], "n": 3}
    assert mask_data(trace) == {
        "input": [{"role": "user", "content": "이** 주무관 010-****-5678"}], "n": 3,
    }  # fmt: skip
    logger = logging.getLogger("llmflow.test.pii")
    logger.addFilter(PiiMaskingFilter())
    with caplog.at_level(logging.INFO, logger="llmflow.test.pii"):
        logger.info(
            "ingest by %s (%s)", "이서연 주무관", "010-1234-5678", extra={"who": "김도현 과장"}
        )
    record = caplog.records[-1]
    assert record.getMessage() == "ingest by 이** 주무관 (010-****-5678)"
    assert record.__dict__["who"] == "김** 과장"


def test_eval_corpus_quality(engine: PiiEngine) -> None:
    """Regression floor on the ko-pii corpus (the note reports the full table)."""
    if not EVAL_CORPUS.is_file():
        pytest.skip(f"{EVAL_CORPUS} is not present")
    samples = load_pii_dataset(EVAL_CORPUS, "ko-pii-spans")
    predictions = [[_pred(f, s.text) for f in engine.analyze(s.text)] for s in samples]
    report = score_predictions(samples, predictions, dict(KO_PII_LABELS))
    entity_set = report.rules["entity-set"].overall
    overlap = report.rules["overlap"].overall
    print(json.dumps({"entity_set_f1": entity_set.f1, "overlap_f1": overlap.f1}))
    assert entity_set.f1 >= 0.93 and entity_set.precision >= 0.93
    assert overlap.f1 >= 0.93


def _pred(f: PiiFinding, text: str) -> object:
    from llmflow.eval.pii import PredSpan

    return PredSpan(f.entity_type, f.start, f.end, text[f.start : f.end], f.score, f.recognizer)


def test_log_masking_covers_records_of_every_module(
    guard: PiiGuard, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    from llmflow.pii.anonymize import install_log_masking

    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    root.addHandler(handler)
    try:
        assert install_log_masking(("",)) >= 1
        assert install_log_masking(("",)) == 0  # idempotent
        logging.getLogger("llmflow.ingest.some.module").warning(
            "failed for 이서연 주무관 010-1234-5678"
        )
        err = capsys.readouterr().err
        assert "이** 주무관 010-****-5678" in err and "이서연" not in err
    finally:
        root.removeHandler(handler)
