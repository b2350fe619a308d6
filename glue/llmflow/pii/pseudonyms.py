"""Reversible pseudonyms and format-keeping masks (pure Python, no Presidio import).

``pseudonymize`` replaces each distinct value with a stable pseudonym (``<PERSON_1>``)
for the lifetime of one :class:`Pseudonymizer` — one gateway request — and the mapping
lives only in that object's memory, so a model never sees the values and its answer gets
them back (:meth:`Pseudonymizer.restore`, :class:`StreamRestorer` for streamed answers).
"""

from __future__ import annotations

import re
from collections import Counter

_ALNUM = re.compile(r"[0-9A-Za-z\uac00-\ud7a3]")


def mask_value(entity: str, value: str) -> str:
    """Format-keeping mask: separators stay, so a masked RRN still reads as one.

    Korean practice (개인정보 비식별 조치 가이드라인) keeps what does not identify on its own:
    the surname of a name, the birth date and gender digit of an RRN, the last four digits
    of a card or account, the area code of a phone number.
    """
    if entity == "PERSON" and len(value) >= 2:
        return value[0] + "*" * (len(value) - 1)
    if entity == "EMAIL_ADDRESS" and "@" in value:
        local, _, domain = value.partition("@")
        return local[:1] + "*" * max(len(local) - 1, 1) + "@" + domain
    if entity in ("KR_RRN", "KR_FRN") and len(value) >= 8:
        return value[:8] + _ALNUM.sub("*", value[8:])
    if entity in ("CREDIT_CARD", "KR_BANK_ACCOUNT"):
        keep = _keep_last_digits(value, 4)
        return _ALNUM.sub("*", value[:keep]) + value[keep:]
    if entity in ("PHONE_NUMBER", "FAX_NUMBER"):
        groups = re.split(r"([-. ])", value)
        if len(groups) >= 5:  # area - middle - last: hide the middle group
            groups[2] = "*" * len(groups[2])
            return "".join(groups)
    return _ALNUM.sub("*", value)


def _keep_last_digits(value: str, n: int) -> int:
    seen = 0
    for i in range(len(value) - 1, -1, -1):
        if value[i].isdigit():
            seen += 1
            if seen == n:
                return i
    return len(value)


class Pseudonymizer:
    """Stable pseudonyms for one request; restores them in the model's answer."""

    def __init__(self, pseudonym_format: str = "<{entity}_{n}>") -> None:
        self.pseudonym_format = pseudonym_format
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_pseudonym: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._pattern: re.Pattern[str] | None = None

    def pseudonym(self, entity: str, value: str) -> str:
        """The pseudonym of ``value``: the same value gets the same one every time."""
        key = (entity, value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        self._counts[entity] += 1
        pseudonym = self.pseudonym_format.format(entity=entity, n=self._counts[entity])
        self._by_value[key] = pseudonym
        self._by_pseudonym[pseudonym] = value
        self._pattern = None
        return pseudonym

    @property
    def mapping(self) -> dict[str, str]:
        """pseudonym → original value (in memory only; never log it)."""
        return dict(self._by_pseudonym)

    def restore(self, text: str) -> str:
        """Put the original values back where the answer repeats a pseudonym."""
        if not self._by_pseudonym:
            return text
        return self._regex().sub(lambda m: self._by_pseudonym[m.group(0)], text)

    def stream(self) -> StreamRestorer:
        """A restorer for an answer that arrives in pieces (SSE deltas)."""
        return StreamRestorer(self)

    def _regex(self) -> re.Pattern[str]:
        if self._pattern is None:
            alternatives = sorted(self._by_pseudonym, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(p) for p in alternatives))
        return self._pattern


class StreamRestorer:
    """Restores pseudonyms split across stream chunks ("<PER" + "SON_1>").

    Text is passed on as soon as it cannot be the start of a pseudonym; at most the
    length of the longest pseudonym is held back.
    """

    def __init__(self, pseudonymizer: Pseudonymizer) -> None:
        self.pseudonymizer = pseudonymizer
        self._buffer = ""

    def feed(self, chunk: str) -> str:
        """Restore what can be restored; return the text that is safe to send now."""
        self._buffer += chunk
        pseudonyms = self.pseudonymizer.mapping
        if not pseudonyms:
            out, self._buffer = self._buffer, ""
            return out
        restored = self.pseudonymizer.restore(self._buffer)
        hold = _partial_pseudonym_suffix(restored, pseudonyms)
        self._buffer = restored[len(restored) - hold :] if hold else ""
        return restored[: len(restored) - hold] if hold else restored

    def flush(self) -> str:
        """The rest, at the end of the stream."""
        out, self._buffer = self._buffer, ""
        return out


def _partial_pseudonym_suffix(text: str, pseudonyms: dict[str, str]) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of a pseudonym."""
    longest = max(len(p) for p in pseudonyms)
    for size in range(min(longest - 1, len(text)), 0, -1):
        tail = text[-size:]
        if any(p.startswith(tail) for p in pseudonyms):
            return size
    return 0
