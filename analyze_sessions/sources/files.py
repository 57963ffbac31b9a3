"""Sessions kept in files by Django's ``file`` engine, and how to read such files safely."""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.file import SessionStore as FileSessionStore
from django.core.exceptions import ImproperlyConfigured

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.shown import masked
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    ListingSource,
    RawSession,
    SourceError,
    SourceOptions,
    UnsupportedEngine,
    aware,
    not_made_from,
    valid_key,
)

# The reasons a file named like a session is not read, as counted in a
# source's ``unreadable``.
SYMBOLIC_LINK = "symbolic link"
NOT_A_REGULAR_FILE = "not a regular file"
PERMISSION_DENIED = "permission denied"
LOCKED = "locked"

# Reading must not refresh a file's access time, where the system lets us
# say so (Linux, for files we own or as root).
_NOATIME = getattr(os, "O_NOATIME", 0)
# Never follow a link out of the store, and never wait: opening a FIFO or a
# file under a lease without O_NONBLOCK blocks until someone else acts.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_CHUNK = 1024 * 1024
# The earliest expiry there is: what a moment before any datetime becomes.
FIRST_MOMENT = datetime.min.replace(tzinfo=timezone.utc)


class NotThere(Exception):
    """No file has the name: never there, gone since listed, or too long a name to exist."""


class Unreadable(Exception):
    """The name is there, but not as a regular file that may be read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def regular_file_status(path: str) -> os.stat_result:
    """
    The status of the file at ``path``, itself and not what a link points
    to. Raises :class:`NotThere` or :class:`Unreadable` (anything but a
    regular file), or the ``OSError`` of any other failure.
    """
    try:
        status = os.lstat(path)
    except OSError as error:
        raise _classified(error) from error
    _check_regular(status)
    return status


class FileContent(NamedTuple):
    """What was read of a file: see :func:`read_regular_file`."""

    data: bytes | None  # None where the file holds more than the bound.
    size: int
    status: os.stat_result
    head: bytes  # Its first bytes, as many as asked, even when ``data`` is None.


def read_regular_file(path: str, max_size: int, *, head: int = 0) -> FileContent:
    """
    What the regular file at ``path`` holds, or None if it holds more than
    ``max_size`` bytes; its size; the status of the file that was read; and
    its first ``head`` bytes in any case.

    The file is opened without following a link, without waiting, and
    without touching its access time where the system allows; what was
    opened is checked to be a regular file before a byte is read (a device
    or FIFO swapped in since a check by name is caught here). At most
    ``max_size + 1`` bytes are read, whatever size the file claims, since a
    file may grow while it is read. Raises as :func:`regular_file_status`.
    """
    try:
        descriptor = _open(path, _FILE_FLAGS)
    except OSError as error:
        raise _classified(error) from error
    try:
        status = os.fstat(descriptor)
        _check_regular(status)
        if status.st_size > max_size:
            first = os.read(descriptor, head) if head else b""
            return FileContent(None, status.st_size, status, first)
        chunks: list[bytes] = []
        size = 0
        while size <= max_size:
            chunk = os.read(descriptor, min(_READ_CHUNK, max_size + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(descriptor)
    data = b"".join(chunks)
    if size > max_size:  # It grew while it was read.
        return FileContent(None, max(size, status.st_size), status, data[:head])
    return FileContent(data, size, status, data[:head])


def utc_moment(seconds: float) -> datetime | None:
    """
    The moment ``seconds`` after the epoch, aware, in UTC. Past the last
    datetime (or not a number) it is None, "never", as a comparison with
    the clock would judge it; before the first, the first.
    """
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, ValueError, OSError):
        return FIRST_MOMENT if seconds < 0 else None


def listed_names(directory: str) -> Iterator[str]:
    """
    The names in ``directory``, listed without touching its access time
    where the system allows. Raises ``OSError`` if it cannot be listed.
    """
    descriptor = _open(directory, _DIRECTORY_FLAGS)
    try:
        with os.scandir(descriptor) as entries:
            for entry in entries:
                yield entry.name
    finally:
        os.close(descriptor)


def _open(path: str, flags: int) -> int:
    if _NOATIME:
        try:
            return os.open(path, flags | _NOATIME)
        except PermissionError as error:
            # O_NOATIME is refused (EPERM) to whoever neither owns the file
            # nor is root; read it as anyone may, then.
            if error.errno != errno.EPERM:
                raise
    return os.open(path, flags)


def _check_regular(status: os.stat_result) -> None:
    if stat.S_ISLNK(status.st_mode):
        raise Unreadable(SYMBOLIC_LINK)
    if not stat.S_ISREG(status.st_mode):
        raise Unreadable(NOT_A_REGULAR_FILE)


def _classified(error: OSError) -> Exception:
    """What a failure to reach or open a file named like a session means for the count."""
    if error.errno in (errno.ENOENT, errno.ENAMETOOLONG):
        return NotThere()
    if error.errno == errno.ELOOP:  # O_NOFOLLOW met a link.
        return Unreadable(SYMBOLIC_LINK)
    if error.errno in (errno.EACCES, errno.EPERM):
        return Unreadable(PERMISSION_DENIED)
    if error.errno in (errno.ENXIO, errno.ENODEV, errno.EISDIR):
        return Unreadable(NOT_A_REGULAR_FILE)  # A socket, a device without its driver.
    if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
        return Unreadable(LOCKED)  # Another process holds a lease on it.
    return error


class FileSource(ListingSource):
    """
    Read the session files in the engine's directory, never changing one.

    A session file is named with the session cookie's name and then the
    session key, as the engine names them; other names are ignored. Every
    name that could be a session's is listed and counted, whatever it is;
    one that is not a regular file that may be read (a symbolic link, a
    directory, a FIFO, a file we may not read) is counted in ``unreadable``
    by reason and never opened or followed, and one that vanishes while the
    scan runs is skipped. The stored size is the file's size; a file over
    ``max_size`` bytes is not read (its data is None). ``sleep_time``
    seconds pass between two batches.
    """

    @classmethod
    def open(
        cls, engine: str, store_class: type[SessionBase], options: SourceOptions
    ) -> FileSource:
        if not issubclass(store_class, FileSessionStore):
            raise UnsupportedEngine(not_made_from(engine, "file"))
        return cls(store_class, **options.reading())

    def __init__(
        self,
        store_class: type[FileSessionStore],
        *,
        bigger_than: int | None = None,
        batch_size: int = 1000,
        sleep_time: float = 0.0,
        key_range: KeyRange = EVERY_KEY,
        max_size: int = DEFAULT_MAX_SESSION_SIZE,
    ) -> None:
        self.key_range = key_range
        try:
            self.directory: str = store_class._get_storage_path()  # type: ignore[attr-defined]
        except ImproperlyConfigured as error:
            raise UnsupportedEngine(str(error)) from error
        self.prefix = settings.SESSION_COOKIE_NAME
        self.cookie_age = timedelta(seconds=settings.SESSION_COOKIE_AGE)
        self.bigger_than = bigger_than
        self.batch_size = batch_size
        self.sleep_time = sleep_time
        self.keys_listed = 0
        self.keys_not_found = 0
        self._sessions_seen: int | None = None
        self._batches = 0
        self.max_size = max_size
        self.unreadable: Counter[str] = Counter()

    def expiry(self, raw: RawSession, session: dict[str, Any]) -> datetime | None:
        """When the session expires, judged as Django's file engine judges it."""
        expiry = session.get("_session_expiry")
        if not expiry:
            return raw.expires_at
        if isinstance(expiry, str):
            try:
                expiry = datetime.fromisoformat(expiry)
            except ValueError:
                return raw.expires_at
        if isinstance(expiry, datetime):
            # Naive with USE_TZ = False: in TIME_ZONE, as the engine wrote it.
            try:
                return aware(expiry).astimezone(timezone.utc)  # type: ignore[union-attr]
            except (OverflowError, ValueError):  # Off either end of the calendar in UTC.
                return FIRST_MOMENT if expiry.year == datetime.min.year else None
        # A number of seconds counts from each load, so the engine never
        # finds such a session expired.
        return None

    def _expires(self, modified: float) -> datetime | None:
        """When a session whose file was last written at ``modified`` expires."""
        moment = utc_moment(modified)
        try:
            return None if moment is None else moment + self.cookie_age
        except OverflowError:  # Whoever can write the file can set any mtime.
            return None

    def _name(self, key: str) -> str:
        return os.path.join(self.directory, self.prefix + key)

    def _listed(self) -> Iterator[tuple[str, str]]:
        try:
            for name in listed_names(self.directory):
                key = name[len(self.prefix) :]
                # Whatever it is: what cannot be read is counted, not dropped.
                if (
                    name.startswith(self.prefix)
                    and valid_key(key)
                    and in_range(key, self.key_range)
                ):
                    yield key, os.path.join(self.directory, name)
        except OSError as error:
            raise SourceError(
                f"Cannot list the session directory '{self.directory}': {error.strerror}."
            ) from error

    def _read(self, paths: list[tuple[str, str]]) -> tuple[list[RawSession], int]:
        """The sessions in ``paths`` that pass the size filter, and how many are gone."""
        if self._batches and self.sleep_time:
            time.sleep(self.sleep_time)
        self._batches += 1
        batch, missing = [], 0
        for key, path in paths:
            try:
                # By name first, so that a device or FIFO is not even opened.
                status = regular_file_status(path)
                if self.bigger_than is not None and status.st_size <= self.bigger_than:
                    continue
                content = read_regular_file(path, self.max_size)
            except NotThere:
                missing += 1  # Never there, or gone since it was listed.
                continue
            except Unreadable as unreadable:
                self.unreadable[unreadable.reason] += 1
                continue
            except OSError as error:
                # The file's name holds the session key: show only its start.
                raise SourceError(
                    f"Cannot read the session file {self.prefix}{masked(key)} in "
                    f"'{self.directory}': {error.strerror}."
                ) from error
            expires_at = self._expires(content.status.st_mtime)
            # Django writes ASCII; anything else is junk, kept as junk.
            data = content.data
            text = None if data is None else data.decode("ascii", errors="replace")
            batch.append(RawSession(key, text, expires_at, content.size))
        return batch, missing
