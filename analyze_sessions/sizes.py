"""Sizes as operators write them (``15000``, ``15KB``, ``15KiB``, ``1.5M``)."""

from __future__ import annotations

import re
from decimal import ROUND_FLOOR, Decimal

# SI units are powers of 1000, IEC units and bare letters powers of 1024,
# as in ``ls -h`` and ``du -h``.
_MULTIPLIERS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
}

_SIZE_RE = re.compile(
    r"(?P<number>[0-9]+(?:\.[0-9]+)?) ?(?P<unit>[a-z]*)", re.IGNORECASE | re.ASCII
)

EXAMPLES = "15000, 15KB, 15KiB, 1.5MB or 2M"


class InvalidSize(ValueError):
    """A size that :func:`parse_size` does not accept; the message says why."""


def parse_size(text: str) -> int:
    """
    Return the number of bytes ``text`` stands for.

    A fractional result is rounded down: every stored size is a whole number
    of bytes, so "bigger than 1.5 bytes" and "bigger than 1 byte" select the
    same sessions.
    """
    match = _SIZE_RE.fullmatch(text.strip())
    unit = match["unit"].lower() if match else ""
    if match is None or unit not in _MULTIPLIERS:
        raise InvalidSize(
            f"Invalid size '{text}': give a number of bytes with an optional "
            f"unit, for example {EXAMPLES}."
        )
    size = Decimal(match["number"]) * _MULTIPLIERS[unit]
    return int(size.to_integral_value(rounding=ROUND_FLOOR))


def format_size(size: int) -> str:
    """Format a number of bytes for people: ``512 bytes``, ``15.4 KiB``."""
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if round(value, 1) < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
