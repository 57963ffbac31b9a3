"""The key space cut into ranges: for shards on several machines, and jobs on one."""

from __future__ import annotations

import re

# Django makes session keys of these, and they sort the same way in every
# database's collation: digits, then letters.
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGITS = 3
_SPACE = len(ALPHABET) ** _DIGITS

KeyRange = tuple[str | None, str | None]  # From the first, up to the second; None is open.
EVERY_KEY: KeyRange = (None, None)


class InvalidShard(ValueError):
    """A --shard value that is not K/N; the message says so."""


def key_range(index: int, count: int) -> KeyRange:
    """The ``index``-th (from 0) of ``count`` ranges of about as many random keys each."""
    return _boundary(index, count), _boundary(index + 1, count)


def in_range(key: str, keys: KeyRange) -> bool:
    low, high = keys
    return (low is None or key >= low) and (high is None or key < high)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"``, the second of three shards, as (1, 3): the index from 0, and the count."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if match is None or not 1 <= int(match[1]) <= int(match[2]) <= 1000:
        raise InvalidShard(
            f"Invalid shard '{text}': give K/N, the K-th of N shards, with 1 <= K <= N "
            f"<= 1000, for example 1/3."
        )
    return int(match[1]) - 1, int(match[2])


def _boundary(index: int, count: int) -> str | None:
    if index <= 0 or index >= count:
        return None
    position = index * _SPACE // count
    digits = []
    for _ in range(_DIGITS):
        position, digit = divmod(position, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))
