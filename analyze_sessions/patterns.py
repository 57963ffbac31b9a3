"""
Key patterns: session keys that differ only by the ids or random tokens in
them, and the rule that finds those.

A key's pattern has a ``*`` for each of these:

- a UUID;
- a part that is all digits, or all hexadecimal digits and 8 or more long
  (the parts of a key are what ``_``, ``-`` and any character other than an
  ASCII letter or digit separate);
- a run of 4 or more digits inside a part (``cart1234``, not ``oauth2``);
- a random token: 12 or more letters and digits, from one part to the end
  of its run of parts (tokens of base64url have ``_`` and ``-`` in them),
  that mix letters with digits or lower case with upper case, and do not
  read as an identifier. An identifier is ``camelCase`` or ``PascalCase``
  words of 3 or more letters, at most two acronyms of at most 5 capitals
  and two groups of at most 4 digits in all, whose letter pairs are as
  likely as in the words of Python's and Django's own identifiers (see
  ``letter_pairs.json``). All lower case letters, or all upper case, is a
  word, never a token.

A token is a secret as often as not (an OAuth ``state``, a session key): the
report never prints one unless asked (``--show-keys``), and always shows
its key's pattern in place of the key.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A run of parts, and the separators between parts of one.
_RUN = re.compile(r"[A-Za-z0-9_-]+")
_SEPARATORS = re.compile(r"([_-]+)")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]{8,}")
_GLUED_DIGITS = re.compile(r"[0-9]{4,}")
_DIGIT, _LOWER, _UPPER = re.compile("[0-9]"), re.compile("[a-z]"), re.compile("[A-Z]")
# The words of an identifier: acronyms, (capitalised) words, digits, and
# capitals alone (what is left of random mixed case).
_SEGMENT = re.compile(r"[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[A-Z]")
# What names are made of: lower case words, with a version at most.
_NAME_WORD = re.compile(r"[a-z]*[0-9]{0,3}")

TOKEN_LENGTH = 12
# The least mean log2-probability a letter of an identifier's words has.
_LEAST_LIKELINESS = -4.5


class KeyPattern(NamedTuple):
    """A key's pattern, and whether a random token was made ``*`` in it."""

    pattern: str
    token: bool


def key_pattern(key: str) -> KeyPattern:
    """``key`` with its ids and tokens made ``*``: ``search_3a59507b24`` is ``search_*``."""
    # Names of real keys are short and repeat: those are looked up once.
    return _cached_pattern(key) if len(key) <= _CACHED_LENGTH else _pattern(key)


_CACHED_LENGTH = 200
# A token starts in the last parts of a run: a name of thousands of parts
# is not searched from each of them, at a cost that grows as their square.
_MOST_PIECES = 32


def _pattern(key: str) -> KeyPattern:
    token = False

    def run(match: re.Match[str]) -> str:
        nonlocal token
        parts = _SEPARATORS.split(match.group())
        # parts alternates words and separators: words are at even indexes.
        words = (len(parts) + 1) // 2
        for index in range(2 * max(0, words - _MOST_PIECES), len(parts), 2):
            if _starts_token(parts, index):
                token = True
                return "".join(parts[:index]) + "*"
        return "".join(
            _id_pattern(part) if index % 2 == 0 else part for index, part in enumerate(parts)
        )

    pattern = _RUN.sub(run, _UUID.sub("*", key))
    return KeyPattern(pattern, token)


_cached_pattern = lru_cache(maxsize=4096)(_pattern)


def is_token(text: str, pieces: list[str] | None = None) -> bool:
    """
    Whether letters and digits ``text`` look random: see the module's
    docstring. ``pieces`` are its pieces where separators cut it: no word of
    an identifier runs across them.
    """
    if len(text) < TOKEN_LENGTH:
        return False
    has_lower = _LOWER.search(text) is not None
    has_upper = _UPPER.search(text) is not None
    if not (has_lower and has_upper) and not (
        (has_lower or has_upper) and _DIGIT.search(text) is not None
    ):
        return False
    return not _reads_as_identifier(*(pieces or [text]))


def _starts_token(parts: list[str], index: int) -> bool:
    """Whether a token starts at word ``index`` of a run's ``parts`` and runs to its end."""
    word = parts[index]
    if _is_id(word):  # An id is made * on its own.
        return False
    if index + 2 >= len(parts):
        return is_token(word)
    # Tokens of base64url have "_" and "-" in them, so the pieces of one may
    # be short or read as words: a token starts at the first piece that is no
    # word of a name, or at a word too short to be one, or at the word
    # without which the pieces after it are too short to be a token.
    pieces = parts[index::2]
    token = "".join(pieces)
    if _is_word(word):
        return (
            len(token) - len(word) < TOKEN_LENGTH
            and any(not _is_id(piece) and not _is_word(piece) for piece in pieces[1:])
            and is_token(token, pieces)
        )
    return is_token(token, pieces)


def _is_word(piece: str) -> bool:
    """Whether a piece of a key reads as a word of a name, and is long enough to be one."""
    return len(piece) > 2 and bool(_NAME_WORD.fullmatch(piece) or _reads_as_identifier(piece))


def _is_id(piece: str) -> bool:
    return bool(_DIGITS.fullmatch(piece) or _HEX.fullmatch(piece))


def _id_pattern(word: str) -> str:
    if word and _is_id(word):
        return "*"
    return _GLUED_DIGITS.sub("*", word)


def _reads_as_identifier(*pieces: str) -> bool:
    segments = [segment for piece in pieces for segment in _SEGMENT.findall(piece)]
    if len(segments) > sum(map(len, pieces)) / 3:
        return False
    digits = [segment for segment in segments if segment[0].isdigit()]
    if len(digits) > 2 or sum(map(len, digits)) > 4:
        return False
    acronyms = 0
    letters = 0
    likeliness = 0.0
    for segment in segments:
        if segment[0].isdigit():
            continue
        if segment.isupper():
            acronyms += 1
            if acronyms > 1 or len(segment) > 5:
                return False
        elif len(segment) < 3:
            return False
        previous = "^"
        for letter in segment.lower():
            likeliness += _LIKELINESS[previous][letter]
            previous = letter
            letters += 1
    return letters > 0 and likeliness / letters > _LEAST_LIKELINESS


def _likeliness() -> dict[str, dict[str, float]]:
    """log2 of how likely each letter is after another, from letter_pairs.json."""
    pairs = json.loads(Path(__file__).with_name("letter_pairs.json").read_text())["pairs"]
    table = {}
    for before, counts in pairs.items():
        total = sum(counts) + len(counts)  # One more of each: no pair is impossible.
        table[before] = {
            chr(ord("a") + index): math.log2((count + 1) / total)
            for index, count in enumerate(counts)
        }
    return table


_LIKELINESS = _likeliness()
