#!/usr/bin/env python3
"""Build the sample corpus in ``platform/samples/corpus/`` from the text sources in
``platform/samples/src/``.

    .venv/bin/python platform/samples/make_samples.py            # rebuild every file
    .venv/bin/python platform/samples/make_samples.py --check    # rebuild in a temp dir, compare
    .venv/bin/python platform/samples/make_samples.py --only privacy-policy-summary.hwp

Every output is deterministic (fixed timestamps, no random ids), so a rebuild from
unchanged sources gives the same bytes on the same library versions. The PDF needs the
NanumGothic TrueType fonts (Debian ``fonts-nanum``; another directory can be given in
``LLMFLOW_SAMPLES_FONT_DIR``). Packages: reportlab, python-docx, openpyxl, PyYAML, all
in the project's environment; HWP and HWPX come from our own writer, ``hangul.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "src"
CORPUS = HERE / "corpus"
sys.path.insert(0, str(HERE))

import hangul  # noqa: E402

COMPANY = "한빛테크(주)"
FIXED_DATE = datetime(2025, 1, 1, 9, 0, 0)
ZIP_DATE = (2025, 1, 1, 0, 0, 0)
FONT_DIRS = ("/usr/share/fonts/truetype/nanum", "/usr/share/fonts/nanum", "/usr/local/share/fonts")
ARTICLE_HEAD = re.compile(r"^(제\d+조(?:의\d+)?\([^)]*\))\s*")

Block = tuple[str, object]


# --------------------------------------------------------------------------------------
# Source format: a small Markdown subset. "# " title (the next line is its "meta" line),
# "## " heading, "- " bullet, "| a | b |" table rows (the |---| rule is skipped), and
# every other non-empty line is one paragraph.
# --------------------------------------------------------------------------------------


def read_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    table: list[list[str]] = []
    after_title = False
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(re.fullmatch(r":?-{3,}:?", c) for c in cells):
                table.append(cells)
            continue
        if table:
            blocks.append(("table", table))
            table = []
        if not line:
            continue
        if line.startswith("# "):
            blocks.append(("title", line[2:].strip()))
            after_title = True
            continue
        if after_title:
            blocks.append(("meta", line))
        elif line.startswith("## "):
            blocks.append(("heading", line[3:].strip()))
        elif line.startswith("- "):
            blocks.append(("bullet", line[2:].strip()))
        else:
            blocks.append(("para", line))
        after_title = False
    if table:
        blocks.append(("table", table))
    return blocks


def title_of(blocks: list[Block]) -> str:
    return next(str(v) for k, v in blocks if k == "title")


# --------------------------------------------------------------------------------------
# Zip normalisation (DOCX, XLSX): fixed timestamps and document dates.
# --------------------------------------------------------------------------------------

_CORE_DATES = re.compile(r"(<dcterms:(created|modified)[^>]*>)[^<]*(</dcterms:\2>)")


def normalise_zip(data: bytes) -> bytes:
    stamp = FIXED_DATE.strftime("%Y-%m-%dT%H:%M:%SZ")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            payload = src.read(item.filename)
            if item.filename == "docProps/core.xml":
                payload = _CORE_DATES.sub(rf"\g<1>{stamp}\g<3>", payload.decode()).encode()
            info = zipfile.ZipInfo(item.filename, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            dst.writestr(info, payload, compresslevel=9)
    return out.getvalue()


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


def for_hangul(blocks: list[Block]) -> list[Block]:
    return [("para", f"· {v}") if k == "bullet" else (k, v) for k, v in blocks]


def build_hwpx(src: str) -> bytes:
    blocks = read_blocks(SRC / src)
    return hangul.write_hwpx(
        for_hangul(blocks),
        title=title_of(blocks),
        author=f"{COMPANY} 정보보안팀",
        subject="사내 규정",
        keywords="정보보안, ISMS-P, HanbitVPN, 비밀번호",
    )


def build_hwp(src: str) -> bytes:
    blocks = read_blocks(SRC / src)
    return hangul.write_hwp5(
        for_hangul(blocks),
        title=title_of(blocks),
        author=f"{COMPANY} 정보보안팀",
        subject="개인정보 처리방침",
        keywords="개인정보, 보유기간, 파기, CPO",
    )


def find_font(name: str) -> Path:
    extra = os.environ.get("LLMFLOW_SAMPLES_FONT_DIR")
    for d in [extra, *FONT_DIRS] if extra else FONT_DIRS:
        for path in Path(d).rglob(name) if Path(d).is_dir() else ():
            return path
    raise SystemExit(
        f"{name} not found: install Debian's fonts-nanum (apt-get install fonts-nanum) or set "
        "LLMFLOW_SAMPLES_FONT_DIR to a directory that holds NanumGothic*.ttf"
    )


def build_pdf(src: str) -> bytes:
    from reportlab import rl_config
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_CENTER, TA_JUSTIFY
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    rl_config.invariant = 1  # no creation date or random document id
    pdfmetrics.registerFont(TTFont("NanumGothic", str(find_font("NanumGothic.ttf"))))
    pdfmetrics.registerFont(TTFont("NanumGothicBold", str(find_font("NanumGothicBold.ttf"))))
    pdfmetrics.registerFontFamily("NanumGothic", normal="NanumGothic", bold="NanumGothicBold")

    base = ParagraphStyle(
        "body", fontName="NanumGothic", fontSize=10, leading=16, alignment=TA_JUSTIFY, spaceAfter=5
    )
    styles = {
        "title": ParagraphStyle(
            "title",
            parent=base,
            fontName="NanumGothicBold",
            fontSize=17,
            leading=24,
            alignment=TA_CENTER,
            spaceAfter=4,
        ),
        "meta": ParagraphStyle(
            "meta",
            parent=base,
            fontSize=8.5,
            textColor=colors.HexColor("#555555"),
            alignment=TA_CENTER,
            spaceAfter=14,
        ),
        "heading": ParagraphStyle(
            "heading",
            parent=base,
            fontName="NanumGothicBold",
            fontSize=12,
            leading=18,
            spaceBefore=10,
            spaceAfter=6,
            keepWithNext=1,
        ),
        "para": base,
        "bullet": ParagraphStyle("bullet", parent=base, leftIndent=12, bulletIndent=2),
        "cell": ParagraphStyle(
            "cell", parent=base, fontSize=9, leading=13, alignment=0, spaceAfter=0
        ),
    }

    def esc(text: str) -> str:
        return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    blocks = read_blocks(SRC / src)
    title = title_of(blocks)
    story = []
    for kind, value in blocks:
        if kind == "table":
            rows = [[Paragraph(esc(str(c)), styles["cell"]) for c in row] for row in value]  # type: ignore[attr-defined]
            table = Table(rows, repeatRows=1, hAlign="LEFT")
            table.setStyle(
                TableStyle(
                    [
                        ("GRID", (0, 0), (-1, -1), 0.5, colors.HexColor("#777777")),
                        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#E8EEF6")),
                        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                    ]
                )
            )
            story += [table, Spacer(1, 6)]
            continue
        text = esc(str(value))
        if kind == "para":
            text = ARTICLE_HEAD.sub(lambda m: f"<b>{m.group(1)}</b> ", text)
        if kind == "bullet":
            story.append(Paragraph(text, styles["bullet"], bulletText="•"))
        else:
            story.append(Paragraph(text, styles[kind]))

    def footer(canvas, doc) -> None:  # type: ignore[no-untyped-def]
        canvas.saveState()
        canvas.setFont("NanumGothic", 8)
        canvas.setFillColor(colors.HexColor("#777777"))
        canvas.drawString(25 * mm, 12 * mm, f"{COMPANY} 정보보안팀 · 보안등급: 사내한정")
        canvas.drawRightString(A4[0] - 25 * mm, 12 * mm, f"- {doc.page} -")
        canvas.restoreState()

    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=25 * mm,
        rightMargin=25 * mm,
        topMargin=22 * mm,
        bottomMargin=22 * mm,
        title=title,
        author=f"{COMPANY} 정보보안팀",
        subject="정보보안 규정 시행세칙",
        keywords="HanbitVPN, MFA, ISMS-P, EDR, SIEM",
        creator="LLMFlow sample corpus (make_samples.py)",
    )
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


def _east_asian_font(style, name: str) -> None:  # type: ignore[no-untyped-def]
    from docx.oxml.ns import qn

    rpr = style.element.get_or_add_rPr()
    rfonts = rpr.find(qn("w:rFonts"))
    if rfonts is None:
        rfonts = rpr.makeelement(qn("w:rFonts"), {})
        rpr.append(rfonts)
    rfonts.set(qn("w:eastAsia"), name)


def build_docx(src: str, *, author: str, subject: str, keywords: str, language: str) -> bytes:
    from docx import Document
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.shared import Pt, RGBColor

    blocks = read_blocks(SRC / src)
    doc = Document()
    for name in ("Normal", "Title", "Heading 1"):
        _east_asian_font(doc.styles[name], "맑은 고딕")
    doc.styles["Normal"].font.size = Pt(10.5)
    for kind, value in blocks:
        if kind == "title":
            doc.add_heading(str(value), level=0)
        elif kind == "meta":
            p = doc.add_paragraph()
            run = p.add_run(str(value))
            run.font.size = Pt(9)
            run.font.color.rgb = RGBColor(0x55, 0x55, 0x55)
            p.alignment = WD_ALIGN_PARAGRAPH.LEFT
        elif kind == "heading":
            doc.add_heading(str(value), level=1)
        elif kind == "bullet":
            doc.add_paragraph(str(value), style="List Bullet")
        elif kind == "table":
            rows = value  # type: ignore[assignment]
            table = doc.add_table(rows=len(rows), cols=len(rows[0]))  # type: ignore[arg-type]
            table.style = "Table Grid"
            for r, row in enumerate(rows):  # type: ignore[arg-type]
                for c, text in enumerate(row):
                    cell = table.cell(r, c)
                    cell.text = ""
                    run = cell.paragraphs[0].add_run(str(text))
                    run.bold = r == 0
            doc.add_paragraph()
        else:
            text = str(value)
            p = doc.add_paragraph()
            m = ARTICLE_HEAD.match(text)
            if m:
                p.add_run(m.group(1)).bold = True
                p.add_run(" " + text[m.end() :])
            else:
                p.add_run(text)
    props = doc.core_properties
    props.title = title_of(blocks)
    props.author = props.last_modified_by = author
    props.subject, props.keywords, props.language = subject, keywords, language
    props.comments = "LLMFlow sample corpus: fictional company, generated by make_samples.py"
    props.created = props.modified = FIXED_DATE
    props.revision = 1
    out = io.BytesIO()
    doc.save(out)
    return normalise_zip(out.getvalue())


def build_xlsx(src: str) -> bytes:
    import yaml
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
    from openpyxl.utils import get_column_letter

    spec = yaml.safe_load((SRC / src).read_text(encoding="utf-8"))
    wb = Workbook()
    wb.remove(wb.active)
    thin = Side(style="thin", color="999999")
    for sheet in spec["sheets"]:
        ws = wb.create_sheet(sheet["name"])
        for row in sheet["rows"]:
            ws.append([c if c != "" else None for c in row])
        for cell in ws[1]:
            cell.font = Font(bold=True)
            cell.fill = PatternFill("solid", fgColor="E8EEF6")
        for row in ws.iter_rows(min_row=1, max_row=len(sheet["rows"])):
            for cell in row:
                cell.border = Border(left=thin, right=thin, top=thin, bottom=thin)
                cell.alignment = Alignment(vertical="center", wrap_text=True)
        for c in range(1, len(sheet["rows"][0]) + 1):
            width = max(len(str(r[c - 1])) for r in sheet["rows"] if c - 1 < len(r))
            ws.column_dimensions[get_column_letter(c)].width = min(40, max(10, width * 1.8 + 2))
        ws.freeze_panes = "A2"
        if sheet.get("note"):
            ws.append([])
            ws.append([sheet["note"]])
    wb.properties.title = spec["title"]
    wb.properties.creator = wb.properties.lastModifiedBy = spec["author"]
    wb.properties.created = wb.properties.modified = FIXED_DATE
    out = io.BytesIO()
    wb.save(out)
    return normalise_zip(out.getvalue())


def build_euc_kr_html(src: str) -> bytes:
    text = (SRC / src).read_text(encoding="utf-8")
    if 'charset="euc-kr"' not in text:
        raise SystemExit(f'{src}: expected <meta charset="euc-kr">')
    return text.encode("euc-kr")  # strict: fails on any character outside KS X 1001


def copy(src: str) -> bytes:
    return (SRC / src).read_bytes()


# Output name -> builder. The corpus is exactly these files.
BUILDERS: dict[str, Callable[[], bytes]] = {
    "security-regulation.hwpx": lambda: build_hwpx("security-regulation.md"),
    "security-enforcement-rules.pdf": lambda: build_pdf("security-enforcement-rules.md"),
    "privacy-policy-summary.hwp": lambda: build_hwp("privacy-policy-summary.md"),
    "leave-and-benefits.docx": lambda: build_docx(
        "leave-and-benefits.md",
        author=f"{COMPANY} 인사팀",
        subject="사내 규정",
        keywords="연차휴가, 특별휴가, 복지포인트",
        language="ko-KR",
    ),
    "leave-types.xlsx": lambda: build_xlsx("leave-types.yaml"),
    "it-onboarding-guide.md": lambda: copy("it-onboarding-guide.md"),
    "notice-network-maintenance.html": lambda: build_euc_kr_html("notice-network-maintenance.html"),
    "remote-work-policy.docx": lambda: build_docx(
        "remote-work-policy.md",
        author="Hanbit Tech People Team",
        subject="HR policy",
        keywords="remote work, HanbitVPN, stipend",
        language="en-US",
    ),
    "incident-response-runbook.txt": lambda: copy("incident-response-runbook.txt"),
}
NEEDS_FONTS = {"security-enforcement-rules.pdf"}


def build(names: list[str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = out_dir / name
        path.write_bytes(BUILDERS[name]())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", nargs="+", choices=sorted(BUILDERS), help="build only these files"
    )
    parser.add_argument(
        "--out", type=Path, default=CORPUS, help="output directory (default: corpus/)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="rebuild into a temporary directory and compare with corpus/",
    )
    args = parser.parse_args(argv)
    names = args.only or list(BUILDERS)
    if args.check:
        tmp = Path(tempfile.mkdtemp(prefix="llmflow-samples-"))
        try:
            build(names, tmp)
            stale = [n for n in names if (tmp / n).read_bytes() != (CORPUS / n).read_bytes()]
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        for n in stale:
            print(f"differs from its source: corpus/{n}")
        print("corpus is up to date" if not stale else f"{len(stale)} file(s) differ")
        return 1 if stale else 0
    for path in build(names, args.out):
        print(f"{path.stat().st_size:>8}  {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
