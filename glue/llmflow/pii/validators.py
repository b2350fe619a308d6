"""Checks that raise or drop a pattern match: checksums, ranges, date parts.

Each returns True (the value checks out: score 1.0), False (it cannot be one: dropped,
unless a field label vouches for it) or None (unknown: the pattern's score stands).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Validator = Callable[[str], bool | None]


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit())


def luhn_valid(value: str) -> bool | None:
    """Card numbers: the Luhn check. Failing numbers are kept unscored (None), not dropped:
    test cards and typos still identify a card holder in a document."""
    digits = _digits(value)
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return True if total % 10 == 0 else None


def corp_reg_valid(value: str) -> bool | None:
    """법인등록번호: 13 digits, weights 1,2,1,2…, check digit (10 - sum % 10) % 10."""
    digits = _digits(value)
    if len(digits) != 13:
        return False
    total = sum(int(d) * (1 if i % 2 == 0 else 2) for i, d in enumerate(digits[:12]))
    return True if (10 - total % 10) % 10 == int(digits[12]) else None


def ipv4_valid(value: str) -> bool | None:
    """Version strings ("1.2.3.4" in "v1.2.3.4") are handled by the pattern; here only
    all-zero and broadcast-like dummy addresses are dropped."""
    return False if value in ("0.0.0.0", "255.255.255.255") else None


def pnu_valid(value: str) -> bool | None:
    """필지고유번호 (PNU): 19 digits; the first two are a province code 11-50."""
    return None if 11 <= int(value[:2]) <= 50 else False


def birth_date_valid(value: str) -> bool | None:
    """A Korean-style date with month 1-12 and day 1-31."""
    m = re.search(r"(\d{1,2})월\s?(\d{1,2})일", value)
    if m and not (1 <= int(m.group(1)) <= 12 and 1 <= int(m.group(2)) <= 31):
        return False
    return None
