"""The sample corpus in platform/samples/: files, formats, queries, and that the committed
binaries are what make_samples.py builds from the text sources in platform/samples/src/."""

from __future__ import annotations

import importlib.util
import io
import re
import struct
import zipfile
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType

import pytest
import yaml

SAMPLES = Path(__file__).resolve().parents[2] / "platform" / "samples"
CORPUS = SAMPLES / "corpus"
OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")

# The corpus, file by file, with the format each one must be.
FORMATS = {
    "security-regulation.hwpx": "hwpx",
    "security-enforcement-rules.pdf": "pdf",
    "privacy-policy-summary.hwp": "hwp",
    "leave-and-benefits.docx": "docx",
    "leave-types.xlsx": "xlsx",
    "it-onboarding-guide.md": "md",
    "notice-network-maintenance.html": "html-euc-kr",
    "remote-work-policy.docx": "docx",
    "incident-response-runbook.txt": "txt",
}


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag in ("style", "script")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def extract_text(name: str) -> str:
    """Plain text of a corpus file, with the libraries the project already uses."""
    path = CORPUS / name
    kind = FORMATS[name]
    if kind in ("hwp", "hwpx"):
        reader = pytest.importorskip("hwp_hwpx_parser")
        with reader.Reader(path) as r:
            return str(r.text)
    if kind == "pdf":
        pdfplumber = pytest.importorskip("pdfplumber")
        with pdfplumber.open(path) as pdf:
            return "\n".join(page.extract_text() or "" for page in pdf.pages)
    if kind == "docx":
        docx = pytest.importorskip("docx")
        doc = docx.Document(str(path))
        cells = [c.text for t in doc.tables for row in t.rows for c in row.cells]
        return "\n".join([p.text for p in doc.paragraphs] + cells)
    if kind == "xlsx":
        openpyxl = pytest.importorskip("openpyxl")
        wb = openpyxl.load_workbook(path, read_only=True)
        return "\n".join(
            " ".join(str(v) for v in row if v is not None)
            for ws in wb.worksheets
            for row in ws.iter_rows(values_only=True)
        )
    if kind == "html-euc-kr":
        parser = _Text()
        parser.feed(path.read_bytes().decode("euc-kr"))
        return "".join(parser.parts)
    return path.read_text(encoding="utf-8")


def _queries() -> list[dict[str, str]]:
    data = yaml.safe_load((SAMPLES / "queries.yaml").read_text(encoding="utf-8"))
    return list(data["queries"])


# ---------------------------------------------------------------------------------------
# Files and formats
# ---------------------------------------------------------------------------------------


def test_corpus_is_exactly_the_declared_files_and_small() -> None:
    present = {p.name for p in CORPUS.iterdir() if p.is_file()}
    assert present == set(FORMATS)
    assert sum((CORPUS / n).stat().st_size for n in FORMATS) < 1.5 * 1024 * 1024
    for name in FORMATS:
        assert (SAMPLES / "src").is_dir()
        assert (CORPUS / name).stat().st_size > 1000, name


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_file_is_of_its_declared_format(name: str) -> None:
    data = (CORPUS / name).read_bytes()
    kind = FORMATS[name]
    if kind == "pdf":
        assert data.startswith(b"%PDF-1.")
        assert b"/FontFile2" in data  # an embedded TrueType (NanumGothic) font
    elif kind == "hwp":
        assert data.startswith(OLE_MAGIC)
    elif kind in ("hwpx", "docx", "xlsx"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            assert zf.testzip() is None
            if kind == "hwpx":
                first = zf.infolist()[0]
                assert first.filename == "mimetype"
                assert first.compress_type == zipfile.ZIP_STORED
                assert zf.read("mimetype") == b"application/hwp+zip"
                assert {
                    "Contents/header.xml",
                    "Contents/section0.xml",
                    "Contents/content.hpf",
                    "META-INF/container.xml",
                } <= set(names)
            elif kind == "docx":
                assert {"[Content_Types].xml", "word/document.xml"} <= set(names)
            else:
                assert {"[Content_Types].xml", "xl/workbook.xml"} <= set(names)
    elif kind == "html-euc-kr":
        text = data.decode("euc-kr")
        assert '<meta charset="euc-kr">' in text
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")  # really EUC-KR bytes, not UTF-8
    else:
        text = data.decode("utf-8")
        assert text.strip()
        if kind == "md":
            assert text.startswith("# ")


def test_hwp_is_an_hwp5_compound_file() -> None:
    olefile = pytest.importorskip("olefile")
    path = CORPUS / "privacy-policy-summary.hwp"
    assert olefile.isOleFile(str(path))
    with olefile.OleFileIO(str(path), raise_defects=olefile.DEFECT_INCORRECT) as ole:
        streams = {"/".join(s) for s in ole.listdir()}
        assert {"FileHeader", "DocInfo", "BodyText/Section0", "PrvText"} <= streams
        header = ole.openstream("FileHeader").read()
        body = zlib.decompress(ole.openstream("BodyText/Section0").read(), -15)
    assert len(header) == 256
    assert header[:17] == b"HWP Document File"
    version, flags = struct.unpack_from("<II", header, 32)
    assert version >> 24 == 5
    assert flags & 0x1 and not flags & 0x2  # compressed, not password-protected
    # The section starts with a paragraph header record (tag 66, level 0).
    assert struct.unpack_from("<I", body, 0)[0] & 0x3FF == 66


HANGUL_EXPECTED = {
    "security-regulation.hwpx": [
        "제1조(목적)",
        "제5조제2항에 따른 원격접속 환경",
        "ISMS-P",
        "[별표 1] 보안등급 분류 기준",
        "HanbitVPN",
        "부칙",
    ],
    "privacy-policy-summary.hwp": [
        "개인정보 처리방침 요약본",
        "채용 절차 종료 후 180일",
        "촬영일로부터 30일",
        "개인정보 보호책임자(CPO)",
    ],
}


@pytest.mark.parametrize("name", sorted(HANGUL_EXPECTED))
def test_hwp_and_hwpx_text_and_tables_parse(name: str) -> None:
    parser = pytest.importorskip("hwp_hwpx_parser")
    with parser.Reader(CORPUS / name) as r:
        text = _squash(r.text)
        tables = r.tables
    for expected in HANGUL_EXPECTED[name]:
        assert expected in text, expected
    assert len(tables) == 1
    header = tables[0].rows[0]
    assert header[0] in ("등급", "구분")
    assert len(tables[0].rows) >= 5


# ---------------------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------------------


def test_queries_parse_and_point_at_corpus_files() -> None:
    queries = _queries()
    assert 8 <= len(queries) <= 12
    assert len({q["id"] for q in queries}) == len(queries)
    for q in queries:
        assert q["query"].strip() and q["expected_text"].strip()
        assert q["lang"] in ("ko", "en")
        assert (CORPUS / q["expected_file"]).is_file(), q["expected_file"]
    korean_hangul_docs = [
        q
        for q in queries
        if q["lang"] == "ko" and FORMATS[q["expected_file"]] in ("hwp", "hwpx", "xlsx")
    ]
    assert len(korean_hangul_docs) >= 2
    assert {q["lang"] for q in queries} == {"ko", "en"}


@pytest.mark.parametrize("query", _queries(), ids=lambda q: q["id"])
def test_expected_text_is_in_exactly_the_expected_file(query: dict[str, str]) -> None:
    needle = _squash(query["expected_text"])
    holders = [name for name in sorted(FORMATS) if needle in _squash(extract_text(name))]
    assert holders == [query["expected_file"]]


def test_notice_has_one_fake_phone_number_and_email_for_the_pii_report() -> None:
    text = extract_text("notice-network-maintenance.html")
    assert re.findall(r"010-\d{4}-\d{4}", text) == ["010-0000-1234"]
    assert re.findall(r"[\w.]+@[\w.-]+", text) == ["hanbit.kim@hanbit-tech.example"]


# ---------------------------------------------------------------------------------------
# The committed binaries are what the generator builds from src/
# ---------------------------------------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "llmflow_sample_generator", SAMPLES / "make_samples.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _content(name: str, data: bytes) -> object:
    """What a file holds, independent of the deflate implementation that packed it."""
    kind = FORMATS[name]
    if kind in ("hwpx", "docx", "xlsx"):
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [(i.filename, zf.read(i)) for i in zf.infolist()]
    if kind == "hwp":
        olefile = pytest.importorskip("olefile")
        with olefile.OleFileIO(data) as ole:
            streams = {}
            for parts in ole.listdir():
                raw = ole.openstream(parts).read()
                if parts[0] in ("DocInfo", "BodyText"):
                    raw = zlib.decompress(raw, -15)
                streams["/".join(parts)] = raw
            return streams
    return data


@pytest.mark.parametrize("name", sorted(n for n, k in FORMATS.items() if k != "pdf"))
def test_committed_file_matches_its_source(name: str, tmp_path: Path) -> None:
    pytest.importorskip("docx")
    pytest.importorskip("openpyxl")
    generator = _load_generator()
    generator.build([name], tmp_path)
    rebuilt = (tmp_path / name).read_bytes()
    committed = (CORPUS / name).read_bytes()
    assert _content(name, rebuilt) == _content(name, committed), (
        f"corpus/{name} is stale: run .venv/bin/python platform/samples/make_samples.py"
    )


def test_committed_pdf_matches_its_source(tmp_path: Path) -> None:
    pytest.importorskip("reportlab")
    pdfplumber = pytest.importorskip("pdfplumber")
    generator = _load_generator()
    try:
        generator.find_font("NanumGothic.ttf")
    except SystemExit:
        pytest.skip("NanumGothic fonts (fonts-nanum) are not installed")
    name = "security-enforcement-rules.pdf"
    generator.build([name], tmp_path)

    def text(path: Path) -> str:
        with pdfplumber.open(path) as pdf:
            return "\n".join(page.extract_text() or "" for page in pdf.pages)

    assert text(tmp_path / name) == text(CORPUS / name)
