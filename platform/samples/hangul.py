"""Minimal writers for Hancom's two word-processor formats, used only to build the
sample corpus (no third-party writer exists for HWP 5, and we do not want one).

* :func:`write_hwp5` produces an HWP 5.0 binary document: an OLE2 / Compound File
  Binary container (our own small writer, :func:`build_cfb`) holding ``FileHeader``,
  a deflated ``DocInfo`` (fonts, border fills, character/paragraph shapes, one style)
  and a deflated ``BodyText/Section0`` made of the spec's records
  (``PARA_HEADER``/``PARA_TEXT``/``PARA_CHAR_SHAPE``/``PARA_LINE_SEG``, a section and a
  column definition, and simple tables), plus ``PrvText`` and
  ``\\x05HwpSummaryInformation``.
* :func:`write_hwpx` produces an HWPX (OWPML, KS X 6101) zip package.

Both are written from Hancom's public format documents ("한글 문서 파일 형식 5.0" and
the OWPML schema); layouts that the documents leave vague follow what current readers
accept. Output is deterministic: no clocks, no random ids.

A document is a list of blocks, each a tuple:
``("title", text)``, ``("meta", text)``, ``("heading", text)``, ``("para", text)`` or
``("table", [[cell, ...], ...])`` (first row is the header row).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from xml.sax.saxutils import escape

Block = tuple[str, object]

# --------------------------------------------------------------------------------------
# Compound File Binary (OLE2) writer, version 3 (512-byte sectors)
# --------------------------------------------------------------------------------------

_SECTOR = 512
_MINI = 64
_MINI_CUTOFF = 4096
_FREESECT = 0xFFFFFFFF
_ENDOFCHAIN = 0xFFFFFFFE
_FATSECT = 0xFFFFFFFD
_NOSTREAM = 0xFFFFFFFF


def _cfb_key(name: str) -> tuple[int, str]:
    # CFB orders siblings by name length first, then by upper-cased name.
    return (len(name.encode("utf-16-le")), name.upper())


class _Entry:
    def __init__(self, name: str, kind: int, data: bytes = b"") -> None:
        self.name = name
        self.kind = kind  # 1 storage, 2 stream, 5 root
        self.data = data
        self.children: dict[str, _Entry] = {}
        self.sid = 0
        self.left = self.right = self.child = _NOSTREAM
        self.start = _ENDOFCHAIN
        self.size = 0


def _balanced(entries: list[_Entry]) -> int:
    """Link ``entries`` (sorted) as a balanced binary tree; return the root's id."""
    if not entries:
        return _NOSTREAM
    mid = len(entries) // 2
    node = entries[mid]
    node.left = _balanced(entries[:mid])
    node.right = _balanced(entries[mid + 1 :])
    return node.sid


def build_cfb(streams: dict[str, bytes]) -> bytes:
    """Build a compound file from ``{"Storage/Stream": data}`` (``/`` separates storages).

    Streams under 4096 bytes go to the mini stream, as the format requires. All
    timestamps and class ids are zero, so the output depends on the input only.
    """
    root = _Entry("Root Entry", 5)
    for path in sorted(streams):
        parts = path.split("/")
        node = root
        for part in parts[:-1]:
            node = node.children.setdefault(part, _Entry(part, 1))
        node.children[parts[-1]] = _Entry(parts[-1], 2, streams[path])

    # Directory ids in breadth-first order.
    order: list[_Entry] = [root]
    i = 0
    while i < len(order):
        order.extend(sorted(order[i].children.values(), key=lambda e: _cfb_key(e.name)))
        i += 1
    for sid, entry in enumerate(order):
        entry.sid = sid
    for entry in order:
        kids = sorted(entry.children.values(), key=lambda e: _cfb_key(e.name))
        entry.child = _balanced(kids)

    # Mini stream: small streams packed in 64-byte mini sectors.
    mini_stream = bytearray()
    mini_fat: list[int] = []
    big: list[_Entry] = []
    for entry in order:
        if entry.kind != 2:
            continue
        entry.size = len(entry.data)
        if entry.size == 0:
            entry.start = _ENDOFCHAIN
        elif entry.size < _MINI_CUTOFF:
            first = len(mini_fat)
            count = -(-entry.size // _MINI)
            for k in range(count):
                mini_fat.append(first + k + 1 if k < count - 1 else _ENDOFCHAIN)
            entry.start = first
            mini_stream += entry.data + b"\0" * (count * _MINI - entry.size)
        else:
            big.append(entry)

    def nsect(n: int) -> int:
        return -(-n // _SECTOR)

    dir_sectors = nsect(len(order) * 128)
    minifat_sectors = nsect(len(mini_fat) * 4)
    ministream_sectors = nsect(len(mini_stream))
    big_sectors = sum(nsect(len(e.data)) for e in big)
    body = dir_sectors + minifat_sectors + ministream_sectors + big_sectors
    fat_sectors = 1
    while fat_sectors * (_SECTOR // 4) < body + fat_sectors:
        fat_sectors += 1
    if fat_sectors > 109:
        raise ValueError("compound file too large for this writer (no DIFAT support)")

    fat: list[int] = [_FATSECT] * fat_sectors
    sectors: list[bytes] = []

    def chain(data: bytes) -> int:
        count = nsect(len(data))
        first = fat_sectors + len(sectors)
        for k in range(count):
            fat.append(first + k + 1 if k < count - 1 else _ENDOFCHAIN)
            sectors.append(data[k * _SECTOR : (k + 1) * _SECTOR].ljust(_SECTOR, b"\0"))
        return first

    # Directory (filled in once every start sector is known).
    dir_first = fat_sectors
    for _ in range(dir_sectors):
        fat.append(0)
        sectors.append(b"")
    for k in range(dir_sectors):
        fat[dir_first + k] = dir_first + k + 1 if k < dir_sectors - 1 else _ENDOFCHAIN

    minifat_first = _ENDOFCHAIN
    if mini_fat:
        minifat_first = chain(b"".join(struct.pack("<I", v) for v in mini_fat))
    if mini_stream:
        root.start = chain(bytes(mini_stream))
        root.size = len(mini_stream)
    for entry in big:
        entry.start = chain(entry.data)

    directory = bytearray()
    for entry in order:
        name = entry.name.encode("utf-16-le")
        if len(name) > 62:
            raise ValueError(f"CFB name too long: {entry.name!r}")
        directory += name.ljust(64, b"\0")
        directory += struct.pack("<HBB", len(name) + 2, entry.kind, 1)  # 1 = black
        directory += struct.pack("<III", entry.left, entry.right, entry.child)
        directory += b"\0" * 16 + struct.pack("<I", 0) + b"\0" * 16  # clsid, state, times
        directory += struct.pack("<IQ", entry.start if entry.kind != 1 else 0, entry.size)
    while len(directory) % _SECTOR:
        directory += (
            b"\0" * 64
            + struct.pack("<HBB", 0, 0, 0)
            + struct.pack("<III", _NOSTREAM, _NOSTREAM, _NOSTREAM)
            + b"\0" * 48
        )
    assert len(directory) == dir_sectors * _SECTOR
    for k in range(dir_sectors):
        sectors[k] = bytes(directory[k * _SECTOR : (k + 1) * _SECTOR])

    fat += [_FREESECT] * (fat_sectors * (_SECTOR // 4) - len(fat))
    fat_bytes = b"".join(struct.pack("<I", v) for v in fat)

    header = bytearray()
    header += bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 16
    header += struct.pack("<HHHHH", 0x003E, 0x0003, 0xFFFE, 9, 6)
    header += b"\0" * 6
    header += struct.pack("<II", 0, fat_sectors)  # directory sectors (0 in v3), FAT sectors
    header += struct.pack("<II", dir_first, 0)  # first directory sector, transaction
    header += struct.pack("<II", _MINI_CUTOFF, minifat_first)
    header += struct.pack("<III", minifat_sectors, _ENDOFCHAIN, 0)  # no DIFAT sectors
    difat = list(range(fat_sectors)) + [_FREESECT] * (109 - fat_sectors)
    header += b"".join(struct.pack("<I", v) for v in difat)
    assert len(header) == _SECTOR
    return bytes(header) + fat_bytes + b"".join(sectors)


# --------------------------------------------------------------------------------------
# HWP 5.0
# --------------------------------------------------------------------------------------

_TAG = 0x10
TAG_DOCUMENT_PROPERTIES = _TAG + 0
TAG_ID_MAPPINGS = _TAG + 1
TAG_FACE_NAME = _TAG + 3
TAG_BORDER_FILL = _TAG + 4
TAG_CHAR_SHAPE = _TAG + 5
TAG_TAB_DEF = _TAG + 6
TAG_PARA_SHAPE = _TAG + 9
TAG_STYLE = _TAG + 10
TAG_PARA_HEADER = _TAG + 50
TAG_PARA_TEXT = _TAG + 51
TAG_PARA_CHAR_SHAPE = _TAG + 52
TAG_PARA_LINE_SEG = _TAG + 53
TAG_CTRL_HEADER = _TAG + 55
TAG_LIST_HEADER = _TAG + 56
TAG_PAGE_DEF = _TAG + 57
TAG_FOOTNOTE_SHAPE = _TAG + 58
TAG_PAGE_BORDER_FILL = _TAG + 59
TAG_TABLE = _TAG + 61

HWP_VERSION = (5, 0, 3, 4)
FONT_NAME = "나눔고딕"

# A4 portrait in HWPUNIT (1/7200 inch) and the text width left by 30 mm side margins.
PAGE_W, PAGE_H = 59528, 84188
MARGIN_LR, MARGIN_T, MARGIN_B, MARGIN_HF = 8504, 5668, 4252, 4252
TEXT_W = PAGE_W - 2 * MARGIN_LR

# Character shapes: 0 body 10 pt, 1 title 16 pt bold, 2 heading 11 pt bold, 3 small 9 pt.
_CHAR_SHAPES = [(1000, False), (1600, True), (1100, True), (900, False)]
# Paragraph shapes: 0 body (justify), 1 title (centre), 2 heading, 3 table cell (left),
# 4 the centred line under a title.
_PARA_SHAPES = [
    # (alignment, spacing before, spacing after)  alignment: 0 justify, 1 left, 3 centre
    (0, 0, 600),
    (3, 0, 1600),
    (1, 1000, 600),
    (1, 0, 0),
    (3, 0, 1200),
]
# (para shape, char shape) for each block kind; "meta" is the centred line under a title.
_SHAPES_FOR = {"para": (0, 0), "title": (1, 1), "heading": (2, 2), "meta": (4, 3)}


def _ctrl_id(text: str) -> int:
    """Control ids are four ASCII characters stored as a big-endian-read UINT32."""
    return int.from_bytes(text.encode("ascii"), "big")


def _record(tag: int, level: int, data: bytes) -> bytes:
    size = len(data)
    if size >= 0xFFF:
        return struct.pack("<II", tag | (level << 10) | (0xFFF << 20), size) + data
    return struct.pack("<I", tag | (level << 10) | (size << 20)) + data


def _hwp_string(text: str) -> bytes:
    raw = text.encode("utf-16-le")
    return struct.pack("<H", len(raw) // 2) + raw


def _deflate(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(data) + comp.flush()


def _file_header() -> bytes:
    major, minor, build, rev = HWP_VERSION
    data = b"HWP Document File".ljust(32, b"\0")
    data += struct.pack("<I", (major << 24) | (minor << 16) | (build << 8) | rev)
    data += struct.pack("<I", 0x1)  # properties: bit 0 = compressed
    data += struct.pack("<I", 0)  # licence flags
    data += struct.pack("<I", 0)  # EncryptVersion
    data += struct.pack("<B", 0)  # KOGL licence country
    return data.ljust(256, b"\0")


def _border_fill(solid: bool) -> bytes:
    data = struct.pack("<H", 0)
    for _ in range(4):  # left, right, top, bottom: line type, width, colour
        data += struct.pack("<BBI", 1 if solid else 0, 1, 0x000000)
    data += struct.pack("<BBI", 0, 0, 0x000000)  # diagonal
    data += struct.pack("<I", 0)  # fill type: none
    data += struct.pack("<I", 0)  # size of additional fill data
    return data


def _char_shape(size: int, bold: bool) -> bytes:
    data = struct.pack("<7H", *([0] * 7))  # face name id per language
    data += bytes([100] * 7)  # width ratio %
    data += bytes([0] * 7)  # letter spacing %
    data += bytes([100] * 7)  # relative size %
    data += bytes([0] * 7)  # vertical offset %
    data += struct.pack("<iI", size, 0x2 if bold else 0)
    data += struct.pack("<bb", 10, 10)  # shadow gaps
    data += struct.pack("<IIII", 0x000000, 0x000000, 0xFFFFFFFF, 0xB2B2B2)
    data += struct.pack("<H", 2)  # border fill id (1-based)
    data += struct.pack("<I", 0x000000)  # strike-out colour
    return data


def _para_shape(align: int, before: int, after: int) -> bytes:
    attr1 = (align & 0x7) << 2  # line spacing kind 0 = percent
    data = struct.pack("<I", attr1)
    data += struct.pack("<iiiiii", 0, 0, 0, before, after, 160)
    data += struct.pack("<HHH", 0, 0, 2)  # tab def id, numbering id, border fill id
    data += struct.pack("<hhhh", 0, 0, 0, 0)  # border spacing
    data += struct.pack("<III", 0, 0, 160)  # attr2, attr3 (percent), line spacing
    data += struct.pack("<I", 0)  # outline level (written by current Hancom editors)
    return data


def _doc_info() -> bytes:
    out = b""
    out += _record(TAG_DOCUMENT_PROPERTIES, 0, struct.pack("<7H3I", 1, 1, 1, 1, 1, 1, 1, 0, 0, 0))
    counts = [0] + [1] * 7 + [3, len(_CHAR_SHAPES), 1, 0, 0, len(_PARA_SHAPES), 1, 0, 0, 0]
    out += _record(TAG_ID_MAPPINGS, 0, struct.pack("<18i", *counts))
    for _ in range(7):  # Hangul, Latin, Hanja, Japanese, other, symbol, user
        out += _record(TAG_FACE_NAME, 1, struct.pack("<B", 0) + _hwp_string(FONT_NAME))
    out += _record(TAG_BORDER_FILL, 1, _border_fill(False))  # 1: page border
    out += _record(TAG_BORDER_FILL, 1, _border_fill(False))  # 2: characters, paragraphs
    out += _record(TAG_BORDER_FILL, 1, _border_fill(True))  # 3: table cells
    for size, bold in _CHAR_SHAPES:
        out += _record(TAG_CHAR_SHAPE, 1, _char_shape(size, bold))
    out += _record(TAG_TAB_DEF, 1, struct.pack("<II", 0, 0))
    for align, before, after in _PARA_SHAPES:
        out += _record(TAG_PARA_SHAPE, 1, _para_shape(align, before, after))
    style = _hwp_string("바탕글") + _hwp_string("Normal")
    style += struct.pack("<BBhHHH", 0, 0, 1042, 0, 0, 0)
    out += _record(TAG_STYLE, 1, style)
    return out


def _ext_ctrl(code: int, ctrl: str) -> list[int]:
    cid = _ctrl_id(ctrl)
    return [code, cid & 0xFFFF, cid >> 16, 0, 0, 0, 0, code]


# NanumGothic advance widths (1/1000 em) for U+0020..U+007E; Hangul syllables are 940.
_ASCII_W = (
    280, 424, 430, 606, 606, 1090, 727, 303, 363, 363, 606, 654, 303, 363, 303, 375, 606, 606,
    606, 606, 606, 606, 606, 606, 606, 606, 303, 303, 547, 654, 547, 545, 872, 727, 606, 672,
    727, 576, 503, 797, 727, 242, 363, 641, 484, 969, 727, 787, 577, 787, 622, 545, 545, 727,
    666, 1029, 666, 666, 545, 363, 966, 363, 654, 545, 242, 545, 606, 484, 606, 545, 363, 606,
    606, 242, 269, 520, 242, 908, 606, 606, 606, 606, 363, 424, 363, 606, 484, 848, 510, 464,
    484, 303, 242, 303, 654,
)  # fmt: skip
_NARROW_W = {"·": 290, "「": 351, "」": 351, "‘": 303, "’": 303, "“": 430, "”": 430}
BODY_H = PAGE_H - MARGIN_T - MARGIN_B - 2 * MARGIN_HF
LINE_GAP = 60  # 160 % line spacing: 60 % of the character height between lines


def _char_w(ch: str, size: int) -> int:
    code = ord(ch)
    em = _ASCII_W[code - 0x20] if 0x20 <= code <= 0x7E else _NARROW_W.get(ch, 940)
    return em * size // 1000


def break_lines(text: str, size: int, width: int) -> list[int]:
    """Start offsets of the lines ``text`` wraps into (greedy, breaking after spaces).

    Widths are NanumGothic's, the font the documents name, so the stored line segments
    match what Hangul or rhwp lays out closely enough for pagination.
    """
    starts = [0]
    x = 0
    last_space = -1
    for i, ch in enumerate(text):
        w = _char_w(ch, size)
        if x + w > width and i > starts[-1] and ch != " ":
            cut = last_space + 1 if last_space >= starts[-1] else i
            starts.append(cut)
            x = sum(_char_w(c, size) for c in text[cut : i + 1])
            last_space = -1
            continue
        x += w
        if ch == " ":
            last_space = i
    return starts


def _line_seg(start: int, vpos: int, size: int, width: int, flags: int) -> bytes:
    return struct.pack(
        "<IiiiiiiiI",
        start,
        vpos,
        size,
        size,
        size * 85 // 100,
        size * LINE_GAP // 100,
        0,
        width,
        0x00060000 | flags,
    )


class _Body:
    """Accumulates BodyText records; ``vpos`` is the running vertical position on the page
    (``None`` inside table cells, where positions restart at the top of each cell)."""

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.vpos = 0

    def _advance(self, height: int) -> tuple[int, int]:
        """Place a line of ``height``: its vertical position and page flags."""
        flags = 0
        if self.vpos > 0 and self.vpos + height > BODY_H:
            self.vpos = 0
        if self.vpos == 0:
            flags = 0x3  # first line of the page and of the column
        pos = self.vpos
        self.vpos += height
        return pos, flags

    def paragraph(
        self,
        level: int,
        text: str,
        *,
        para_shape: int,
        char_shape: int,
        style: int = 0,
        last: bool,
        prefix: Sequence[int] = (),
        mask: int = 0,
        width: int = TEXT_W,
        object_height: int = 0,
    ) -> None:
        units = list(prefix) + list(
            struct.unpack(f"<{len(text.encode('utf-16-le')) // 2}H", text.encode("utf-16-le"))
        )
        units.append(0x000D)
        size = _CHAR_SHAPES[char_shape][0]
        _, before, after = _PARA_SHAPES[para_shape]
        segs = []
        self.vpos += before // 2 if self.vpos else 0
        if object_height:  # a line holding a table treated as a character
            pos, flags = self._advance(object_height)
            segs.append(
                struct.pack(
                    "<IiiiiiiiI",
                    0,
                    pos,
                    object_height,
                    object_height,
                    object_height * 85 // 100,
                    0,
                    0,
                    width,
                    0x00060000 | flags,
                )
            )
        else:
            for start in break_lines(text, size, width):
                pos, flags = self._advance(size + size * LINE_GAP // 100)
                segs.append(_line_seg(len(prefix) + start, pos, size, width, flags))
        self.vpos += after // 2
        count = len(units) | (0x80000000 if last else 0)
        header = struct.pack("<IIHBBHHHI", count, mask, para_shape, style, 0, 1, 0, len(segs), 0)
        self.records.append(_record(TAG_PARA_HEADER, level, header))
        self.records.append(
            _record(TAG_PARA_TEXT, level + 1, struct.pack(f"<{len(units)}H", *units))
        )
        self.records.append(
            _record(TAG_PARA_CHAR_SHAPE, level + 1, struct.pack("<II", 0, char_shape))
        )
        self.records.append(_record(TAG_PARA_LINE_SEG, level + 1, b"".join(segs)))


def _section_def_records() -> list[bytes]:
    secd = struct.pack("<I", _ctrl_id("secd"))
    secd += struct.pack("<IHHHIHHHHHH", 0, 1134, 0, 0, 8000, 0, 0, 0, 0, 0, 0)
    page = struct.pack(
        "<9II", PAGE_W, PAGE_H, MARGIN_LR, MARGIN_LR, MARGIN_T, MARGIN_B, MARGIN_HF, MARGIN_HF, 0, 0
    )
    note = struct.pack("<IHHHHhhhhBBI", 0, 0, 0, ord(")"), 1, -1, 850, 567, 283, 1, 1, 0)
    border = struct.pack("<IhhhhH", 1, 1417, 1417, 1417, 1417, 1)
    recs = [_record(TAG_CTRL_HEADER, 1, secd), _record(TAG_PAGE_DEF, 2, page)]
    recs += [_record(TAG_FOOTNOTE_SHAPE, 2, note)] * 2
    recs += [_record(TAG_PAGE_BORDER_FILL, 2, border)] * 3
    cold = struct.pack("<I", _ctrl_id("cold"))
    cold += struct.pack("<HHHBBI", (1 << 2) | (1 << 12), 0, 0, 0, 0, 0)
    recs.append(_record(TAG_CTRL_HEADER, 1, cold))
    return recs


def _table_records(
    body: _Body, rows: Sequence[Sequence[str]], widths: Sequence[int], heights: Sequence[int]
) -> list[bytes]:
    n_rows, n_cols = len(rows), len(rows[0])
    recs: list[bytes] = []
    ctrl = struct.pack("<I", _ctrl_id("tbl "))
    # common object properties: treat as character, size, z-order, outer margins, instance id
    ctrl += struct.pack("<IiiIIi", 0x1 | (1 << 26), 0, 0, TEXT_W, sum(heights), 0)
    ctrl += struct.pack("<hhhhIiH", 283, 283, 283, 283, 0, 0, 0)
    recs.append(_record(TAG_CTRL_HEADER, 1, ctrl))
    table = struct.pack("<IHHh", 0, n_rows, n_cols, 0)
    table += struct.pack("<hhhh", 510, 510, 141, 141)
    table += struct.pack(f"<{n_rows}H", *([n_cols] * n_rows))
    table += struct.pack("<HH", 3, 0)  # border fill id, no zones
    recs.append(_record(TAG_TABLE, 2, table))
    saved, saved_vpos, body.records = body.records, body.vpos, []
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            body.vpos = 0  # line positions inside a cell start at the cell's top
            lh = struct.pack("<HIH", 1, 1 << 21, 0)  # one paragraph, vertically centred
            lh += struct.pack("<HHHHII", c, r, 1, 1, widths[c], heights[r])
            lh += struct.pack("<hhhhH", 510, 510, 141, 141, 3)
            body.records.append(_record(TAG_LIST_HEADER, 2, lh))
            body.paragraph(
                2, str(cell), para_shape=3, char_shape=3, last=True, width=widths[c] - 1020
            )
    cells, body.records, body.vpos = body.records, saved, saved_vpos
    return recs + cells


def _display(text: str) -> int:
    """Width in half-width columns: Hangul and other wide characters take two."""
    return sum(1 if ord(ch) < 0x1100 else 2 for ch in text)


def _row_heights(rows: Sequence[Sequence[str]], widths: Sequence[int]) -> list[int]:
    """Row heights that fit each row's wrapped cell text (9 pt, 160 % line spacing)."""
    size = _CHAR_SHAPES[3][0]
    heights = []
    for row in rows:
        lines = max(
            len(break_lines(str(cell), size, widths[c] - 1020)) for c, cell in enumerate(row)
        )
        heights.append(max(1800, lines * size * (100 + LINE_GAP) // 100 + 282 + 300))
    return heights


def _column_widths(rows: Sequence[Sequence[str]], total: int) -> list[int]:
    display = _display
    weights = [max(14, max(display(str(row[c])) for row in rows)) for c in range(len(rows[0]))]
    widths = [total * w // sum(weights) for w in weights]
    widths[-1] += total - sum(widths)
    return widths


def _body_text(blocks: Sequence[Block]) -> bytes:
    body = _Body()
    first = True
    for i, (kind, value) in enumerate(blocks):
        last = i == len(blocks) - 1
        prefix: list[int] = []
        mask = 0
        if first:
            prefix = _ext_ctrl(2, "secd") + _ext_ctrl(2, "cold")
            mask |= 1 << 2
        if kind == "table":
            rows = value  # type: ignore[assignment]
            widths = _column_widths(rows, TEXT_W)  # type: ignore[arg-type]
            heights = _row_heights(rows, widths)  # type: ignore[arg-type]
            body.paragraph(
                0,
                "",
                para_shape=0,
                char_shape=0,
                last=last,
                prefix=prefix + _ext_ctrl(11, "tbl "),
                mask=mask | (1 << 11),
                object_height=sum(heights) + 566,
            )
            if first:
                body.records += _section_def_records()
            body.records += _table_records(body, rows, widths, heights)  # type: ignore[arg-type]
        else:
            ps, cs = _SHAPES_FOR[kind]
            body.paragraph(
                0, str(value), para_shape=ps, char_shape=cs, last=last, prefix=prefix, mask=mask
            )
            if first:
                body.records += _section_def_records()
        first = False
    return b"".join(body.records)


def plain_text(blocks: Iterable[Block]) -> str:
    lines: list[str] = []
    for kind, value in blocks:
        if kind == "table":
            lines += ["\t".join(str(c) for c in row) for row in value]  # type: ignore[attr-defined]
        else:
            lines.append(str(value))
    return "\r\n".join(lines)


def _summary_info(title: str, subject: str, author: str, keywords: str) -> bytes:
    """``\\x05HwpSummaryInformation``: an OLE property set with Unicode strings."""
    props = [(2, title), (3, subject), (4, author), (5, keywords)]
    entries = [(1, struct.pack("<IhH", 0x0002, 1200, 0))]  # code page: UTF-16 (VT_I2)
    for pid, text in props:
        raw = (text + "\0").encode("utf-16-le")
        value = struct.pack("<II", 0x001F, len(raw) // 2) + raw  # VT_LPWSTR
        value += b"\0" * (-len(value) % 4)
        entries.append((pid, value))
    table_len = 8 + 8 * len(entries)
    offsets, blob = [], b""
    for _, value in entries:
        offsets.append(table_len + len(blob))
        blob += value
    section = struct.pack("<II", table_len + len(blob), len(entries))
    section += b"".join(
        struct.pack("<II", pid, off) for (pid, _), off in zip(entries, offsets, strict=True)
    )
    section += blob
    # FMTID {9FA2B660-1061-11D4-B4C6-006097C09D8C}, in its little-endian byte layout
    fmtid = bytes.fromhex("60B6A29F6110D411B4C6006097C09D8C")
    header = struct.pack("<HHI", 0xFFFE, 0, 0x00020006) + b"\0" * 16 + struct.pack("<I", 1)
    header += fmtid + struct.pack("<I", 48)
    return header + section


def write_hwp5(
    blocks: Sequence[Block], *, title: str, author: str, subject: str = "", keywords: str = ""
) -> bytes:
    """Return an HWP 5.0 document (bytes) for ``blocks``."""
    streams = {
        "FileHeader": _file_header(),
        "DocInfo": _deflate(_doc_info()),
        "BodyText/Section0": _deflate(_body_text(blocks)),
        "PrvText": plain_text(blocks)[:1023].encode("utf-16-le"),
        "\x05HwpSummaryInformation": _summary_info(title, subject, author, keywords),
    }
    return build_cfb(streams)


# --------------------------------------------------------------------------------------
# HWPX (OWPML)
# --------------------------------------------------------------------------------------

_NS = (
    'xmlns:ha="http://www.hancom.co.kr/hwpml/2011/app" '
    'xmlns:hp="http://www.hancom.co.kr/hwpml/2011/paragraph" '
    'xmlns:hp10="http://www.hancom.co.kr/hwpml/2016/paragraph" '
    'xmlns:hs="http://www.hancom.co.kr/hwpml/2011/section" '
    'xmlns:hc="http://www.hancom.co.kr/hwpml/2011/core" '
    'xmlns:hh="http://www.hancom.co.kr/hwpml/2011/head" '
    'xmlns:hhs="http://www.hancom.co.kr/hwpml/2011/history" '
    'xmlns:hm="http://www.hancom.co.kr/hwpml/2011/master-page" '
    'xmlns:hpf="http://www.hancom.co.kr/schema/2011/hpf" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/" '
    'xmlns:opf="http://www.idpf.org/2007/opf/" '
    'xmlns:ooxmlchart="http://www.hancom.co.kr/hwpml/2016/ooxmlchart" '
    'xmlns:hwpunitchar="http://www.hancom.co.kr/hwpml/2016/HwpUnitChar" '
    'xmlns:epub="http://www.idpf.org/2007/ops" '
    'xmlns:config="urn:oasis:names:tc:opendocument:xmlns:config:1.0"'
)
_XML = '<?xml version="1.0" encoding="UTF-8" standalone="yes" ?>'
_LANGS = ("HANGUL", "LATIN", "HANJA", "JAPANESE", "OTHER", "SYMBOL", "USER")


def _hwpx_header() -> str:
    fonts = "".join(
        f'<hh:fontface lang="{lang}" fontCnt="1"><hh:font id="0" face="{FONT_NAME}" '
        f'type="TTF" isEmbedded="0"><hh:typeInfo familyType="FCAT_GOTHIC" weight="6" '
        f'proportion="0" contrast="0" strokeVariation="1" armStyle="1" letterform="1" '
        f'midline="1" xHeight="1"/></hh:font></hh:fontface>'
        for lang in _LANGS
    )

    def border_fill(i: int, solid: bool) -> str:
        kind, width = ("SOLID", "0.12 mm") if solid else ("NONE", "0.1 mm")
        sides = "".join(
            f'<hh:{side}Border type="{kind}" width="{width}" color="#000000"/>'
            for side in ("left", "right", "top", "bottom")
        )
        return (
            f'<hh:borderFill id="{i}" threeD="0" shadow="0" centerLine="NONE" '
            f'breakCellSeparateLine="0"><hh:slash type="NONE" Crooked="0" isCounter="0"/>'
            f'<hh:backSlash type="NONE" Crooked="0" isCounter="0"/>{sides}'
            f'<hh:diagonal type="SOLID" width="0.1 mm" color="#000000"/></hh:borderFill>'
        )

    def per_lang(tag: str, value: str) -> str:
        attrs = " ".join(f'{lang.lower()}="{value}"' for lang in _LANGS)
        return f"<hh:{tag} {attrs}/>"

    char_props = "".join(
        f'<hh:charPr id="{i}" height="{size}" textColor="#000000" shadeColor="none" '
        f'useFontSpace="0" useKerning="0" symMark="NONE" borderFillIDRef="2">'
        f"{per_lang('fontRef', '0')}{per_lang('ratio', '100')}{per_lang('spacing', '0')}"
        f"{per_lang('relSz', '100')}{per_lang('offset', '0')}"
        f"{'<hh:bold/>' if bold else ''}"
        f'<hh:underline type="NONE" shape="SOLID" color="#000000"/>'
        f'<hh:strikeout shape="NONE" color="#000000"/><hh:outline type="NONE"/>'
        f'<hh:shadow type="NONE" color="#B2B2B2" offsetX="10" offsetY="10"/></hh:charPr>'
        for i, (size, bold) in enumerate(_CHAR_SHAPES)
    )
    aligns = {0: "JUSTIFY", 1: "LEFT", 3: "CENTER"}
    para_props = "".join(
        f'<hh:paraPr id="{i}" tabPrIDRef="0" condense="0" fontLineHeight="0" '
        f'snapToGrid="1" suppressLineNumbers="0" checked="0">'
        f'<hh:align horizontal="{aligns[align]}" vertical="BASELINE"/>'
        f'<hh:heading type="NONE" idRef="0" level="0"/>'
        f'<hh:breakSetting breakLatinWord="KEEP_WORD" breakNonLatinWord="KEEP_WORD" '
        f'widowOrphan="0" keepWithNext="0" keepLines="0" pageBreakBefore="0" lineWrap="BREAK"/>'
        f'<hh:autoSpacing eAsianEng="0" eAsianNum="0"/>'
        f'<hh:margin><hc:intent value="0" unit="HWPUNIT"/><hc:left value="0" unit="HWPUNIT"/>'
        f'<hc:right value="0" unit="HWPUNIT"/><hc:prev value="{before}" unit="HWPUNIT"/>'
        f'<hc:next value="{after}" unit="HWPUNIT"/></hh:margin>'
        f'<hh:lineSpacing type="PERCENT" value="160" unit="HWPUNIT"/>'
        f'<hh:border borderFillIDRef="2" offsetLeft="0" offsetRight="0" offsetTop="0" '
        f'offsetBottom="0" connect="0" ignoreMargin="0"/></hh:paraPr>'
        for i, (align, before, after) in enumerate(_PARA_SHAPES)
    )
    return (
        f'{_XML}<hh:head {_NS} version="1.4" secCnt="1">'
        '<hh:beginNum page="1" footnote="1" endnote="1" pic="1" tbl="1" equation="1"/>'
        f'<hh:refList><hh:fontfaces itemCnt="7">{fonts}</hh:fontfaces>'
        f'<hh:borderFills itemCnt="3">{border_fill(1, False)}{border_fill(2, False)}'
        f"{border_fill(3, True)}</hh:borderFills>"
        f'<hh:charProperties itemCnt="{len(_CHAR_SHAPES)}">{char_props}</hh:charProperties>'
        '<hh:tabProperties itemCnt="1"><hh:tabPr id="0" autoTabLeft="0" autoTabRight="0"/>'
        "</hh:tabProperties>"
        f'<hh:paraProperties itemCnt="{len(_PARA_SHAPES)}">{para_props}</hh:paraProperties>'
        '<hh:styles itemCnt="1"><hh:style id="0" type="PARA" name="바탕글" engName="Normal" '
        'paraPrIDRef="0" charPrIDRef="0" nextStyleIDRef="0" langID="1042" lockForm="0"/>'
        "</hh:styles></hh:refList>"
        '<hh:compatibleDocument targetProgram="HWP201X"><hh:layoutCompatibility/>'
        '</hh:compatibleDocument><hh:docOption><hh:linkinfo path="" pageInherit="0" '
        'footnoteInherit="0"/></hh:docOption><hh:trackchageConfig flags="56"/></hh:head>'
    )


def _hwpx_run(text: str, char_shape: int) -> str:
    return f'<hp:run charPrIDRef="{char_shape}"><hp:t>{escape(text)}</hp:t></hp:run>'


def _hwpx_sec_pr() -> str:
    return (
        '<hp:run charPrIDRef="0"><hp:secPr id="" textDirection="HORIZONTAL" spaceColumns="1134" '
        'tabStop="8000" tabStopVal="4000" tabStopUnit="HWPUNIT" outlineShapeIDRef="0" '
        'memoShapeIDRef="0" textVerticalWidthHead="0" masterPageCnt="0">'
        '<hp:grid lineGrid="0" charGrid="0" wonggojiFormat="0"/>'
        '<hp:startNum pageStartsOn="BOTH" page="0" pic="0" tbl="0" equation="0"/>'
        '<hp:visibility hideFirstHeader="0" hideFirstFooter="0" hideFirstMasterPage="0" '
        'border="SHOW_ALL" fill="SHOW_ALL" hideFirstPageNum="0" hideFirstEmptyLine="0" '
        'showLineNumber="0"/>'
        '<hp:lineNumberShape restartType="0" countBy="0" distance="0" startNumber="0"/>'
        f'<hp:pagePr landscape="WIDELY" width="{PAGE_W}" height="{PAGE_H}" gutterType="LEFT_ONLY">'
        f'<hp:margin header="{MARGIN_HF}" footer="{MARGIN_HF}" gutter="0" left="{MARGIN_LR}" '
        f'right="{MARGIN_LR}" top="{MARGIN_T}" bottom="{MARGIN_B}"/></hp:pagePr>'
        '<hp:footNotePr><hp:autoNumFormat type="DIGIT" userChar="" prefixChar="" suffixChar=")" '
        'supscript="0"/><hp:noteLine length="-1" type="SOLID" width="0.12 mm" color="#000000"/>'
        '<hp:noteSpacing betweenNotes="283" belowLine="567" aboveLine="850"/>'
        '<hp:numbering type="CONTINUOUS" newNum="1"/><hp:placement place="EACH_COLUMN" '
        'beneathText="0"/></hp:footNotePr>'
        '<hp:endNotePr><hp:autoNumFormat type="DIGIT" userChar="" prefixChar="" suffixChar=")" '
        'supscript="0"/><hp:noteLine length="14692344" type="SOLID" width="0.12 mm" '
        'color="#000000"/><hp:noteSpacing betweenNotes="0" belowLine="567" aboveLine="850"/>'
        '<hp:numbering type="CONTINUOUS" newNum="1"/><hp:placement place="END_OF_DOCUMENT" '
        'beneathText="0"/></hp:endNotePr>'
        + "".join(
            f'<hp:pageBorderFill type="{t}" borderFillIDRef="1" textBorder="PAPER" '
            'headerInside="0" footerInside="0" fillArea="PAPER"><hp:offset left="1417" '
            'right="1417" top="1417" bottom="1417"/></hp:pageBorderFill>'
            for t in ("BOTH", "EVEN", "ODD")
        )
        + '</hp:secPr><hp:ctrl><hp:colPr id="" type="NEWSPAPER" layout="LEFT" colCount="1" '
        'sameSz="1" sameGap="0"/></hp:ctrl></hp:run>'
    )


class _Ids:
    def __init__(self) -> None:
        self.n = 0

    def next(self) -> int:
        self.n += 1
        return self.n


def _hwpx_para(ids: _Ids, kind: str, text: str, extra: str = "") -> str:
    ps, cs = _SHAPES_FOR[kind]
    return (
        f'<hp:p id="{ids.next()}" paraPrIDRef="{ps}" styleIDRef="0" pageBreak="0" '
        f'columnBreak="0" merged="0">{extra}{_hwpx_run(text, cs)}</hp:p>'
    )


def _hwpx_table(ids: _Ids, rows: Sequence[Sequence[str]], extra: str) -> str:
    n_rows, n_cols = len(rows), len(rows[0])
    widths = _column_widths(rows, TEXT_W)
    heights = _row_heights(rows, widths)
    trs = []
    for r, row in enumerate(rows):
        tds = []
        for c, cell in enumerate(row):
            tds.append(
                f'<hp:tc name="" header="{1 if r == 0 else 0}" hasMargin="0" protect="0" '
                f'editable="0" dirty="0" borderFillIDRef="3"><hp:subList id="" '
                f'textDirection="HORIZONTAL" lineWrap="BREAK" vertAlign="CENTER" '
                f'linkListIDRef="0" linkListNextIDRef="0" textWidth="0" textHeight="0" '
                f'hasTextRef="0" hasNumRef="0"><hp:p id="{ids.next()}" paraPrIDRef="3" '
                f'styleIDRef="0" pageBreak="0" columnBreak="0" merged="0">'
                f"{_hwpx_run(str(cell), 3)}</hp:p></hp:subList>"
                f'<hp:cellAddr colAddr="{c}" rowAddr="{r}"/><hp:cellSpan colSpan="1" rowSpan="1"/>'
                f'<hp:cellSz width="{widths[c]}" height="{heights[r]}"/>'
                f'<hp:cellMargin left="510" right="510" top="141" bottom="141"/></hp:tc>'
            )
        trs.append("<hp:tr>" + "".join(tds) + "</hp:tr>")
    tbl = (
        f'<hp:tbl id="{ids.next()}" zOrder="0" numberingType="TABLE" textWrap="TOP_AND_BOTTOM" '
        f'textFlow="BOTH_SIDES" lock="0" dropcapstyle="None" pageBreak="CELL" repeatHeader="1" '
        f'rowCnt="{n_rows}" colCnt="{n_cols}" cellSpacing="0" borderFillIDRef="3" noAdjust="0">'
        f'<hp:sz width="{TEXT_W}" widthRelTo="ABSOLUTE" height="{sum(heights)}" '
        f'heightRelTo="ABSOLUTE" protect="0"/><hp:pos treatAsChar="1" affectLSpacing="0" '
        f'flowWithText="1" allowOverlap="0" holdAnchorAndSO="0" vertRelTo="PARA" '
        f'horzRelTo="COLUMN" vertAlign="TOP" horzAlign="LEFT" vertOffset="0" horzOffset="0"/>'
        f'<hp:outMargin left="283" right="283" top="283" bottom="283"/>'
        f'<hp:inMargin left="510" right="510" top="141" bottom="141"/>' + "".join(trs) + "</hp:tbl>"
    )
    return (
        f'<hp:p id="{ids.next()}" paraPrIDRef="0" styleIDRef="0" pageBreak="0" columnBreak="0" '
        f'merged="0">{extra}<hp:run charPrIDRef="0">{tbl}<hp:t/></hp:run></hp:p>'
    )


def _hwpx_section(blocks: Sequence[Block]) -> str:
    ids = _Ids()
    paras = []
    for i, (kind, value) in enumerate(blocks):
        extra = _hwpx_sec_pr() if i == 0 else ""
        if kind == "table":
            paras.append(_hwpx_table(ids, value, extra))  # type: ignore[arg-type]
        else:
            paras.append(_hwpx_para(ids, kind, str(value), extra))
    return f"{_XML}<hs:sec {_NS}>" + "".join(paras) + "</hs:sec>"


def _zip_write(zf: zipfile.ZipFile, name: str, data: bytes, *, stored: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=(2025, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.create_system = 0
    info.external_attr = 0
    zf.writestr(info, data, compresslevel=9 if not stored else None)


def write_hwpx(
    blocks: Sequence[Block],
    *,
    title: str,
    author: str,
    subject: str = "",
    keywords: str = "",
    date: str = "2025-01-01T00:00:00Z",
) -> bytes:
    """Return an HWPX (OWPML) package (bytes) for ``blocks``."""
    import io

    content_hpf = (
        f'{_XML}<opf:package {_NS} version="" unique-identifier="" id="">'
        f"<opf:metadata><opf:title>{escape(title)}</opf:title><opf:language>ko</opf:language>"
        f'<opf:meta name="creator" content="text">{escape(author)}</opf:meta>'
        f'<opf:meta name="subject" content="text">{escape(subject)}</opf:meta>'
        f'<opf:meta name="description" content="text"/>'
        f'<opf:meta name="lastsaveby" content="text">{escape(author)}</opf:meta>'
        f'<opf:meta name="CreatedDate" content="text">{date}</opf:meta>'
        f'<opf:meta name="ModifiedDate" content="text">{date}</opf:meta>'
        f'<opf:meta name="keyword" content="text">{escape(keywords)}</opf:meta></opf:metadata>'
        '<opf:manifest><opf:item id="header" href="Contents/header.xml" '
        'media-type="application/xml"/><opf:item id="section0" href="Contents/section0.xml" '
        'media-type="application/xml"/><opf:item id="settings" href="settings.xml" '
        'media-type="application/xml"/></opf:manifest><opf:spine><opf:itemref idref="header" '
        'linear="yes"/><opf:itemref idref="section0" linear="yes"/></opf:spine></opf:package>'
    )
    container = (
        f'{_XML}<ocf:container xmlns:ocf="urn:oasis:names:tc:opendocument:xmlns:container" '
        'xmlns:hpf="http://www.hancom.co.kr/schema/2011/hpf"><ocf:rootfiles>'
        '<ocf:rootfile full-path="Contents/content.hpf" '
        'media-type="application/hwpml-package+xml"/>'
        '<ocf:rootfile full-path="Preview/PrvText.txt" media-type="text/plain"/>'
        "</ocf:rootfiles></ocf:container>"
    )
    manifest = (
        f'{_XML}<odf:manifest xmlns:odf="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"/>'
    )
    version = (
        f'{_XML}<hv:HCFVersion xmlns:hv="http://www.hancom.co.kr/hwpml/2011/version" '
        'tagetApplication="WORDPROCESSOR" major="5" minor="1" micro="1" buildNumber="0" '
        'os="1" xmlVersion="1.4" application="LLMFlow samples" appVersion="1.0"/>'
    )
    settings = (
        f'{_XML}<ha:HWPApplicationSetting xmlns:ha="http://www.hancom.co.kr/hwpml/2011/app" '
        'xmlns:config="urn:oasis:names:tc:opendocument:xmlns:config:1.0">'
        '<ha:CaretPosition listIDRef="0" paraIDRef="0" pos="0"/></ha:HWPApplicationSetting>'
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _zip_write(zf, "mimetype", b"application/hwp+zip", stored=True)
        _zip_write(zf, "version.xml", version.encode())
        _zip_write(zf, "Contents/header.xml", _hwpx_header().encode())
        _zip_write(zf, "Contents/section0.xml", _hwpx_section(blocks).encode())
        _zip_write(zf, "Preview/PrvText.txt", plain_text(blocks)[:1023].encode("utf-8"))
        _zip_write(zf, "settings.xml", settings.encode())
        _zip_write(zf, "META-INF/container.xml", container.encode())
        _zip_write(zf, "Contents/content.hpf", content_hpf.encode())
        _zip_write(zf, "META-INF/manifest.xml", manifest.encode())
    return buf.getvalue()
