"""Every file of the shared document corpus through the real ``partition`` (no mocks).

Each file must give non-empty elements or fail with the expected :class:`DocumentError`;
several files are also checked for content a reader would notice: Korean text, reading
order, tables as HTML, sheet names, e-mail subjects.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest

from llmflow.ingest.elements import (
    DocumentError,
    Element,
    EmptyDocument,
    EncryptedDocument,
)
from llmflow.ingest.partition import partition

pytestmark = [pytest.mark.integration, pytest.mark.datasets]

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
DOCUMENTS = DATASETS / "documents"
FILES = sorted(p for p in DOCUMENTS.rglob("*") if p.is_file()) if DOCUMENTS.is_dir() else []
MAX_BYTES = 100 * 1024 * 1024

#: Files that must be refused, with the error a person would need to see.
EXPECTED_ERRORS: dict[str, tuple[type[DocumentError], str]] = {
    # 13 bytes of spaces and newlines: nothing to index.
    "eml_empty.eml": (EmptyDocument, "empty"),
    # Needs the open password; we never guess passwords.
    "pdf_password.pdf": (EncryptedDocument, "password"),
    # An Office "EncryptedPackage" container: the workbook itself is encrypted.
    "password_protected.xlsx": (EncryptedDocument, "password"),
}
LETTER = re.compile(r"[^\W\d_]")
VALID_TYPES = {
    "Title",
    "NarrativeText",
    "ListItem",
    "Table",
    "Header",
    "Footer",
    "Image",
    "Code",
    "Formula",
    "Address",
    "EmailAddress",
    "PageBreak",
    "Text",
}


def _path(name: str) -> Path:
    matches = [p for p in FILES if p.name == name]
    if not matches:
        pytest.skip(f"{name} is not in {DOCUMENTS}")
    return matches[0]


@functools.cache
def elements_of(name: str) -> list[Element]:
    path = _path(name)
    return partition(path.read_bytes(), path.name, max_bytes=MAX_BYTES)


def text_of(name: str) -> str:
    return "\n".join(e.text for e in elements_of(name))


@pytest.mark.parametrize(
    "path",
    FILES or [pytest.param(None, marks=pytest.mark.skip(reason=f"{DOCUMENTS} is absent"))],
    ids=lambda p: p.name if isinstance(p, Path) else "no-datasets",
)
def test_every_file_gives_elements_or_a_clear_error(path: Path) -> None:
    if path.name in EXPECTED_ERRORS:
        error, fragment = EXPECTED_ERRORS[path.name]
        with pytest.raises(error) as caught:
            partition(path.read_bytes(), path.name, max_bytes=MAX_BYTES)
        assert path.name in caught.value.message and fragment in caught.value.message.lower()
        return
    elements = elements_of(path.name)
    assert elements, f"{path.name} gave no elements"
    for element in elements:
        assert element.text.strip() and element.type in VALID_TYPES
        assert isinstance(element.section_path, list)
        if element.type == "Table":
            assert element.table_html and element.table_html.startswith("<table")
        if LETTER.search(element.text):  # numbers-only elements have no language
            assert element.language, element.text


def test_korean_pdf_reads_like_a_person() -> None:
    """Columns top-left, top-right, then the bottom box left and right (the PDF draws the
    bottom box first), each table whole where it sits."""
    text = text_of("pdf_korean-text-with-tables.pdf")
    in_order = [
        "할인점·주유·온라인쇼핑몰 1.5% 빅포인트 적립",
        "할인점 이마트, 이마트 트레이더스, 롯데마트, 홈플러스",
        "할인점은 온라인몰도 포함되며, 기업형 슈퍼마켓(이마트 에브리데이, 홈플러스 익스프레스, "
        "롯데슈퍼 등), 쇼핑 외 결제건 (상품권, 주차장 등), 임대매장은 제외",
        "주유는 LPG충전소 포함",
        "커피전문점·제과점·편의점 2% 빅포인트 적립",
        "커피전문점 스타벅스, 투썸플레이스, 카페베네, 탐앤탐스, 커피빈, 엔제리너스",
        "제과점은 오프라인 결제건에 한하며, 백화점, 할인점, 쇼핑몰 등의 임대매장은 제외",
        "서비스 제공 기준",
        "매월 1일부터 말일까지 이용한 일시불 및 할부 이용금액",
        "적립 제외 대상",
        "무이자할부, 다이어트할부, 삼성카드 할인이 적용된 일시불 및 할부 이용금액",
        "빅포인트의 유효기간은 5년으로, 유효기간 만료 시 월 단위로 자동 소멸",
    ]
    positions = [text.find(sentence) for sentence in in_order]
    assert -1 not in positions, [s for s, p in zip(in_order, positions, strict=True) if p < 0]
    assert positions == sorted(positions)
    tables = [e for e in elements_of("pdf_korean-text-with-tables.pdf") if e.type == "Table"]
    assert len(tables) == 2
    assert (
        "<td>온라인쇼핑몰</td><td>삼성카드 쇼핑, G마켓, 옥션, 11번가, 인터파크, 쿠팡, 티몬, "
        "위메프</td>" in (tables[0].table_html or "")
    )
    assert "LPG" not in tables[0].text  # the notes under the table are not part of it
    assert all(
        e.language == "ko"
        for e in elements_of("pdf_korean-text-with-tables.pdf")
        if e.type != "Header"
    )


def test_two_column_paper_reads_column_by_column() -> None:
    text = text_of("pdf_multi-column-2p.pdf")
    in_order = [
        "Dense Passage Retrieval for Open-Domain Question Answering",
        "Open-domain question answering relies on efficient passage retrieval",
        "1 Introduction",
        "Open-domain question answering (QA) (Voorhees, 1999) is a task",
        "Retrieval in open-domain QA is usually implemented using TF-IDF or BM25",
        "2 Background",
    ]
    positions = [text.find(sentence) for sentence in in_order]
    assert -1 not in positions and positions == sorted(positions)
    titles = {e.text for e in elements_of("pdf_multi-column-2p.pdf") if e.type == "Title"}
    assert {"1 Introduction", "2 Background", "3.1 Overview"} <= titles


def test_pdf_table_without_side_borders_is_one_html_table() -> None:
    (table,) = [
        e for e in elements_of("pdf_layout-parser-paper-with-table.pdf") if e.type == "Table"
    ]
    html = table.table_html or ""
    assert (
        "<td>PubLayNet [38]</td><td>F / M</td><td>M</td><td>Layouts of modern scientific "
        "documents</td>" in html
    )


def test_scanned_table_is_ocred_into_cells() -> None:
    (table,) = elements_of("pdf_table-multi-row-column-cells.pdf")
    html = table.table_html or ""
    assert table.type == "Table" and table.metadata.get("ocr") is True
    for cell in ("Low Vision", "Dexterity", "Mobility", "Participants"):
        assert cell in html
    assert 'colspan="2">Results' in html


def test_copy_protected_pdf_is_still_ingested() -> None:
    assert "LayoutParser" in text_of("pdf_copy-protected.pdf")


@pytest.mark.parametrize(
    ("name", "phrase"),
    [
        ("hwplib_changing-paragraph-text.hwp", "이것은 샘플입니다."),
        ("hwpxlib_multipara.hwpx", "김하성은 볼카운트 2B 2S에서"),
        ("hwpxlib_no_manifest.hwpx", "울산광역시 남구 구세 조례 일부개정조례안"),
        # a distribution document (배포용): the real body, not the "upgrade your viewer" notice
        ("hwplib_distribution.hwp", "2025년 강남세움센터 시설관리원 용역업체 선정 입찰공고"),
    ],
)
def test_hwp_and_hwpx_give_korean_text(name: str, phrase: str) -> None:
    assert phrase in text_of(name)
    assert "ko" in {e.language for e in elements_of(name)}


def test_hwp_distribution_document_is_decrypted() -> None:
    assert "배포용 문서입니다" not in text_of("hwplib_distribution.hwp")


def test_hwpx_table_becomes_html() -> None:
    (table,) = [e for e in elements_of("hwpxlib_Table.hwpx") if e.type == "Table"]
    assert "<td>개똥이</td><td>89</td><td>65</td><td>78</td>" in (table.table_html or "")


def test_korean_and_english_image_is_ocred() -> None:
    elements = elements_of("img_english-and-korean.png")
    korean = [e for e in elements if "안녕하세요" in e.text]
    assert korean and korean[0].language == "ko" and "팬입니다" in korean[0].text
    assert "저희는" in korean[0].text  # syllables Tesseract split are joined again
    assert any(e.text == "RULES AND INSTRUCTIONS" and e.language == "en" for e in elements)


def test_docx_merged_cells_keep_their_spans() -> None:
    tables = [e.table_html or "" for e in elements_of("docx-tables.docx") if e.type == "Table"]
    assert any('rowspan="2"' in html and 'colspan="2"' in html for html in tables)


def test_xlsx_sheets_are_named() -> None:
    elements = elements_of("stanley-cups.xlsx")
    assert {e.metadata.get("sheet_name") for e in elements} == {
        "Stanley Cups",
        "Stanley Cups Since 67",
    }
    tables = [e for e in elements if e.type == "Table"]
    assert len(tables) == 2 and all("Maple Leafs" in (t.table_html or "") for t in tables)
    assert tables[1].section_path == ["Stanley Cups Since 67"]


def test_email_subject_and_sender_are_kept() -> None:
    elements = elements_of("eml_family-day.eml")
    assert elements[0].type == "Title" and elements[0].text == "Family Day"
    body = [e for e in elements if "family day" in e.text.lower() and e.type != "Title"]
    assert body and body[0].section_path == ["Family Day"]
    assert all(e.metadata["email_subject"] == "Family Day" for e in elements)
    assert "mallori@unstructured.io" in elements[0].metadata["email_from"]


def test_pptx_slides_are_numbered() -> None:
    elements = elements_of("sample-presentation.pptx")
    assert {e.metadata.get("slide_number") for e in elements} >= {1, 2, 3}
    assert elements[0].type == "Title" and elements[0].page == 1


def test_utf16_html_is_decoded() -> None:
    assert "SNB22-3 Chemical composition" in text_of("example-steelJIS-datasheet-utf-16.html")


def test_mislabelled_ppt_is_read_as_pptx() -> None:
    assert "Todos los seres humanos" in text_of("language-docs_eng_spa_mult.ppt")
    assert "es" in {e.language for e in elements_of("language-docs_eng_spa_mult.ppt")}


def test_parallel_partitioning_gives_the_same_elements() -> None:
    """Callers partition in worker threads; PDFium is not thread-safe, so this must hold."""
    from concurrent.futures import ThreadPoolExecutor

    names = [
        "pdf_korean-text-with-tables.pdf",
        "pdf_multi-column-2p.pdf",
        "pdf_layout-parser-paper-fast.pdf",
        "hwpxlib_Table.hwpx",
    ] * 3
    expected = {name: [e.text for e in elements_of(name)] for name in set(names)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(
            pool.map(lambda n: partition(_path(n).read_bytes(), n, max_bytes=MAX_BYTES), names)
        )
    for name, elements in zip(names, results, strict=True):
        assert [e.text for e in elements] == expected[name]


def test_euc_kr_html_is_decoded_by_its_meta_charset() -> None:
    html = (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=euc-kr">'
        "</head><body><h1>인사 규정</h1><p>직원은 연차휴가를 사용할 수 있다.</p></body></html>"
    ).encode("euc-kr")
    elements = partition(html, "규정.html", max_bytes=MAX_BYTES)
    assert [e.text for e in elements] == ["인사 규정", "직원은 연차휴가를 사용할 수 있다."]
    assert elements[1].section_path == ["인사 규정"] and elements[1].language == "ko"


def test_word_headings_become_the_section_path() -> None:
    import io

    import docx

    document = docx.Document()
    document.add_heading("제1장 총칙", level=1)
    document.add_heading("제1조 목적", level=2)
    document.add_paragraph("이 규정은 복리후생에 관한 사항을 정함을 목적으로 한다.")
    table = document.add_table(rows=2, cols=2)
    for (r, c), value in {(0, 0): "구분", (0, 1): "금액", (1, 0): "결혼", (1, 1): "50만원"}.items():
        table.cell(r, c).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    elements = partition(buffer.getvalue(), "규정.docx", max_bytes=MAX_BYTES)
    body = next(e for e in elements if e.text.startswith("이 규정은"))
    assert body.section_path == ["제1장 총칙", "제1조 목적"]
    (table_element,) = [e for e in elements if e.type == "Table"]
    assert "<td>결혼</td><td>50만원</td>" in (table_element.table_html or "")
