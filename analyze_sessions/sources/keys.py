"""Session keys that an operator lists in a file, one per line."""

from __future__ import annotations

import sys
from typing import IO, Any

from analyze_sessions.shown import printable
from analyze_sessions.sources import MAX_KEY_LENGTH

STDIN = "-"
# A session key is 32 characters, 40 at most in Django's table: a line
# longer than this is no list of keys (/dev/zero, a binary, a dump).
MAX_LINE_LENGTH = 1024
# Ten times the keys of a store of a million sessions, in about a gigabyte
# of memory; a stream that goes on past it (`yes | ...`) is refused.
MAX_KEYS = 10_000_000
MAX_LINES = 100_000_000


class KeysFileError(Exception):
    """The ids file cannot be read; the message names it and says why."""


def read_session_keys(path: str, stdin: IO[Any] | None = None) -> set[str]:
    """
    Return the distinct session keys listed in the file at ``path``.

    ``-`` reads ``stdin`` (standard input by default). Surrounding whitespace,
    blank lines and lines starting with ``#`` are ignored. A line that is not
    UTF-8 text, or is longer than any key, means the file is not a list of
    keys, so it is an error; so is a file that lists more than ``MAX_KEYS``
    keys or goes on past ``MAX_LINES`` lines. The file is read as a stream,
    a line at a time: a pipe or a device works, and never takes more memory
    than its keys.
    """
    if path == STDIN:
        stream = sys.stdin if stdin is None else stdin
        # Read bytes where the stream has them, so encoding errors are ours.
        return _collect(getattr(stream, "buffer", stream), "standard input")
    name = f"ids file '{printable(path)}'"
    try:
        with open(path, "rb") as lines:
            return _collect(lines, name)
    except OSError as error:
        raise KeysFileError(f"Cannot read {name}: {error.strerror}.") from error


def _collect(lines: IO[Any], name: str) -> set[str]:
    keys: set[str] = set()
    try:
        for number in range(1, MAX_LINES + 1):
            # Room for the longest line, its CRLF, and one more character to tell.
            line = lines.readline(MAX_LINE_LENGTH + 3)
            if not line:
                return keys
            if len(line.rstrip("\r\n" if isinstance(line, str) else b"\r\n")) > MAX_LINE_LENGTH:
                raise KeysFileError(
                    f"Cannot read {name}: line {number} is longer than {MAX_LINE_LENGTH} "
                    f"characters, which no session key is."
                )
            if isinstance(line, bytes):
                try:
                    line = line.decode("utf-8")
                except UnicodeDecodeError:
                    raise KeysFileError(
                        f"Cannot read {name}: line {number} is not UTF-8 text."
                    ) from None
            if number == 1:
                line = line.lstrip("\ufeff")  # The byte order mark some editors write.
            # Past the longest key any store holds, a key is one no store
            # has: kept no longer than that, to be counted not found.
            key = line.strip()[: MAX_KEY_LENGTH + 1]
            if key and not key.startswith("#"):
                keys.add(key)
                if len(keys) > MAX_KEYS:
                    raise KeysFileError(
                        f"Cannot read {name}: it lists more than {MAX_KEYS} keys; split it, "
                        f"or analyze the whole store."
                    )
    except OSError as error:
        raise KeysFileError(f"Cannot read {name}: {error.strerror}.") from error
    raise KeysFileError(f"Cannot read {name}: it goes on past {MAX_LINES} lines.")
