"""Make Unstructured import and run without network access.

Unstructured classifies paragraphs (Title vs NarrativeText) with ``unstructured.nlp.tokenize``,
which loads spaCy's ``en_core_web_sm`` and, when it is missing, downloads the wheel from GitHub
and pip-installs it into site-packages at run time. In an air-gapped install that hangs for
two minutes and fails; merely importing that module also imports spaCy and through it torch
(about 7 s and 300 MB per worker). Unstructured also sends a telemetry ping when imported.

So, before the first Unstructured import, :func:`ensure_offline`

* opts out of telemetry and the usage notice with Unstructured's documented switches, and
* registers a small regex implementation of ``unstructured.nlp.tokenize``. Its only consumer
  on our code paths is ``partition.text_type``, which needs sentence splitting, word splitting
  and "does this text contain a verb" — the last answered from a verb list, English
  inflections and Korean predicate endings, which also makes the heuristic work for Korean.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import types
from typing import Final

_MODULE: Final = "unstructured.nlp.tokenize"
_lock = threading.Lock()
_done = False


def _words(text: str) -> list[str]:
    return text.split()


_SENTENCE_BREAK: Final = re.compile(r"(?<=[.!?。？！])\s+(?=\S)")
_TOKEN: Final = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")
_EN_VERBS: Final = frozenset(
    _words(
        """is are was were be been being am has have had do does did will would can could shall
        should may might must get gets got make makes made go goes went see sees saw use uses used
        provide provides include includes need needs want wants know knows take takes give gives
        find finds think thinks say says said help helps show shows allow allows let lets become
        becomes keep keeps require requires apply applies contain contains describe describes
        ensure ensures support supports please"""
    )
)
_KO_PREDICATE: Final = re.compile(r"[가-힣](다|요|니다|함|음|됨|임|까|죠|시오|세요)[.!?]?$")


def sent_tokenize(text: str) -> list[str]:
    """Split text into sentences at sentence-final punctuation followed by white space."""
    return [s for s in _SENTENCE_BREAK.split(str(text).strip()) if s]


def word_tokenize(text: str) -> list[str]:
    """Split text into words and punctuation marks."""
    return _TOKEN.findall(str(text))


def pos_tag(text: str) -> list[tuple[str, str]]:
    """Tag tokens ``VB`` when they look like a verb and ``NN`` otherwise.

    Unstructured only asks whether any tag is a verb tag, so two tags are enough.
    """
    return [(token, "VB" if _looks_like_verb(token) else "NN") for token in word_tokenize(text)]


def _looks_like_verb(token: str) -> bool:
    low = token.lower()
    if low in _EN_VERBS:
        return True
    if low.isascii() and low.isalpha():
        return (len(low) > 4 and low.endswith("ed")) or (len(low) > 5 and low.endswith("ing"))
    return _KO_PREDICATE.search(token) is not None


_REPLACEMENTS: Final = {
    "sent_tokenize": sent_tokenize,
    "word_tokenize": word_tokenize,
    "pos_tag": pos_tag,
}


def ensure_offline() -> None:
    """Install the offline tokenizer and telemetry opt-outs; call before importing Unstructured.

    Idempotent and thread-safe. If Unstructured's real tokenizer was already imported by
    someone else, the classifier's references to it are redirected instead.
    """
    global _done
    with _lock:
        if _done:
            return
        # Unstructured reads these switches from the environment at import time; they only
        # turn off network calls and console banners, so setting them process-wide is safe.
        os.environ.setdefault("DO_NOT_TRACK", "1")
        os.environ.setdefault("SCARF_NO_ANALYTICS", "1")
        os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")
        if _MODULE not in sys.modules:
            stub = types.ModuleType(_MODULE, __doc__)
            for name, function in _REPLACEMENTS.items():
                setattr(stub, name, function)
            sys.modules[_MODULE] = stub
            import unstructured.nlp

            setattr(unstructured.nlp, "tokenize", stub)  # noqa: B010 - a submodule attribute
        else:
            from unstructured.partition import text_type

            for name, function in _REPLACEMENTS.items():
                setattr(text_type, name, function)
        _done = True
