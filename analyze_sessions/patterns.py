"""
Key patterns: session keys that differ only by the ids or random tokens in
them, and the rule that finds those.

A key's parts are what ``_``, ``-``, ``+``, ``/``, ``=`` and ``%`` separate
in a run of those and ASCII letters and digits; any other character ends a
run. A key's pattern has a ``*`` in place of each of these:

- an id: a part of 1 to 5 digits, or of 8 to 15 hexadecimal digits; and a
  run of 4 or more digits inside a part (``cart1234``, not ``oauth2``);
- a token: a UUID; a part of 6 or more digits, or of 16 or more
  hexadecimal digits; and 12 or more letters and digits, in one part or in
  parts that follow one another (tokens of base64 have separators in them),
  that mix letters with digits or lower case with upper case, and do not
  read as words. A part reads as a word when it is lower case letters (a
  version of up to 3 digits after them), or, with 3 or more characters,
  reads as an identifier: ``camelCase`` or ``PascalCase`` words of 3 or
  more letters, at most one acronym of at most 5 capitals and two groups
  of at most 4 digits, whose letter pairs are as likely as in the words of
  Python's and Django's own identifiers (see ``letter_pairs.json``). A
  word or id of up to 4 characters between two pieces of a token is taken
  as one more piece; a word before or after pieces too short to be a token
  is taken with them where together they are one. A part cut short by
  ``…`` (a nested path's key over 100 characters) is a token unless it
  reads as a word. All lower case letters, or all upper case, is never a
  token.

A token is a secret as often as not (an OAuth ``state``, a session key): the
report never prints one unless asked (``--show-keys``), and always shows
its key's pattern in place of the key. An id is shown where its pattern
stands for that one key only.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import NamedTuple

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# A run of parts, and the separators between parts of one.
_RUN = re.compile(r"[A-Za-z0-9_\-+/=%]+")
_SEPARATORS = re.compile(r"([_\-+/=%]+)")
_SHORT_DIGITS = re.compile(r"[0-9]{1,5}")
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]{8,15}")
_LONG_HEX = re.compile(r"[0-9a-fA-F]{16,}")
_GLUED_DIGITS = re.compile(r"[0-9]{4,}")
_DIGIT, _LOWER, _UPPER = re.compile("[0-9]"), re.compile("[a-z]"), re.compile("[A-Z]")
# The words of an identifier: acronyms, (capitalised) words, digits, and
# capitals alone (what is left of random mixed case).
_SEGMENT = re.compile(r"[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]+|[0-9]+|[A-Z]")
# What names are made of: lower case words, with a version at most.
_NAME_WORD = re.compile(r"[a-z]*[0-9]{0,3}")
CUT_MARK = "\u2026"

TOKEN_LENGTH = 12
# The least mean log2-probability a letter of an identifier's words has.
_LEAST_LIKELINESS = -4.5
# What a part is: a word, an id, an id long enough to be a secret, a token
# on its own, or anything else (a piece, maybe, of a token that separators
# cut).
_WORD, _ID, _SECRET_ID, _TOKEN, _PIECE = range(5)


class KeyPattern(NamedTuple):
    """A key's pattern, and whether a token, never shown, was made ``*`` in it."""

    pattern: str
    token: bool


def key_pattern(key: str) -> KeyPattern:
    """``key`` with its ids and tokens made ``*``: ``search_3a59507b24`` is ``search_*``."""
    found = _FOUND.get(key)
    if found is None:
        found = _pattern(key)
        # Names without tokens repeat, and are short: those are kept, so
        # far; a token is seldom seen twice.
        if not found.token and len(key) <= _CACHED_LENGTH:
            if len(_FOUND) >= _CACHED:
                _FOUND.clear()
            _FOUND[key] = found
    return found


_FOUND: dict[str, KeyPattern] = {}
_CACHED = 10_000
_CACHED_LENGTH = 200


def _pattern(key: str) -> KeyPattern:
    token = False

    def run(match: re.Match[str]) -> str:
        nonlocal token
        cut = match.string.startswith(CUT_MARK, match.end())
        pattern, has_token = _run_pattern(match.group(), cut)
        token = token or has_token
        return pattern

    without_uuids = _UUID.sub("\0", key)
    if without_uuids != key:
        token = True
    pattern = _RUN.sub(run, without_uuids).replace("\0", "*")
    return KeyPattern(pattern, token)


def _run_pattern(run: str, cut: bool) -> tuple[str, bool]:
    """A run's pattern, and whether a token was made ``*`` in it."""
    parts = _SEPARATORS.split(run)
    # parts alternates words and separators: words are at even indexes.
    words = parts[0::2]
    kinds = [_kind(word) for word in words]
    if cut and not _is_word(words[-1]):
        kinds[-1] = _TOKEN
    for index in range(1, len(words) - 1):
        # A short word or id between two pieces of a token is one more piece.
        if (
            kinds[index] in (_WORD, _ID)
            and len(words[index]) <= 4
            and kinds[index - 1] in (_PIECE, _TOKEN)
            and kinds[index + 1] in (_PIECE, _TOKEN)
        ):
            kinds[index] = _PIECE
    starred = [False] * len(words)
    # The token each part is a piece of, if any: its pieces make one *.
    spans: list[int | None] = [None] * len(words)
    has_token = False
    index = 0
    while index < len(words):
        if kinds[index] == _ID:
            starred[index] = True
        elif kinds[index] == _SECRET_ID:
            starred[index] = has_token = True
        if kinds[index] not in (_PIECE, _TOKEN):
            index += 1
            continue
        # Pieces and tokens next to one another: one token, cut by separators.
        end = index
        while end < len(words) and kinds[end] in (_PIECE, _TOKEN):
            end += 1
        span = _token_span(words, kinds, index, end)
        if span is not None:
            for inside in range(*span):
                starred[inside], spans[inside] = True, span[0]
            has_token = True
        for inside in range(index, end):
            if kinds[inside] == _TOKEN and not starred[inside]:
                starred[inside] = has_token = True
        index = end
    pattern: list[str] = []
    for index, word in enumerate(words):
        if index and spans[index] is not None and spans[index] == spans[index - 1]:
            pattern.pop()  # The separator between two pieces of one token.
        elif starred[index]:
            pattern.append("*")
        else:
            pattern.append(_GLUED_DIGITS.sub("*", word))
        if 2 * index + 1 < len(parts):
            pattern.append(parts[2 * index + 1])
    return "".join(pattern), has_token


def _token_span(words: list[str], kinds: list[int], start: int, end: int) -> tuple[int, int] | None:
    """
    Where the pieces ``words[start:end]`` make a token, with a word either
    side where they are too short to be one without it; None if they do not.
    """
    if end - start == 1 and kinds[start] == _TOKEN:
        return start, end  # A token on its own, judged already.
    candidates = [(start, end)]
    if sum(map(len, words[start:end])) < TOKEN_LENGTH:
        before = start > 0 and kinds[start - 1] == _WORD
        after = end < len(words) and kinds[end] == _WORD
        candidates += [(start - before, end), (start, end + after), (start - before, end + after)]
    for first, last in candidates:
        pieces = words[first:last]
        if is_token("".join(pieces), pieces):
            return first, last
    return None


def _kind(word: str) -> int:
    if not word:
        return _WORD  # Before a leading separator, or after a trailing one.
    if _DIGITS.fullmatch(word):
        return _ID if _SHORT_DIGITS.fullmatch(word) else _SECRET_ID
    if _HEX.fullmatch(word):
        return _ID
    if _LONG_HEX.fullmatch(word):
        return _SECRET_ID
    if _NAME_WORD.fullmatch(word):
        return _WORD
    if len(word) > 2 and _reads_as_identifier(word):
        return _WORD
    return _TOKEN if len(word) >= TOKEN_LENGTH and _mixed(word) else _PIECE


def is_token(text: str, pieces: list[str] | None = None) -> bool:
    """
    Whether letters and digits ``text`` look random: see the module's
    docstring. ``pieces`` are its pieces where separators cut it: no word of
    an identifier runs across them.
    """
    if len(text) < TOKEN_LENGTH or not _mixed(text):
        return False
    return not _reads_as_identifier(*(pieces or [text]))


def _mixed(text: str) -> bool:
    """Whether ``text`` mixes lower case with upper case, or letters with digits."""
    has_lower = _LOWER.search(text) is not None
    has_upper = _UPPER.search(text) is not None
    if has_lower and has_upper:
        return True
    return (has_lower or has_upper) and _DIGIT.search(text) is not None


def _is_word(piece: str) -> bool:
    """Whether a piece of a key reads as a word of a name, and is long enough to be one."""
    return len(piece) > 2 and bool(_NAME_WORD.fullmatch(piece) or _reads_as_identifier(piece))


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
