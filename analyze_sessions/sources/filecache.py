"""
Sessions kept by Django's ``cache`` engine in a ``FileBasedCache``, read
from its files rather than through the backend.

The backend's ``get()`` deletes every expired file it opens, and unpickles
whatever a file holds with ``pickle.loads()``, which runs any code a pickle
names: reading through it would write to the store, and let whoever can
write to the cache directory run code in the process that analyzes.
"""

from __future__ import annotations

import pickletools
import warnings
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from django.core.cache.backends.base import CacheKeyWarning
from django.core.cache.backends.filebased import FileBasedCache

from analyze_sessions.shown import masked
from analyze_sessions.sources import Packed, RawSession, SourceError, UnsupportedEngine
from analyze_sessions.sources.cache import CacheSource
from analyze_sessions.sources.files import (
    NotThere,
    Unreadable,
    read_regular_file,
    regular_file_status,
    utc_moment,
)
from analyze_sessions.unpickling import Refused, TooLarge, loads

# Enough of a file's start to hold the pickle of its expiry (a float pickles
# to 20 bytes or so), so that a file too large to read still has an expiry.
_EXPIRY_HEAD = 256


class FileCacheSource(CacheSource):
    """
    Read listed sessions from the files of a ``FileBasedCache``, never
    writing, never deleting.

    A file holds the pickle of its expiry (a timestamp, or None for never)
    and then the zlib-compressed pickle of the value, as the backend writes
    them; its name is the one the cache itself makes from the key. An
    expired entry is read like any other, with its expiry in the past, so
    it counts as expired; the backend would have deleted it. Pickles are
    read with :func:`analyze_sessions.unpickling.loads`, so a class a
    session cannot hold is refused by name (the session's data is the
    :class:`~analyze_sessions.unpickling.Refused`). A value over
    ``max_size`` bytes, stored or decompressed, is not read (its data is
    None). The stored size is the file's size.

    File names are hashes of the keys, so session entries cannot be told
    from other cache entries: only sessions whose keys are given are read.
    """

    def __init__(self, cache: FileBasedCache, key_prefix: str, **options: Any) -> None:
        super().__init__(cache, key_prefix, **options)
        # The backend's own naming, so that names always match what it writes.
        self._file_name: Callable[[str], str] = cache._key_to_file  # type: ignore[attr-defined]
        self.directory: str = cache._dir  # type: ignore[attr-defined]

    def scan(self) -> Iterator[list[RawSession]]:
        raise UnsupportedEngine(
            "A file-based cache names its files by hashes of their keys, so its "
            "sessions cannot be told from other entries: pass --ids-from with the "
            "keys of the sessions to analyze."
        )

    def _read_many(self, keys: list[str]) -> tuple[list[RawSession], int]:
        batch, found = [], 0
        for key in keys:
            try:
                raw = self._read(key)
            except NotThere:
                continue
            found += 1
            if raw is not None:
                batch.append(raw)
        return batch, found

    def _read(self, key: str) -> RawSession | None:
        """
        The session, or None if it cannot be read or is filtered out; raises
        NotThere if the cache holds no entry of that name.
        """
        try:
            with warnings.catch_warnings():
                # Its text quotes the whole key, and memcached's limits do not apply here.
                warnings.simplefilter("ignore", CacheKeyWarning)
                path = self._file_name(self.key_prefix + key)
        except Exception as error:  # Whatever the site's own KEY_FUNCTION raises.
            raise SourceError(
                f"Cannot name the cache file of the session {masked(key)}: {type(error).__name__}."
            ) from error
        try:
            status = regular_file_status(path)
            if self.bigger_than is not None and status.st_size <= self.bigger_than:
                return None
            content = read_regular_file(path, self.max_size, head=_EXPIRY_HEAD)
        except Unreadable as unreadable:
            self.unreadable[unreadable.reason] += 1
            return None
        except OSError as error:
            raise SourceError(
                f"Cannot read the cache file of the session {masked(key)} in "
                f"'{self.directory}': {error.strerror}."
            ) from error
        if content.data is None:
            try:
                expires_at, _ = _expiry(content.head)
            except _Corrupt:
                expires_at = None
            return RawSession(key, None, expires_at, content.size)
        if not content.data:
            # An empty file: the backend takes it for an entry that expired
            # at the epoch, and holds no value.
            return RawSession(key, b"", utc_moment(0), content.size)
        try:
            expires_at, end = _expiry(content.data)
        except _Corrupt:  # No value the backend wrote: a bad payload.
            return RawSession(key, content.data, None, content.size)
        return RawSession(key, Packed(content.data[end:]), expires_at, content.size)

    def unpack(self, compressed: bytes) -> Any:
        """The value a file holds after its expiry: zlib-compressed, then pickled."""
        decompressor = zlib.decompressobj()
        try:
            payload = decompressor.decompress(compressed, self.max_size + 1)
        except zlib.error:
            return compressed
        if len(payload) > self.max_size:
            return None
        if not decompressor.eof:  # Cut short.
            return compressed
        try:
            return loads(payload, self.max_size)
        except Refused as refused:
            return refused
        except TooLarge:
            return None
        except Exception:  # Whatever pickle raises on data that is not a pickle.
            return compressed


class _Corrupt(Exception):
    """The file does not start with the pickle of an expiry."""


# The opcodes of the pickle of a number, or None, as the backend writes an
# expiry: read from the opcodes themselves, never unpickled.
_EXPIRY_OPCODES = frozenset(
    {"NONE", "BINFLOAT", "FLOAT", "BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4"}
)
_FRAMING = frozenset({"PROTO", "FRAME", "MEMOIZE"})


def _expiry(data: bytes) -> tuple[datetime | None, int]:
    """
    When the entry whose file starts with ``data`` expires (None: never),
    and where the pickle of its expiry ends, read from its opcodes with
    nothing built. Raises :class:`_Corrupt` where no expiry can be read.
    """
    values, end = [], None
    try:
        for opcode, argument, position in pickletools.genops(data):
            if opcode.name == "STOP":
                end = None if position is None else position + 1
                break
            if opcode.name in _EXPIRY_OPCODES:
                values.append(argument)
            elif opcode.name not in _FRAMING:
                raise _Corrupt
    except ValueError as error:
        raise _Corrupt from error
    if len(values) != 1 or end is None:
        raise _Corrupt
    expiry = values[0]
    if expiry is None:
        return None, end
    if isinstance(expiry, (int, float)) and not isinstance(expiry, bool):
        return utc_moment(expiry), end
    raise _Corrupt
