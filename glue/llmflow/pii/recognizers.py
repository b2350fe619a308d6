"""Recognizers for what Korean documents contain, as Presidio ``EntityRecognizer`` s.

Everything here is a regular expression plus validation (checksums, date parts) and
context; nothing needs an NLP model, so the analyzer runs on Presidio's ``NoOpNlpEngine``.

Three kinds of rule:

* **format rules** — a value whose shape is distinctive enough on its own (e-mail, RRN,
  vehicle plate, 19-digit parcel number); checksums raise the score, context words nearby
  raise it further;
* **labelled rules** — a value that is only personal because of the field it sits in
  ("사번 20210847", "건강보험증 번호: 1-08472916384", "여권번호 (미국): 487291637"). The
  label is matched, the value is reported. A labelled value is accepted even when its
  checksum fails: the label is stronger evidence than the check digit (test data, numbers
  typed by hand, RRNs issued since October 2020 that have no checksum);
* **names and addresses** — grammars with evidence, see :mod:`llmflow.pii.names`.

Korean is agglutinative ("카드번호는", "010-1234-5678로"), so boundaries are written with
look-arounds on digits and Hangul instead of ``\\b``.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from presidio_analyzer import AnalysisExplanation, EntityRecognizer, Pattern, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import (
    KrBrnRecognizer,
    KrDriverLicenseRecognizer,
    KrFrnRecognizer,
    KrPassportRecognizer,
    KrRrnRecognizer,
)

from llmflow.pii import names as korean_names
from llmflow.pii.validators import (
    Validator,
    birth_date_valid,
    corp_reg_valid,
    ipv4_valid,
    luhn_valid,
    pnu_valid,
)


# --------------------------------------------------------------------------- rule tables
@dataclass(frozen=True, slots=True)
class Rule:
    """One regular expression; the named group ``v`` (if any) is the reported span."""

    regex: str
    score: float
    name: str = ""
    triggers: tuple[str, ...] = ()
    """The rule runs only on texts containing one of these (a substring test costs
    microseconds, a regex scan milliseconds); empty = always."""
    languages: tuple[str, ...] = ()
    """Languages whose recognizer set includes this rule; empty = all."""


@dataclass(frozen=True, slots=True)
class EntitySpec:
    """Everything one recognizer needs: patterns, validation and context words."""

    entity: str
    rules: tuple[Rule, ...]
    context: tuple[str, ...] = ()
    validator: Validator | None = None
    description: str = ""
    labels: tuple[str, ...] = field(default=())
    """Field labels: ``<label> [(…)] [:] <value>`` is an extra rule at ``label_score``."""
    label_value: str = ""
    label_score: float = 0.85


_D = r"(?<![\d-])"  # digit-run start
_E = r"(?![\d-])"  # digit-run end
_PHONE_AREA = r"(?:01[016789]|02|0[3-6][1-5]|070|080|050[2-8])"
_PHONE_NUMBER = r"\d{3,4}[-. ]\d{4}(?![\d-])"
_PHONE_KR = rf"(?<![\d.+-])(?:\(?{_PHONE_AREA}\)\s?|{_PHONE_AREA}[-. ]){_PHONE_NUMBER}"
_BANKS = (
    "KB국민은행|국민은행|국민|신한은행|신한|우리은행|우리|하나은행|하나|NH농협은행|농협은행|농협|"
    "IBK기업은행|기업은행|기업|SC제일은행|제일은행|씨티은행|카카오뱅크|토스뱅크|케이뱅크|"
    "새마을금고|신협|우체국|수협은행|수협|부산은행|대구은행|iM뱅크|경남은행|광주은행|전북은행|"
    "제주은행|KDB산업은행|산업은행"
)
_BANK_TRIGGERS = (
    "은행",
    "국민",
    "신한",
    "우리",
    "하나",
    "농협",
    "기업",
    "뱅크",
    "금고",
    "신협",
    "우체국",
    "수협",
    "iM",
)
_FAX_TRIGGERS = ("팩스", "FAX", "Fax", "fax")
_SIDO = (
    "서울특별시|서울시|서울|부산광역시|부산시|부산|대구광역시|대구시|대구|인천광역시|인천시|인천|"
    "광주광역시|광주시|대전광역시|대전시|대전|울산광역시|울산시|울산|세종특별자치시|세종시|"
    "경기도|강원특별자치도|강원도|충청북도|충북|충청남도|충남|전북특별자치도|전라북도|전북|"
    "전라남도|전남|경상북도|경북|경상남도|경남|제주특별자치도|제주도|제주"
)
_SIGUNGU = r"[가-힣]{1,4}(?:시|군|구)"
_EMD = r"[가-힣]{1,5}\d{0,2}(?:읍|면|동|리|가)"
_ROAD = r"[가-힣A-Za-z0-9]{1,12}(?:로|길)(?:\s?\d{1,4}(?:번?길))?"
_BUNJI = r"(?:산\s?)?\d{1,5}(?:-\d{1,5})?(?:번지)?"
_DETAIL = (
    r"(?:,?\s?(?:[가-힣A-Za-z0-9]{2,20}\s)?\d{1,4}동\s?\d{1,5}호"
    r"|,\s?\d{1,3}층(?:\s?\d{1,5}호)?"
    r"|,\s?[가-힣A-Za-z0-9]{2,20}\s\d{1,3}층"
    r"|\s?\([가-힣A-Za-z0-9 ]{2,20}\s\d{1,4}동\s\d{1,5}호\)"
    r"|,?\s[가-힣A-Za-z0-9]{2,20}\s\d{1,5}호"
    r"|\s[가-힣A-Za-z]{2,12}(?:아파트|빌딩|타워|센터|단지)(?:\s\d{1,4}동)?(?:\s?\d{1,5}호)?"
    r"|\s[가-힣A-Za-z]{2,12}\s\d{1,3}단지)"
)
_ADDRESS_FULL = (
    rf"(?:(?:{_SIDO})\s)?(?:{_SIGUNGU}\s){{1,2}}(?:{_ROAD}\s?{_BUNJI}|{_EMD}(?:\s{_BUNJI})?"
    rf"(?:\s{_EMD}(?:\s{_BUNJI})?)?)(?:{_DETAIL})?"
)
_ADDRESS_TRIGGERS = (
    "시 ",
    "군 ",
    "구 ",
    "도 ",
    "서울",
    "부산",
    "대구",
    "인천",
    "광주",
    "대전",
    "울산",
    "세종",
    "제주",
)
_HANGUL_END = r"(?![가-힣])"
_VALUE_END = r"(?=[\s,.)\]}\"'/;:]|$|[은는이가을를의에와과로도])"

SPECS: tuple[EntitySpec, ...] = (
    EntitySpec(
        "PHONE_NUMBER",
        (
            Rule(_PHONE_KR, 0.5, "KR phone"),
            Rule(r"(?<![\d+])\+82[-. ]?(?:\(0\))?(?:1[016789]|2|[3-6][1-5]|70)[-. ]?"
                 r"\d{3,4}[-. ]?\d{4}(?!\d)", 0.6, "KR phone +82", ("+82",)),
            Rule(r"(?<!\d)01[016789]\d{7,8}(?!\d)", 0.4, "KR mobile, no separators", ("01",)),
            Rule(r"(?<![\d-])1(?:5[4-9]|6\d|8\d)\d-\d{4}(?![\d-])", 0.3, "representative", ("-",)),
            Rule(r"(?<![\w+])\+(?!82)(?=(?:[-. ()]{0,2}\d){9})[1-9]\d{0,2}[-. ]?"
                 r"(?:\(\d{1,4}\)|\d{1,4})(?:[-. ]?\d{2,4}){2,4}(?![\d-])", 0.5,
                 "international", ("+",)),
            Rule(r"(?<![\d-])(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[-. ])[2-9]\d{2}[-.]\d{4}(?![\d-])",
                 0.3, "NANP", (), ("en",)),
        ),
        context=("전화", "연락처", "휴대폰", "핸드폰", "휴대전화", "직통", "대표번호", "센터",
                 "내선", "핫라인", "상담", "문의", "tel", "phone", "mobile", "call"),
        description="Korean mobile, landline, representative and international numbers",
    ),
    EntitySpec(
        "FAX_NUMBER",
        (
            Rule(rf"(?:팩스(?:번호)?|FAX|Fax|fax)\s?:?\s?{_PHONE_KR}", 0.9,
                 "fax, label first", _FAX_TRIGGERS),
            Rule(rf"{_PHONE_KR}\s?\((?:FAX|Fax|fax|팩스)\)", 0.9,
                 "fax, label after", _FAX_TRIGGERS),
        ),
        description="fax numbers with their label (the label is part of the span)",
    ),
    EntitySpec(
        "EMAIL_ADDRESS",
        (
            # ASCII only: Presidio's ``\w`` would take "메일은kim@corp.co.kr입니다" whole.
            Rule(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9]"
                 r"(?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
                 r"\.[A-Za-z]{2,24}(?![A-Za-z0-9-]|\.[A-Za-z0-9])", 0.8, "e-mail", ("@",)),
        ),
        description="e-mail addresses",
    ),
    EntitySpec(
        "CREDIT_CARD",
        (Rule(r"(?<![\d-])(?:4\d{3}|5[0-5]\d{2}|6\d{3}|3\d{3})(?:[- ]?\d{3,4}){2}[- ]?\d{3,5}"
              r"(?![\d-])", 0.3, "card"),),
        context=("카드", "신용카드", "체크카드", "법인카드", "card", "visa", "mastercard", "amex"),
        validator=luhn_valid,
        labels=("카드번호", "카드 번호", "신용카드", "체크카드", "법인카드", "카드", "card"),
        label_value=r"\d{4}[- ]?\d{4}[- ]?\d{4}[- ]?\d{3,4}",
        description="card numbers (Luhn)",
    ),
    EntitySpec(
        "KR_BANK_ACCOUNT",
        (
            Rule(rf"(?:{_BANKS})\s?(?:계좌\s?(?:번호)?\s?:?\s?)?{_D}\d{{2,6}}-\d{{2,6}}-\d{{2,7}}"
                 rf"(?:-\d{{1,3}})?{_E}", 0.85, "bank + account", _BANK_TRIGGERS),
            Rule(rf"{_D}\d{{3,6}}-\d{{2,6}}-\d{{4,7}}(?:-\d{{1,3}})?{_E}(?=\s?\((?:{_BANKS})\))",
                 0.85, "account (bank)", _BANK_TRIGGERS),
        ),
        labels=("계좌번호", "계좌 번호", "입금계좌", "입금 계좌", "송금 계좌", "지급 계좌",
                "납부 계좌", "계좌"),
        label_value=rf"{_D}\d{{2,6}}-\d{{2,6}}-\d{{2,7}}(?:-\d{{1,3}})?{_E}",
        description="bank accounts: bank name next to the number, or an account label",
    ),
    EntitySpec(
        "KR_RRN",
        (),  # Presidio's KrRrnRecognizer, see engine
        context=("주민등록번호", "주민번호", "주민등록", "생년월일", "resident registration",
                 "rrn"),
        labels=("주민등록번호", "주민번호"),
        label_value=r"\d{6}-?[0-49]\d{6}(?!\d)",
        description="주민등록번호 (checksum raises, a failed one does not reject)",
    ),
    EntitySpec(
        "KR_FRN",
        (),  # Presidio's KrFrnRecognizer
        context=("외국인등록번호", "외국인등록", "외국인", "등록번호", "foreigner"),
        labels=("외국인등록번호", "외국인 등록번호"),
        label_value=r"\d{6}-?[5-8]\d{6}(?!\d)",
        description="외국인등록번호",
    ),
    EntitySpec(
        "KR_BRN",
        (),  # Presidio's KrBrnRecognizer with the dashed layout only, see build_recognizers
        context=("사업자등록번호", "사업자번호", "사업자 등록번호", "사업자", "법인", "business"),
        labels=("사업자등록번호", "사업자번호", "사업자 등록번호", "사업자"),
        label_value=r"\(?\d{3}-\d{2}-\d{5}(?![\d-])",
        description="사업자등록번호 (check digit)",
    ),
    EntitySpec(
        "KR_CORP_REG",
        (Rule(r"(?<![\d-])\d{6}-0\d{6}(?![\d-])", 0.2, "법인등록번호", ("-",)),),
        context=("법인등록번호", "법인번호", "등기번호"),
        validator=corp_reg_valid,
        labels=("법인등록번호", "법인번호"),
        label_value=r"\d{6}-\d{7}(?![\d-])",
        description="법인등록번호 (check digit)",
    ),
    EntitySpec(
        "KR_PASSPORT",
        (),  # Presidio's KrPassportRecognizer
        context=("여권", "여권번호", "passport"),
        labels=("여권번호", "여권 번호", "passport no", "passport"),
        label_value=r"[A-Z]{0,2}\d{7,9}(?![\dA-Za-z])",
        description="passport numbers (Korean formats alone; any country with a label)",
    ),
    EntitySpec(
        "KR_DRIVER_LICENSE",
        (),  # Presidio's KrDriverLicenseRecognizer (region codes), dashed layout only
        context=("운전면허", "면허번호", "면허", "driver"),
        labels=("운전면허번호", "면허번호", "운전면허"),
        label_value=r"\d{2}-\d{2}-\d{6}-\d{2}(?![\d-])",
        description="운전면허번호",
    ),
    EntitySpec(
        "KR_HEALTH_INSURANCE",
        (),
        labels=("건강보험증 번호", "건강보험증번호", "건강보험 번호", "건강보험번호", "보험증 번호",
                "보험증번호", "건보 번호"),
        label_value=r"(?:\d-)?\d{10,11}(?![\d-])",
        description="건강보험증 번호 (with its label)",
    ),
    EntitySpec(
        "KR_VEHICLE_PLATE",
        (Rule(r"(?<![\d가-힣])\d{2,3}\s?[가나다라마거너더러머버서어저고노도로모보소오조구누두루무"
              r"부수우주바사아자배하허호]\s?\d{4}(?!\d)", 0.6, "plate"),),
        context=("차량", "차량번호", "번호판", "운전", "주차"),
        description="vehicle plates (47하2918)",
    ),
    EntitySpec(
        "IP_ADDRESS",
        (Rule(r"(?<![\d.])(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|"
              r"[1-9]?\d)){3}(?![\d.]\d|\.\d)", 0.6, "IPv4", (".",)),),
        context=("ip", "아이피", "접속", "서버", "server", "host", "dns"),
        validator=ipv4_valid,
        description="IPv4 addresses",
    ),
    EntitySpec(
        "URL",
        (Rule(r"(?:https?|ftp)://[^\s<>\"'()\[\]{}가-힣]+[^\s<>\"'()\[\]{}가-힣.,;:!?]", 0.6,
              "URL", ("://",)),),
        description="web addresses (they can name a person's page)",
    ),
    EntitySpec(
        "DATE_OF_BIRTH",
        (
            Rule(r"(?<!\d)(?:19|20)?\d{2}년\s?\d{1,2}월\s?\d{1,2}일(?=\s?생)", 0.85,
                 "date + 생", ("년",)),
            Rule(r"(?<!\d)(?:19|20)?\d{2}년생", 0.85, "year + 년생", ("년생",)),
            Rule(r"(?<![\d.])(?:19|20)\d{2}[.-]\s?\d{1,2}[.-]\s?\d{1,2}\.?(?=\s?생)", 0.85,
                 "dotted date + 생", ("생",)),
        ),
        labels=("생년월일", "출생일", "생일", "date of birth", "DOB"),
        label_value=r"(?:(?:19|20)?\d{2}년\s?\d{1,2}월\s?\d{1,2}일|(?:19|20)\d{2}[.-]\s?\d{1,2}"
        r"[.-]\s?\d{1,2}\.?)",
        validator=birth_date_valid,
        description="dates of birth",
    ),
    EntitySpec(
        "AGE",
        (
            Rule(r"(?<![\d가-힣])(?:만\s?)?\d{1,3}\s?세(?:\s?(?:이상|이하|미만|초과))?"
                 r"(?:\s?(?:~|-|부터)?\s?(?:만\s?)?\d{1,3}\s?세(?:\s?(?:이상|이하|미만|초과))?)?"
                 r"(?!대|금|무|율|출|입자|수|기|계)", 0.6, "N세", ("세",)),
            Rule(r"(?<![\d가-힣])\d{1,2}\s?살(?!균|충|림|해|인)", 0.6, "N살", ("살",)),
            Rule(r"(?<![\d제])[1-9]0대(?:\s?(?:초반|중반|후반))?(?!\s?(?:기업|그룹|과제|국회|"
                 r"대통령|총선|도시|뉴스|트렌드|분야|품목|강국|[0-9]))", 0.6, "N0대", ("0대",)),
            Rule(r"(?<![가-힣])(?:환갑|칠순|팔순|고희|미수|백수)(?![가-힣])", 0.5, "환갑",
                 ("환갑", "칠순", "팔순", "고희", "미수", "백수")),
        ),
        description="ages (만 29세, 60대 후반, 65세 이상)",
    ),
    EntitySpec(
        "KR_EMPLOYEE_ID",
        (),
        labels=("사번", "사원번호", "직원번호", "학번", "군번", "교번", "sid", "\"id\"",
                "employee id", "employee_id"),
        label_value=r"\d{2}-?\d{5,8}(?![\d-])",
        description="employee, student and service numbers (with their label)",
    ),
    EntitySpec(
        "KR_DOC_ID",
        (Rule(r"(?<![가-힣\w])(?:[가-힣·]+\s){0,2}[가-힣·]*(?:부|처|청|과|실|국|원|소|관|센터|팀|"
              r"위원회|세관|보건소)(?:-[가-힣·]+)?\s?[-—]\s?20\d{2}-(?:[A-Z]+-)?\d{4,6}(?!\d)",
              0.6, "organisation-year-serial", ("-20", "- 20", "—20", "— 20")),),
        description="document numbers of an organisation (환경부 폐기물처리과-2026-04582)",
    ),
    EntitySpec(
        "KR_PETITION_ID",
        (Rule(r"(?<![가-힣\w])(?:민원|정보공개|청구|행정심판|이의신청|고충민원|진정)-20\d{2}-"
              r"\d{4,6}(?!\d)", 0.8, "petition", ("-20",)),),
        labels=("접수번호",),
        label_value=r"[가-힣]{2,6}-20\d{2}-\d{4,6}(?!\d)",
        description="petition and request numbers (민원-2026-32847)",
    ),
    EntitySpec(
        "KR_COURT_CASE",
        (Rule(r"(?<![\d\w])20\d{2}(?:[가-힣]{1,4}(?<![년월일도])|-[가-힣]{2,4}-|[가-힣]{2,6}-)"
              r"\d{3,6}(?!\d)", 0.5, "case number", ("20",)),),
        context=("사건번호", "사건", "판정", "소송", "심판"),
        labels=("사건번호", "사건 번호"),
        label_value=r"20\d{2}[-가-힣]{1,8}\d{3,6}(?!\d)",
        description="court and tribunal case numbers (2026가합12849)",
    ),
    EntitySpec(
        "KR_PNU",
        (Rule(r"(?<!\d)\d{19}(?!\d)", 0.5, "PNU"),),
        context=("고유번호", "pnu", "필지", "지번"),
        validator=pnu_valid,
        description="필지고유번호 (19-digit parcel numbers identify an owner's land)",
    ),
    EntitySpec(
        "KR_PRESCRIPTION",
        (Rule(r"(?<![\w-])Rx-20\d{2}-\d{2}-\d{6,10}(?!\d)", 0.8, "prescription", ("Rx-",)),),
        labels=("처방번호", "교부번호", "처방전 번호"),
        label_value=r"[A-Za-z]{0,2}-?[\d-]{8,20}\d",
        description="prescription numbers",
    ),
    EntitySpec(
        "KR_EDI_DRUG",
        (Rule(r"(?<![\w-])KD-\d{6}-\d{3}(?!\d)", 0.6, "drug code", ("KD-",)),),
        labels=("약품코드", "EDI 코드", "EDI코드"),
        label_value=r"[A-Z]{0,2}-?\d{6}-?\d{3}(?!\d)",
        description="drug codes on a patient's prescription",
    ),
    EntitySpec(
        "POSTAL_CODE",
        (),
        labels=("우편번호",),
        label_value=r"\d{5}(?!\d)",
        description="postal codes (with their label)",
    ),
    EntitySpec(
        "HEIGHT",
        (Rule(r"(?:키|신장)\s?:?\s?\d{2,3}(?:\.\d)?\s?cm", 0.8, "height", ("cm",)),),
        description="body height",
    ),
    EntitySpec(
        "WEIGHT",
        (
            Rule(r"(?:체중|몸무게)\s?:?\s?\d{1,3}(?:\.\d)?\s?kg", 0.8, "weight", ("kg",)),
            Rule(r"(?<=출생체중 )\d(?:\.\d)?\s?kg", 0.8, "birth weight", ("출생체중",)),
        ),
        description="body weight",
    ),
    EntitySpec(
        "EDUCATION",
        (
            Rule(rf"(?<![가-힣])[가-힣]{{2,10}}(?:대학교|여자대학교|교육대학교){_VALUE_END}", 0.35,
                 "university", ("대학교",)),
            Rule(r"(?<![가-힣A-Za-z])(?:서울대|연세대|고려대|서강대|성균관대|한양대|이화여대|중앙대|"
                 r"경희대|한국외대|시립대|건국대|동국대|홍익대|숙명여대|국민대|숭실대|세종대|단국대|"
                 r"부산대|경북대|전남대|충남대|충북대|전북대|강원대|제주대|인하대|아주대|"
                 r"KAIST|POSTECH|UNIST|GIST|DGIST|카이스트|포스텍)(?![가-힣A-Za-z])", 0.35,
                 "university, short", ("대", "IST", "POSTECH", "카이스트", "포스텍")),
            Rule(rf"(?<![가-힣])[가-힣]{{2,8}}(?:초등학교|중학교|고등학교){_VALUE_END}", 0.35,
                 "school", ("학교",)),
            Rule(r"(?<![가-힣])(?:자연과학|공과|경영|인문|사회과학|의과|법과|사범|예술|음악|미술|약학|"
                 r"간호|생활과학|수의과|농업생명과학|정보통신|소프트웨어)대학(?![가-힣])", 0.6,
                 "college", ("대학",)),
        ),
        # A university is personal when it is someone's: a name in a heading or a list of
        # universities is not. Context words tie it to a person's record.
        context=("학과", "학부", "졸업", "재학", "학력", "출신", "전공", "교수", "입사", "학번",
                 "수학", "대학원", "단과대학", "휴학", "편입"),
        description="schools and universities attended",
    ),
    EntitySpec(
        "MAJOR",
        (Rule(rf"(?<![가-힣])[가-힣]{{2,10}}(?:학과|학부){_VALUE_END}", 0.6, "department",
              ("학과", "학부")),),
        description="majors (행정학과)",
    ),
    EntitySpec(
        "ADDRESS",
        (
            Rule(rf"(?<![가-힣]){_ADDRESS_FULL}{_HANGUL_END}", 0.7, "address", _ADDRESS_TRIGGERS),
            Rule(rf"(?<![가-힣])(?:{_SIDO})\s(?:{_SIGUNGU}\s?){{1,2}}{_HANGUL_END}", 0.55,
                 "province + city", _ADDRESS_TRIGGERS),
            Rule(rf"(?<![가-힣])(?:{_SIDO})\s{_EMD}{_HANGUL_END}", 0.55,
                 "province + town", _ADDRESS_TRIGGERS),
        ),
        context=("주소", "거주", "거주지", "소재지", "주거지", "체류지", "현장", "위치"),
        labels=("주소", "거주지", "소재지", "주거지", "체류지", "본점", "사무실"),
        label_value=r"[가-힣][가-힣0-9 ,.\-()]{3,60}?(?=\n|$|\)\s|\s\(|[.;]\s)",
        label_score=0.5,
        description="road-name and lot-number addresses",
    ),
)  # fmt: skip

ENTITY_DESCRIPTIONS = {spec.entity: spec.description for spec in SPECS} | {
    "PERSON": "Korean person names with title, label or personal-detail context",
    "POSITION": "job titles next to a detected name (off by default: a title alone rarely "
    "identifies anyone; enable in policy.yaml to redact org-chart positions)",
}


# --------------------------------------------------------------------------- recognizers
def _label_rule(spec: EntitySpec) -> Rule | None:
    if not spec.labels:
        return None
    labels = "|".join(re.escape(label) for label in sorted(spec.labels, key=len, reverse=True))
    # "<label> [(qualifier)] [:] [(]<value>": 여권번호 (미국): 487291637 / 사번 20210847
    return Rule(
        rf"(?i:{labels})(?:\s?\([^)\n]{{1,12}}\))?\s*[:：=]?\s*\"?\(?(?P<v>{spec.label_value})",
        spec.label_score,
        "labelled",
        triggers=tuple(label.lower() for label in spec.labels),
    )


def build_recognizers(
    language: str, enabled: Callable[[str], bool] = lambda _entity: True
) -> list[EntityRecognizer]:
    """Every recognizer for one language: Presidio's Korean ones plus ours."""
    contexts = {spec.entity: list(spec.context) for spec in SPECS}
    recognizers: list[EntityRecognizer] = []
    if enabled("KR_RRN"):
        recognizers.append(
            KrRrnRecognizer(
                supported_language=language,
                context=KrRrnRecognizer.CONTEXT + contexts["KR_RRN"],
            )
        )
    if enabled("KR_FRN"):
        recognizers.append(
            KrFrnRecognizer(
                supported_language=language,
                context=KrFrnRecognizer.CONTEXT + contexts["KR_FRN"],
            )
        )
    # Presidio scores a match 1.0 once ``validate_result`` passes, and for BRNs (a 1-in-10
    # check digit) and driver's licences (region code only) its undashed patterns would make
    # any 10- or 12-digit run a certain hit ("KEPCO-2026-04827193"): printed layouts only.
    if enabled("KR_BRN"):
        recognizers.append(
            KrBrnRecognizer(
                patterns=[Pattern("BRN, dashed", r"(?<![\d-])\d{3}-\d{2}-\d{5}(?![\d-])", 0.1)],
                supported_language=language,
                context=KrBrnRecognizer.CONTEXT + contexts["KR_BRN"],
            )
        )
    if enabled("KR_DRIVER_LICENSE"):
        recognizers.append(
            KrDriverLicenseRecognizer(
                patterns=[Pattern("Driver licence, dashed",
                                  r"(?<![\d-])\d{2}-\d{2}-\d{6}-\d{2}(?![\d-])", 0.4)],
                supported_language=language,
                context=KrDriverLicenseRecognizer.CONTEXT + contexts["KR_DRIVER_LICENSE"],
            )
        )  # fmt: skip
    if enabled("KR_PASSPORT"):
        recognizers.append(
            KrPassportRecognizer(
                patterns=[Pattern(p.name, p.regex, 0.3) for p in KrPassportRecognizer.PATTERNS],
                supported_language=language,
                context=KrPassportRecognizer.CONTEXT + contexts["KR_PASSPORT"],
            )
        )
    for spec in SPECS:
        if not enabled(spec.entity):
            continue
        rules = list(spec.rules)
        label_rule = _label_rule(spec)
        if label_rule is not None:
            rules.append(label_rule)
        if rules:
            recognizers.append(KoreanRegexRecognizer(spec, rules, language))
    if enabled("POSITION"):
        recognizers.append(KoreanPositionRecognizer(language))
    if enabled("PERSON"):
        recognizers.append(KoreanNameRecognizer(language))
    return recognizers


def _result(
    recognizer: EntityRecognizer, entity: str, start: int, end: int, score: float, rule: str
) -> RecognizerResult:
    name = str(getattr(recognizer, "name", ""))
    return RecognizerResult(
        entity_type=entity,
        start=start,
        end=end,
        score=score,
        analysis_explanation=AnalysisExplanation(
            recognizer=name, original_score=score, pattern_name=rule
        ),
        recognition_metadata={
            RecognizerResult.RECOGNIZER_NAME_KEY: name,
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: recognizer.id,
        },
    )


_local = threading.local()


def _lowered(text: str) -> str:
    """``text.lower()``, computed once per text for all recognizers of one analysis."""
    cached: tuple[str, str] | None = getattr(_local, "lowered", None)
    if cached is None or cached[0] is not text:
        cached = (text, text.lower())
        _local.lowered = cached
    return cached[1]


def _contains_any(text: str, needles: tuple[str, ...]) -> bool:
    for needle in needles:  # noqa: SIM110  (a plain loop: no generator frame per call)
        if needle in text:
            return True
    return False


class KoreanRegexRecognizer(EntityRecognizer):
    """Regex rules of one entity type; a named group ``v`` narrows the reported span."""

    def __init__(self, spec: EntitySpec, rules: Sequence[Rule], language: str) -> None:
        self.spec = spec
        self.rules = [
            (re.compile(rule.regex), rule)
            for rule in rules
            if not rule.languages or language in rule.languages
        ]
        super().__init__(
            supported_entities=[spec.entity],
            name=f"Kr{spec.entity.title().replace('_', '')}Recognizer",
            supported_language=language,
            context=list(spec.context),
        )

    def load(self) -> None:
        """Nothing to load: the patterns are compiled in ``__init__``."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        validator = self.spec.validator
        for pattern, rule in self.rules:
            labelled = rule.name == "labelled"
            # labels match case-insensitively
            if rule.triggers and not _contains_any(
                _lowered(text) if labelled else text, rule.triggers
            ):
                continue
            for match in pattern.finditer(text):
                group = "v" if "v" in pattern.groupindex else 0
                start, end = match.span(group)
                value = text[start:end].rstrip(" ,")
                end = start + len(value)
                if end <= start:
                    continue
                score = rule.score
                if validator is not None:
                    verdict = validator(value)
                    if verdict is False and not labelled:
                        continue
                    if verdict is True:
                        score = 1.0
                results.append(_result(self, self.spec.entity, start, end, score, rule.name))
        return results


class _GrammarRecognizer(EntityRecognizer):
    """A recognizer of one entity type whose grammar is compiled at import (no patterns to
    load, no context words: the grammar weighs its own evidence)."""

    ENTITY = ""
    NAME = ""

    def __init__(self, language: str) -> None:
        super().__init__(
            supported_entities=[self.ENTITY],
            name=self.NAME,
            supported_language=language,
            context=[],
        )

    def load(self) -> None:
        """Nothing to load: the grammar is compiled at import."""


class KoreanNameRecognizer(_GrammarRecognizer):
    """Person names from :mod:`llmflow.pii.names`, propagated within the text."""

    ENTITY, NAME = "PERSON", "KrPersonNameRecognizer"
    propagate_score = 0.6

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        found = korean_names.find_names(text)
        confident = {text[s:e] for s, e, score, _ in found if score >= 0.5}
        results = [_result(self, "PERSON", s, e, score, rule) for s, e, score, rule in found]
        seen = {(s, e) for s, e, _, _ in found}
        for start, end in korean_names.propagate(text, confident):
            if (start, end) not in seen:
                results.append(
                    _result(self, "PERSON", start, end, self.propagate_score, "same name")
                )
        return results


class KoreanPositionRecognizer(_GrammarRecognizer):
    """Job titles right before or after a name that has evidence (신임 사장 박서영, 함장 정민기
    대령). Off by default in policy.yaml."""

    ENTITY, NAME = "POSITION", "KrPositionRecognizer"

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        spans = korean_names.find_positions(text, korean_names.find_names(text))
        return [_result(self, "POSITION", s, e, 0.6, "title by a name") for s, e in spans]


def describe() -> dict[str, Any]:
    """Entity types and what they cover, for ``--help`` and the API docs."""
    return dict(sorted(ENTITY_DESCRIPTIONS.items()))
