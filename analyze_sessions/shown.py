"""
How what was read from a store may be shown: session keys cut short, and
names escaped where they could act on a terminal or a spreadsheet.
"""

from __future__ import annotations

# Where a report or a message shows a session key cut short.
KEY_PREFIX_LENGTH = 6

# What makes a spreadsheet read a cell as a formula (OWASP's list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def masked(key: str) -> str:
    """The first characters of a session key: enough to tell keys apart, never to use one."""
    return key[:KEY_PREFIX_LENGTH] + "\u2026" if len(key) > KEY_PREFIX_LENGTH else key


def printable(text: str) -> str:
    """
    ``text``, with anything that could break a line of the report escaped:
    line breaks, a terminal's escape sequences, characters that reorder a
    line, lone surrogates (which no encoding can write).
    """
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows and never runs: ``=1+1`` is ``'=1+1``."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text
