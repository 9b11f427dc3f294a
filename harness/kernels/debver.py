"""Debian version ordering (deb-version(7)), pure, so "newest 7.2.x" needs no dpkg call."""

from __future__ import annotations

import re
from functools import cmp_to_key

_PART = re.compile(r"(\D*)(\d*)")


def _order(char: str) -> int:
    # '~' sorts before everything, even the end of the string; letters before other symbols.
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_fragment(a: str, b: str) -> int:
    pa, pb = _PART.findall(a), _PART.findall(b)
    for (la, na), (lb, nb) in zip(
        pa + [("", "")] * (len(pb) - len(pa)), pb + [("", "")] * (len(pa) - len(pb)), strict=True
    ):
        if la != lb:
            width = max(len(la), len(lb))
            # Pad with a sentinel that sorts between '~' and everything else: the end of a string.
            ka = [_order(c) for c in la] + [0] * (width - len(la))
            kb = [_order(c) for c in lb] + [0] * (width - len(lb))
            if ka != kb:
                return -1 if ka < kb else 1
        ia, ib = int(na or 0), int(nb or 0)
        if ia != ib:
            return -1 if ia < ib else 1
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, _, rest = version.partition(":") if ":" in version else ("0", "", version)
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "0")
    return int(epoch), upstream, revision


def compare(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders versions `a` and `b`."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_fragment(ua, ub) or _compare_fragment(ra, rb)


def upstream(version: str) -> str:
    """The upstream part: '7.2.13' of '7.2.13-1', '7.3~rc7' of '7.3~rc7-1'."""
    return _split(version)[1]


sort_key = cmp_to_key(compare)
