"""Korean person names without an NER model: surname + given name, accepted on evidence.

A Korean name is a one- or two-syllable surname and a one- or two-syllable given name, and
almost every Hangul word of three syllables starts with a syllable that is also a surname
("정리", "이번", "한국"). So a candidate is accepted only with evidence around it, and the
score says how strong that evidence is:

* a title or honorific right after it (김도현 사무관, 박지원 차장님, 이수민 학생),
* a field label before it (성명: 강민서, 신청인: 윤서연, 담당 박지원),
* a parenthesis of personal details after it (정현우 (1962년 …), 최지훈 (660312-…)),
* a particle after it when both given-name syllables are common in names (이정훈은 …).

A name accepted once is a name everywhere in the same text (see :func:`propagate`).
"""

from __future__ import annotations

import re

# The most frequent surnames (about 98% of the population); rarer ones cost precision.
SINGLE_SURNAMES = (
    "김이박최정강조윤장임한오서신권황안송류유전홍고문양손배백허남심노하곽성차주우구민진나지"
    "엄채원천방공현함변염여추도소석선설마길연위표명기반라왕금옥육인맹제모탁국어은편용예경봉"
)
DOUBLE_SURNAMES = ("남궁", "황보", "제갈", "선우", "독고", "사공", "서문")

# Syllables frequent in given names; a candidate whose given name uses others is a word.
GIVEN_SYLLABLES = frozenset(
    "민서지현준우진수영하은윤도예원훈호혜정연경기규린늘솔재동석성철희숙자순미선주아유태"
    "승찬혁환용상병채나다라보빈슬소율이인한효건결권근길남대란래량렬령례로록룡루류륜률리림"
    "명모문별새샘설세송시신안애양엽옥완왕요욱운웅월위융을익일임종중찬창천철청초충탁태택"
    "필학해헌혁형혜홍화환황회후휘흠희바람람름름봄빛솜온움"
)
# Last syllables that make a word an office, a place or a body, not a given name.
NOT_LAST = frozenset("과구도시부군청국처팀실당층로길동읍면리")

# Titles and honorifics that follow a name (longest first inside the regex).
TITLES = (
    "님", "씨", "군", "양", "옹", "여사", "선생", "선생님", "교수", "교수님", "박사", "강사",
    "학생", "원생", "학부모", "어르신", "환자", "보호자", "고객", "고객님", "회원", "회원님",
    "사원", "주임", "대리", "과장", "차장", "부장", "실장", "팀장", "국장", "본부장", "센터장",
    "소장", "원장", "처장", "청장", "관장", "단장", "반장", "지점장", "이사", "상무", "전무",
    "부사장", "사장", "회장", "부회장", "대표", "대표님", "대표이사", "감사", "위원", "위원장",
    "의원", "의원님", "장관", "차관", "시장", "군수", "구청장", "도지사", "비서관", "비서실장",
    "주무관", "사무관", "서기관", "부이사관", "이사관", "행정관", "연구관", "연구원", "연구사",
    "책임", "선임", "수석", "전임", "매니저", "변호사", "검사", "부장검사", "판사", "재판장",
    "법무사", "세무사", "회계사", "노무사", "변리사", "의사", "전문의", "전공의", "교수님",
    "간호사", "약사", "복지사", "사회복지사", "상담사", "상담원", "직원", "기자", "특파원",
    "경위", "경감", "경정", "경사", "순경", "경장", "대령", "중령", "소령", "대위", "중위",
    "소위", "병장", "상병", "일병", "이병", "하사", "중사", "상사", "원사", "함장", "목사",
    "신부", "스님", "작가", "감독", "코치", "선수", "담임", "조교", "총무", "간사", "주무",
    "소방위", "소방장", "소방관", "수사관", "관세사", "감사관", "감사실장", "공중보건의",
    "청소년지도사", "사감", "주임", "위원님", "관장님", "팀원", "인턴", "영업본부장",
    "운영본부장", "부장님", "과장님", "차장님", "실장님", "팀장님", "선배", "후배", "동기",
)  # fmt: skip
# Field labels that introduce a name.
LABELS = (
    "성명", "이름", "성함", "작성", "작성자", "작성인", "응대", "담당", "담당자", "담당의",
    "담당 교사", "담당 검사", "담당 상담사", "담당 사회복지사", "신청인", "신청자", "신고자",
    "대표자", "대표이사", "대표", "원고", "피고", "피고인", "피의자", "피해자", "청구인",
    "환자", "보호자", "고객명", "고객", "회원", "임차인", "임대인", "매도인", "매수인",
    "근로자", "응시자", "선주", "산모", "운전자", "소유자", "차량 소유주", "농지 소유자",
    "세대주", "가구주", "위원장", "위원", "점검자", "상담사", "상담자", "내담자", "당직의",
    "처방 의사", "인솔 교사", "지도교수", "보증인", "한국 내 보증인", "배우자", "자녀",
    "장남", "차남", "장녀", "차녀", "부친", "모친", "본인", "등록자", "수취인", "예금주",
    "발신", "발신인", "수신", "수신인", "참조", "결재", "기안자", "검토자", "승인자",
    "출동대장", "소송대리인", "공동변호인", "변호인", "재판장 판사", "주심 판사", "판사",
    "의원명", "회원명", "예매자", "의뢰 의사", "담당 의사", "담당 수사관", "감사관", "검사",
    "사감", "간사", "학부모", "입회", "name", "user", "username", "employee", "customer",
    "patient",
)  # fmt: skip

_TITLE = "(?:" + "|".join(sorted(set(TITLES), key=len, reverse=True)) + ")"
_LABEL = "(?:" + "|".join(sorted(set(LABELS), key=len, reverse=True)) + ")"
_PARTICLE = "(?:은|는|이가|이는|이랑|이와|이의|이에게|이|가|과|와|의|에게|께서|께|도|를|을|랑|한테)"
_TAIL = (
    rf"(?:{_PARTICLE}|이며|이고|이다|입니다|이었|이신|였|께|님|으로|에게|과의|와의|이라는|인데|"
    r"이라고|라고)"
)

# Evidence, checked around each candidate (the text before it, the word's rest, the text
# after it). Each check is an anchored match on a few characters, not a scan of the text.
_SUFFIX = re.compile(rf"(?P<title>{_TITLE})?{_TAIL}?")
_TITLE_NEXT = re.compile(rf"\s(?:{_TITLE})(?=[^가-힣]|$|{_TAIL})")
_LABEL_COLON_BEFORE = re.compile(rf"(?:^|[^가-힣]){_LABEL}\"?\s*[:：=]\s*\"?\s*$")
_ANY_COLON_BEFORE = re.compile(r"[가-힣)]\s*[:：]\s*$")
_LABEL_OR_TITLE_BEFORE = re.compile(rf"(?:^|[^가-힣])(?:{_LABEL}|{_TITLE})\s$")
_LIST_ITEM_BEFORE = re.compile(r"(?:^|\n)[ \t]*(?:[-•·*]|\d+[.)]|\d+,)[ \t]*$")
_OPEN_PAREN_BEFORE = re.compile(r"\((?:본인\s)?$")
_VALUE_ATTR_BEFORE = re.compile(r"name\"?\s+value=\"$")
_PAREN_AFTER = re.compile(r"\s?\(")
_INSIDE_PAREN_AFTER = re.compile(r"[,)]|\s[가-힣]+[),]")
_LOOSE_AFTER = re.compile(r"\s?[(,)\n]|\s?$|\s")
_HANJA_AFTER = re.compile(r"\s?\([\u4e00-\u9fff]{2,5}\)")
_HANGUL_WORD = re.compile(r"[가-힣]{3,}")
# 신청인: 다나카 료마 (田中良真) / 내담자: 응우옌 반 흥 (Nguyen …) — foreign names
_FOREIGN = re.compile(
    r"[:：]\s*(?P<v>[가-힣]{2,6}(?: [가-힣]{1,6}){0,2})(?=\s?\((?:[A-Z][a-z]+|[\u4e00-\u9fff]{2}))"
)
_LABEL_END = re.compile(rf"(?:^|[^가-힣]){_LABEL}\s*$")
_BEFORE_CHARS = 32

# Hangul words that have the shape of a name and are not one.
NOT_NAMES = frozenset(
    """
    이번 이후 이전 이상 이하 이외 이미 이용 이유 이의 이들 이런 이제 이름 이동 이내 이행 이관
    정리 정보 정부 정책 정도 정상 정기 정식 정해 정확 정원 정액 정산 정지 정비
    한국 한번 한편 한도 한달 한정 한계 한해 한시 한결 한층 한데 한다
    전체 전국 전달 전화 전문 전년 전기 전원 전환 전반 전후 전부 전세 전자 전략 전담 전송 전산
    조사 조치 조정 조건 조합 조회 조직 조금 조기 조례 조달 조성 조세 조항 조문
    신청 신고 신규 신속 신분 신설 신뢰 신용 신원 신호 신축 신입 신고서
    안내 안전 안정 안건 안의 안에 안도 공원 공동 공개 공고 공문 공지 공사 공단 공유 공정 공무
    주소 주민 주요 주무 주간 주의 주관 주택 주의사항 주차 주말 주문 주로 주기 주식 주가
    시장 시간 시행 시기 시설 시청 시민 시스템 시도 시정 시작 시험 시점 시군 시한
    사업 사항 사용 사무 사람 사례 사유 사실 사전 사고 사건 사회 사원 사장 사정 사망
    성과 성명 성함 성별 성인 성장 성실 성공 성능 장관 장기 장소 장애 장비 장부 장학 장남 장녀
    임시 임대 임차 임금 임원 임명 임기 임신 임의 문의 문서 문제 문화 문자 문항 문구
    오늘 오전 오후 오류 오픈 유지 유형 유지보수 유효 유관 유사 유의 유출 유족 유가족
    방문 방법 방안 방향 방식 방침 방송 기간 기관 기준 기타 기록 기업 기존 기본 기술 기한
    진행 진료 진단 진술 진정 진입 민원 민간 민사 구청 구분 구성 구역 구매 구조 구체
    고객 고지 고용 고려 고시 고유 고등 고발 고소 송금 송부 송달 지원 지급 지역 지정 지난 지금
    관련 관리 나이 남편 남성 남자 여성 여자 원고 원본 원인 원장 하는 하고 하여 하며 하면
    위원 위원회 위반 위치 위해 위험 위임 위탁 표시 표준 명의 명시 명단 감사 감독 개인 개별
    인사 인원 인증 인정 인근 인하 인상 인터넷 도로 도착 도입 도움 차량 차관 차장 차이 차기
    부서 부분 부장 부족 부과 부담 부동산 서류 서비스 서울 서명 서면 서식 선정 선택 선임 석사
    연락 연락처 연구 연장 연도 연령 연금 연수 연체 마감 마련 경우 경기 경찰 경과 경로 경영
    반영 반납 배우자 배정 허가 허위 변경 변호사 변호인 예정 예약 예산 예방 예외 용도 용역
    모두 모든 모집 목적 목록 목표 어제 어머니 우리 우선 우편 운영 운전 은행 제출 제공 제한
    제도 제외 제가 제목 제기 제품 최근 최대 최소 최종 최초 추가 추진 추후 추천 확인 현장 현재
    현황 형태 홍보 함께 황금 권한 권리 강화 강조 강의 왕복 반려 손해 손님 양식 양도 양측
    """.split()
)


def plausible_given_name(name: str) -> bool:
    """The syllables after the surname are common in Korean given names."""
    given = name[2:] if name[:2] in DOUBLE_SURNAMES and len(name) == 4 else name[1:]
    return bool(given) and given[-1] not in NOT_LAST and all(ch in GIVEN_SYLLABLES for ch in given)


def _evidence(text: str, start: int, end: int, suffix: str) -> tuple[float, str]:
    """The strongest evidence that text[start:end] is a name, as (score, rule)."""
    rest = _SUFFIX.fullmatch(suffix)
    if rest is None:  # the word goes on with something that is not a title or particle
        return 0.0, ""
    if rest.group("title"):  # 박지원차장님, 김도현사무관이
        return 0.85, "title"
    before = text[max(0, start - _BEFORE_CHARS) : start]
    if suffix:  # 이정훈은 … / 한지원이라는 …
        if _LABEL_COLON_BEFORE.search(before):
            return 0.85, "label"
        return 0.5, "particle"
    if _TITLE_NEXT.match(text, end):  # 이재훈 주무관 / 차예진 경사였습니다
        return 0.85, "title"
    if _LABEL_COLON_BEFORE.search(before) or (
        _VALUE_ATTR_BEFORE.search(before) and text.startswith('"', end)
    ):  # 성명: 강민서 / "name": "한도현" / name" value="송지효"
        return 0.85, "label"
    if _LIST_ITEM_BEFORE.search(before) or (
        _LABEL_OR_TITLE_BEFORE.search(before) and _LOOSE_AFTER.match(text, end)
    ):  # "1. 강민서 (" / 담당 박지원 ( / 신임 사장 박서영 임명
        return 0.6, "list or label"
    if _ANY_COLON_BEFORE.search(before):  # 예매자: 정민기 / 학부모 (가해 측): 송지효
        return 0.6, "field"
    if _PAREN_AFTER.match(text, end):  # 정현우 (1962년 … / 민서연 (마케팅)
        return 0.55, "details"
    if _OPEN_PAREN_BEFORE.search(before) and _INSIDE_PAREN_AFTER.match(text, end):
        return 0.55, "in parentheses"  # 본인 (홍지원, 1991년 … / (정유진 전문의)
    return 0.0, ""


def find_names(text: str) -> list[tuple[int, int, float, str]]:
    """Every (start, end, score, rule) name with evidence.

    Candidates are the starts of Hangul words: three syllables, or four after a
    two-syllable surname. Labels and titles make a name count even when its given name is
    unusual ("성명: 스즈카" is handled as a foreign name); everything else also needs a
    plausible given name.
    """
    found: list[tuple[int, int, float, str]] = []
    for word in _HANGUL_WORD.finditer(text):
        w_start = word.start()
        token = word.group()
        lengths = (4, 3) if token[:2] in DOUBLE_SURNAMES and len(token) >= 4 else (3,)
        for length in lengths:
            name = token[:length]
            if length == 3 and name[0] not in SINGLE_SURNAMES:
                continue
            if name in NOT_NAMES:
                continue
            end = w_start + length
            score, rule = _evidence(text, w_start, end, token[length:])
            if score == 0.0:
                continue
            if not plausible_given_name(name) and not (score >= 0.85 and rule == "label"):
                continue
            hanja = _HANJA_AFTER.match(text, end)
            found.append((w_start, hanja.end() if hanja else end, score, rule))
            break
    if "(" in text:
        taken = {start for start, _, _, _ in found}
        for match in _FOREIGN.finditer(text):
            if match.start("v") in taken:  # a Korean name with hanja, found above
                continue
            if _LABEL_END.search(text, max(0, match.start() - _BEFORE_CHARS), match.start()):
                found.append((*match.span("v"), 0.85, "foreign name"))
    return found


_TITLE_AFTER = re.compile(rf"\s?(?P<t>{_TITLE})(?=[^가-힣]|$|{_TAIL})")
_TITLE_BEFORE = re.compile(rf"(?:^|[^가-힣])(?P<t>{_TITLE})\s$")


def find_positions(text: str, names: list[tuple[int, int, float, str]]) -> list[tuple[int, int]]:
    """Spans of job titles directly after or before a name with evidence."""
    spans: set[tuple[int, int]] = set()
    for start, end, score, _ in names:
        if score < 0.5:
            continue
        after = _TITLE_AFTER.match(text, end)
        if after:
            spans.add(after.span("t"))
        before = _TITLE_BEFORE.search(text, max(0, start - 12), start)
        if before:
            spans.add(before.span("t"))
    return sorted(spans)


_NAME_END = re.compile(rf"[^가-힣]|$|{_TAIL}|\s?{_TITLE}")


def propagate(text: str, names: set[str]) -> list[tuple[int, int]]:
    """Every bounded occurrence of an accepted name elsewhere in the text: a name found
    once with evidence ("이정훈 과장") is a name where it stands alone ("이정훈에게")."""
    spans: list[tuple[int, int]] = []
    for name in names:
        start = text.find(name)
        while start != -1:
            end = start + len(name)
            before_ok = start == 0 or not ("가" <= text[start - 1] <= "힣")
            if before_ok and _NAME_END.match(text, end):
                spans.append((start, end))
            start = text.find(name, end)
    return spans
