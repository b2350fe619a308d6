"""Per-element language guess from the scripts a text is written in.

Why not ``langdetect``/``lingua``: chunking and lexical analysis only need to know which
analyser to run on an element (Kiwi for Korean, a Latin tokenizer otherwise). A script
count answers that deterministically in microseconds, works on two-word headings where
statistical detectors guess, and needs no model files in an air-gapped install.
Latin-script text is told apart with a handful of stop words per language.
"""

from __future__ import annotations

import re
from typing import Final

_HANGUL: Final = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_KANA: Final = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")
_HAN: Final = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff]")
_LATIN: Final = re.compile(r"[A-Za-z\u00c0-\u024f]")
_CYRILLIC: Final = re.compile(r"[\u0400-\u04ff]")
_ARABIC: Final = re.compile(r"[\u0600-\u06ff]")
_THAI: Final = re.compile(r"[\u0e00-\u0e7f]")
_GREEK: Final = re.compile(r"[\u0370-\u03ff]")
_WORD: Final = re.compile(r"[^\W\d_]+")

# Hangul syllables carry 2-3 Latin letters' worth of text, and Korean business prose embeds
# English terms, so a Hangul share of 30 % of the letters already means "Korean text".
_HANGUL_SHARE: Final = 0.3


def _words(text: str) -> list[str]:
    return text.split()


# Words frequent in one language and rare in the others; one-letter words are left out
# because they collide across languages (Portuguese "a", "e", "o" are English letters too).
_STOP_WORDS: Final[dict[str, frozenset[str]]] = {
    "en": frozenset(
        _words(
            "the and of to in is are was were for with that this on as be by it or from at an "
            "not have has which you we they their there been will would can"
        )
    ),
    "es": frozenset(
        _words(
            "el los las del que en una por con para es son se su al como más está están pero sus"
        )
    ),
    "fr": frozenset(
        _words("le les des du et est une pour dans qui sur avec au aux sont ce cette pas")
    ),
    "de": frozenset(
        _words("der die das und ist nicht mit den dem ein eine zu von für auf sich auch")
    ),
    "pt": frozenset(_words("os as do da dos das que em um uma para com não por são está")),
}


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the main language of ``text``, or ``None`` for text without letters.

    Mixed Korean/English text is ``"ko"`` once Hangul makes up 30 % of the letters.
    """
    hangul = len(_HANGUL.findall(text))
    latin = len(_LATIN.findall(text))
    han = len(_HAN.findall(text))
    kana = len(_KANA.findall(text))
    others = {
        "ru": len(_CYRILLIC.findall(text)),
        "ar": len(_ARABIC.findall(text)),
        "th": len(_THAI.findall(text)),
        "el": len(_GREEK.findall(text)),
    }
    letters = hangul + latin + han + kana + sum(others.values())
    if letters == 0:
        return None
    if hangul and hangul / letters >= _HANGUL_SHARE:
        return "ko"
    if kana and (kana + han) / letters >= 0.5:
        return "ja"
    if han / letters >= 0.5:
        return "ko" if hangul else "zh"
    best_other = max(others, key=lambda code: others[code])
    if others[best_other] > latin:
        return best_other
    if latin >= hangul:
        return _latin_language(text)
    return "ko"


def _latin_language(text: str) -> str:
    """Pick among Latin-script languages by stop-word hits; English when nothing matches."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "en"
    scores = {code: sum(w in stops for w in words) for code, stops in _STOP_WORDS.items()}
    best = max(scores, key=lambda code: scores[code])
    # Weak evidence (short headings, names, table cells) goes to English, the Latin-script
    # language of Korean offices; another language needs two more hits than English.
    return best if scores[best] >= scores["en"] + 2 else "en"
