"""Version references ('3', 3, 'latest', an alias): the one place that decides what is a version number.

`str.isdigit()` accepts '²' and '٣' (and int() then fails on one and silently reads the other as 3), and int()
refuses more than 4,300 digits: a version number is 1-10 ASCII digits, in [1, MAX_VERSION].
"""

from __future__ import annotations

import re
from typing import Any

from softprompt.errors import InputError

MAX_VERSION = 2**31 - 1
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _number(v: int, shown: Any) -> int:
    if not 1 <= v <= MAX_VERSION:
        raise InputError(f"version {shown!r} is out of range: version numbers are 1 to {MAX_VERSION}")
    return v


def version_ref(ref: Any) -> int | str | None:
    """None | version number | ASCII-digit string | 'latest' | alias -> None | int | 'latest' | alias.

    Raises InputError for booleans, other types, out-of-range numbers and strings of digits that are not
    ASCII 0-9. Alias strings are returned as they are (the caller checks the name)."""
    if ref is None:
        return None
    if isinstance(ref, bool) or not isinstance(ref, (int, str)):
        raise InputError(f"version={ref!r}: give a version number, an alias or 'latest'")
    if isinstance(ref, int):
        return _number(ref, ref)
    if _ASCII_DIGITS.fullmatch(ref):
        if len(ref) > len(str(MAX_VERSION)):
            raise InputError(f"version {ref[:20]!r}... ({len(ref)} digits) is out of range: version numbers are 1 "
                             f"to {MAX_VERSION}")
        return _number(int(ref), ref)
    if any(ch.isdigit() or ch.isnumeric() for ch in ref) and not ref.isascii():
        raise InputError(f"version {ref[:40]!r} is not a version number: write versions with the ASCII digits "
                         "0-9 (aliases are ASCII letters, digits, '-' and '_')")
    return ref
