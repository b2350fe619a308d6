"""Explicit cross-references: where a text cites another article, section or annex.

Korean statutes, decrees and internal rules cite each other constantly: ``제60조``,
``제60조제2항제1호``, ``제18조의2``, ``같은 법 제61조``, ``「근로기준법」 제60조``, ``법 제60조``
(from a 시행령: the parent act), ``영 제30조`` (the enforcement decree), ``별표 1``,
``부칙 제2조``. English documents cite ``Section 4.2``, ``Article 5``, ``Appendix A``.

A reference resolves to a *section key* ``"{law}#{target}"``: ``law`` is the normalised name of
the act (or of the citing document itself when the citation names none), ``target`` the
article-level anchor (``제60조``, ``제18조의2``, ``별표1``, ``부칙제2조``, ``section 4.2``).
Documents register the same keys for the sections they define, so a reference resolves as
soon as both sides are ingested, in any order, without recomputing anything; paragraphs and
items (항/호) stay in the reference's properties.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_HANGUL = re.compile(r"[가-힣]")
_SPACES = re.compile(r"\s+")
_EDGE_PUNCT = "\"'“”‘’()[]{}<>「」『』《》〈〉.,;:!?·-–—"


def normalise_key(name: str) -> str:
    """The comparison form of a name: NFKC, lower case, trimmed punctuation; spaces removed
    in Korean names (``근로 기준법`` = ``근로기준법``), collapsed elsewhere."""
    text = unicodedata.normalize("NFKC", name).strip().strip(_EDGE_PUNCT).strip()
    if _HANGUL.search(text):
        return _SPACES.sub("", text)
    return _SPACES.sub(" ", text).lower()


_DECREE = re.compile(r"\s*(시행령|시행규칙|시행세칙)$")


def law_family(title: str) -> tuple[str, str]:
    """(act key, the document's own kind): ``근로기준법 시행령`` → (``근로기준법``, ``시행령``);
    an internal rule's ``시행세칙`` belongs to its ``규정`` the same way."""
    key = normalise_key(title)
    m = _DECREE.search(key)
    if m:
        return key[: m.start()], m.group(1)
    return key, ""


# -- Korean ---------------------------------------------------------------------------------
_ARTICLE_NUM = r"제\s*(?P<art>\d+)\s*조(?:\s*의\s*(?P<sub>\d+))?"
_PARA = r"(?:\s*제\s*(?P<para>\d+)\s*항)?(?:\s*제\s*(?P<item>\d+)\s*호)?"
_KO_REF = re.compile(
    r"(?:「(?P<bracket>[^」]{1,60})」\s*"
    r"|(?P<named>[가-힣]{1,30}(?:법률|법|시행령|시행규칙|규칙|규정|령))\s+"
    r"|(?P<rel>같은\s*법|같은\s*영|같은\s*규칙|동법|동\s*영|이\s*법|이\s*영|이\s*규칙|이\s*규정"
    r"|법|영|규칙|규정)\s*)?"
    r"(?P<annex>부칙\s*)?" + _ARTICLE_NUM + _PARA
)
_KO_ANNEX = re.compile(r"\[?\s*별표\s*(?P<num>\d+)(?:\s*의\s*(?P<sub>\d+))?\s*\]?")
# an article heading at the start of a line: 제5조(목적) — a definition, not a citation
_KO_HEADING = re.compile(r"^\s*" + _ARTICLE_NUM + r"\s*\((?P<title>[^)]{1,60})\)", re.M)
_KO_ANNEX_HEADING = re.compile(
    r"^\s*\[?\s*별표\s*(?P<num>\d+)(?:\s*의\s*(?P<sub>\d+))?\s*\]?", re.M
)
_KO_SUPPLEMENT = re.compile(r"^\s*부\s*칙", re.M)

# -- English --------------------------------------------------------------------------------
_EN_KINDS = {
    "section": "section",
    "sec.": "section",
    "sec": "section",
    "§": "section",
    "clause": "section",
    "article": "article",
    "art.": "article",
    "appendix": "appendix",
    "annex": "appendix",
    "schedule": "appendix",
    "chapter": "chapter",
}
_EN_REF = re.compile(
    r"(?<![\w])(?P<kind>Sections?|Sec\.|§|Clauses?|Articles?|Art\.|Appendix|Annex|Schedule|"
    r"Chapter)\s*(?P<num>\d+(?:\.\d+)*|[A-Z](?![a-z]))(?:\s*\((?P<para>[a-z0-9]+)\))?"
)
_EN_HEADING = re.compile(
    r"^\s*(?:(?P<kind>Section|Article|Appendix|Annex|Schedule|Chapter|Clause)\s+)?"
    r"(?P<num>\d+(?:\.\d+)*|[A-Z])(?:(?:[.:)]|\s)\s*\S|\s*$)",
    re.I,
)


@dataclass(frozen=True, slots=True)
class Reference:
    """One citation found in a text, resolved to a section key."""

    text: str
    key: str
    law: str
    target: str
    paragraph: int | None = None
    item: int | None = None


def _article_target(art: str, sub: str | None, supplement: bool) -> str:
    target = f"제{int(art)}조" + (f"의{int(sub)}" if sub else "")
    return ("부칙" + target) if supplement else target


def _annex_target(m: re.Match[str]) -> str:
    return f"별표{int(m.group('num'))}" + (f"의{int(m.group('sub'))}" if m.group("sub") else "")


def heading_target(heading: str, in_supplement: bool = False) -> str | None:
    """The article-level anchor a section heading defines, if it is one."""
    text = unicodedata.normalize("NFKC", heading).strip()
    m = _KO_HEADING.match(text) or re.match(r"^\s*" + _ARTICLE_NUM, text)
    if m:
        return _article_target(m.group("art"), m.group("sub"), in_supplement)
    m = _KO_ANNEX_HEADING.match(text)
    if m:
        return _annex_target(m)
    if _KO_SUPPLEMENT.match(text):
        return "부칙"
    m = _EN_HEADING.match(text)
    if m and (m.group("kind") or "." in m.group("num") or m.group("num").isdigit()):
        kind = _EN_KINDS.get((m.group("kind") or "section").lower(), "section")
        return f"{kind} {m.group('num').lower() if kind != 'appendix' else m.group('num')}"
    return None


def article_headings(text: str, in_supplement: bool = False) -> list[tuple[str, str]]:
    """(anchor, title) of every article that starts at a line start inside ``text``
    (regulations often arrive as plain paragraphs, not as headings)."""
    out = [
        (_article_target(m.group("art"), m.group("sub"), in_supplement), m.group("title"))
        for m in _KO_HEADING.finditer(unicodedata.normalize("NFKC", text))
    ]
    return out


def find_references(text: str, own_title: str) -> list[Reference]:
    """Every citation in ``text`` resolved against the citing document ``own_title``.

    ``같은 법`` refers to the act named last before it; ``법``/``영``/``규칙`` in a decree
    refer to its parent act, its enforcement decree and rules. Article headings at line
    starts (``제5조(목적)``) are definitions and are skipped.
    """
    text = unicodedata.normalize("NFKC", text)
    own_key = normalise_key(own_title)
    family, _kind = law_family(own_title)
    headings = {m.start("art") for m in _KO_HEADING.finditer(text)}
    refs: list[Reference] = []
    last_named: str | None = None
    for m in _KO_REF.finditer(text):
        if m.start("art") in headings and not (m.group("bracket") or m.group("named")):
            continue
        law = own_key
        if m.group("bracket") or m.group("named"):
            law = normalise_key(m.group("bracket") or m.group("named"))
            if law in ("이법", "이영", "이규칙", "이규정"):
                law = own_key
            else:
                last_named = law
        elif m.group("rel"):
            rel = _SPACES.sub("", m.group("rel"))
            if rel in ("같은법", "동법"):
                law = last_named or family
            elif rel in ("같은영", "동영"):
                law = (last_named or family) + "시행령"
            elif rel == "같은규칙":
                law = (last_named or family) + "시행규칙"
            elif rel == "법":
                law = family
            elif rel == "영":
                law = family + "시행령"
            elif rel == "규칙":
                law = family + "시행규칙"
            elif rel == "규정":  # from a 시행세칙: the rule it implements
                law = family
        target = _article_target(m.group("art"), m.group("sub"), bool(m.group("annex")))
        refs.append(
            Reference(
                text=m.group(0).strip(),
                key=f"{law}#{target}",
                law=law,
                target=target,
                paragraph=int(m.group("para")) if m.group("para") else None,
                item=int(m.group("item")) if m.group("item") else None,
            )
        )
    for m in _KO_ANNEX.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start : m.start()].strip():
            continue  # an annex heading, not a citation
        target = f"별표{int(m.group('num'))}" + (
            f"의{int(m.group('sub'))}" if m.group("sub") else ""
        )
        refs.append(Reference(m.group(0).strip(), f"{own_key}#{target}", own_key, target))
    for m in _EN_REF.finditer(text):
        line_start = text.rfind("\n", 0, m.start()) + 1
        if not text[line_start : m.start()].strip() and _EN_HEADING.match(text[line_start:]):
            continue  # "Section 4 Scope" at a line start is a heading
        kind = _EN_KINDS.get(m.group("kind").lower().rstrip("s"), "section")
        num = m.group("num")
        target = f"{kind} {num if kind == 'appendix' else num.lower()}"
        refs.append(Reference(m.group(0).strip(), f"{own_key}#{target}", own_key, target))
    seen: set[tuple[str, int | None, int | None]] = set()
    unique: list[Reference] = []
    for r in refs:
        if (r.key, r.paragraph, r.item) not in seen:
            seen.add((r.key, r.paragraph, r.item))
            unique.append(r)
    return unique
