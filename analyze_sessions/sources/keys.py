"""Session keys that an operator lists in a file, one per line."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

STDIN = "-"


class KeysFileError(Exception):
    """The ids file cannot be read; the message names it and says why."""


def read_session_keys(path: str, stdin: IO[Any] | None = None) -> set[str]:
    """
    Return the distinct session keys listed in the file at ``path``.

    ``-`` reads ``stdin`` (standard input by default). Surrounding whitespace,
    blank lines and lines starting with ``#`` are ignored. A line that is not
    UTF-8 text means the file is not a list of keys, so it is an error.
    """
    if path == STDIN:
        stream = sys.stdin if stdin is None else stdin
        # Read bytes where the stream has them, so encoding errors are ours.
        return _collect(getattr(stream, "buffer", stream), "standard input")
    name = f"ids file '{path}'"
    try:
        with open(path, "rb") as lines:
            return _collect(lines, name)
    except OSError as error:
        raise KeysFileError(f"Cannot read {name}: {error.strerror}.") from error


def _collect(lines: Iterable[bytes | str], name: str) -> set[str]:
    keys = set()
    try:
        for number, line in enumerate(lines, start=1):
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise KeysFileError(
                        f"Cannot read {name}: line {number} is not UTF-8 text."
                    ) from None
            if number == 1:
                line = line.lstrip("\ufeff")  # The byte order mark some editors write.
            key = line.strip()
            if key and not key.startswith("#"):
                keys.add(key)
    except OSError as error:
        raise KeysFileError(f"Cannot read {name}: {error.strerror}.") from error
    return keys
