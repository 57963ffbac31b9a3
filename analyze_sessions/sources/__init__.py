"""Where raw sessions come from: one module per kind of session store."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from importlib import import_module
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.contrib.sessions.backends import cache as cache_engine
from django.contrib.sessions.backends import file as file_engine
from django.contrib.sessions.backends import signed_cookies
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, SessionBase
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone as django_timezone

from analyze_sessions.shards import in_range

# The most a session may hold, stored or once decompressed, unless
# --max-session-size says otherwise: past it, a session is not read whole
# but counted as too large, so that one hostile session cannot take the
# memory of the process that analyzes.
DEFAULT_MAX_SESSION_SIZE = 16 * 1024 * 1024


class RawSession(NamedTuple):
    """
    A session as its store keeps it, before any decoding.

    ``data`` is the encoded string that database and file stores keep, or
    the value a cache keeps, :class:`Packed`, for the source to unpack
    into the session dict (unsigned), or that dict itself; None
    where the session is larger than the bound on what is read, so it was
    not read; a :class:`~analyze_sessions.unpickling.Refused` where a cache
    holds a pickle of a class a session cannot hold. ``stored_size`` is the
    size of what the store holds as the store measures it, so that a size
    filter applied by the store and the sizes reported always agree.
    ``expires_at`` is aware, in UTC (see :func:`aware`), or None.
    """

    key: str
    data: Any
    expires_at: datetime | None
    stored_size: int


class Packed(NamedTuple):
    """
    A value as a cache keeps it, not yet unpacked: whoever can write to the
    cache chose its bytes, so the source's ``unpack()`` makes it into a
    value only where that cannot hold up or take the process that analyzes
    (see :mod:`analyze_sessions.sandbox`).
    """

    payload: Any


def aware(moment: datetime | None) -> datetime | None:
    """
    ``moment`` as an aware datetime. A naive one is read as Django writes
    them: in UTC with ``USE_TZ = True``, in ``TIME_ZONE`` without.
    """
    if moment is None or moment.tzinfo is not None:
        return moment
    if settings.USE_TZ:
        return moment.replace(tzinfo=timezone.utc)
    return django_timezone.make_aware(moment, django_timezone.get_default_timezone())


def valid_key(key: str) -> bool:
    """
    Whether ``key`` could be a session key: made of the characters Django
    makes them of, and short enough to name a file or a cache entry.
    """
    return 0 < len(key) <= MAX_KEY_LENGTH and set(key) <= _VALID_KEY_CHARS


# Django's keys are 32 characters; file names stop at 255, memcached's keys at 250.
MAX_KEY_LENGTH = 200


_VALID_KEY_CHARS = frozenset(VALID_KEY_CHARS)


class UnsupportedEngine(Exception):
    """The configured session engine cannot be scanned; the message says why."""


class SourceError(Exception):
    """The store could not be read; the message says which and why."""


def first_line(error: Exception) -> str:
    """The first line of a library's error message, which may run to several."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(error).__name__


# What a driver's message may quote (a value it was given or read, an
# identifier), and any run of letters and digits long enough to be a session
# key or much of one. A quote that follows a letter or a digit is an
# apostrophe ("doesn't"), not an opening one; a closing quote is not followed
# by one; a quote never closed hides the rest of the line.
_QUOTED_OR_KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9])(['\"`])(.*?)\1(?![A-Za-z0-9])"
    r"|(?<![A-Za-z0-9])['\"`].*"
    r"|[A-Za-z0-9]{16,}"
)


def driver_message(error: Exception, names: Iterable[str] = ()) -> str:
    """
    The first line of a database driver's ``error`` with nothing in it that
    could be data: what it quotes is hidden unless it is one of ``names`` (or
    names joined with dots: the tables, columns and database the query
    named), and so is any run of 16 or more letters and digits that is not
    one of them. A driver quotes values it was given or read
    (``invalid input syntax for type integer: "..."``, ``Duplicate entry
    '...'``), and cron mails what the command prints.
    """
    # MySQLdb's errors hold (code, message), which str() shows as a tuple.
    if len(error.args) == 2 and isinstance(error.args[0], int) and isinstance(error.args[1], str):
        text = error.args[1]
    else:
        text = str(error)
    lines = text.strip().splitlines()
    if not lines:
        return type(error).__name__
    known = set(names)

    def hidden(match: re.Match[str]) -> str:
        quoted = match.group(2)
        shown = match.group(0) if quoted is None else quoted
        if shown and all(part in known for part in shown.split(".")):
            return match.group(0)
        return "(hidden)"

    return _QUOTED_OR_KEY_LIKE.sub(hidden, lines[0]).strip().rstrip(".") or type(error).__name__


def session_store_class(engine: str) -> type[SessionBase]:
    """Return the ``SessionStore`` class of the session engine module ``engine``."""
    try:
        store_class: type[SessionBase] = import_module(engine).SessionStore
    except (ImportError, AttributeError) as error:
        raise UnsupportedEngine(f"Cannot load session engine '{engine}': {error}.") from error
    return store_class


def open_source(
    engine: str,
    store_class: type[SessionBase],
    *,
    scanning: bool,
    model_label: str | None = None,
    using: str = DEFAULT_DB_ALIAS,
    bigger_than: int | None = None,
    batch_size: int = 1000,
    sleep_time: float = 0.0,
    key_range: tuple[str | None, str | None] = (None, None),
    max_size: int = DEFAULT_MAX_SESSION_SIZE,
) -> Source:
    """
    Return the source of the sessions that ``engine`` keeps.

    ``scanning`` says whether every session is to be read (rather than
    listed ones), which some stores cannot do. Only keys in ``key_range``
    are read, listed or counted. A session stored in more than
    ``max_size`` bytes is not read (its ``data`` is None).
    """
    # Each module imports this one, for RawSession.
    from analyze_sessions.sources.cache import cache_source
    from analyze_sessions.sources.database import DatabaseSource, named_model, session_model
    from analyze_sessions.sources.files import FileSource

    options: dict[str, Any] = {
        "bigger_than": bigger_than,
        "batch_size": batch_size,
        "sleep_time": sleep_time,
        "key_range": key_range,
        "max_size": max_size,
    }
    model = named_model(model_label) if model_label else session_model(engine, store_class)
    if model is not None:
        return DatabaseSource(model, using=using, **options)
    if issubclass(store_class, signed_cookies.SessionStore):
        raise UnsupportedEngine(
            f"Session engine '{engine}' keeps sessions in the browser's cookies: "
            f"nothing is stored on the server to analyze."
        )
    if issubclass(store_class, file_engine.SessionStore):
        return FileSource(store_class, **options)
    if issubclass(store_class, cache_engine.SessionStore):
        return cache_source(store_class, scanning=scanning, **options)
    raise UnsupportedEngine(
        f"Session engine '{engine}' keeps sessions where they cannot be found: "
        f"if it keeps them in a model, name it with --model app_label.ModelName."
    )


class Source(Protocol):
    """
    What the command reads sessions from, whatever the store.

    ``unreadable`` counts, by reason, the sessions the store names but that
    could not be read (a file that is a symbolic link, a Redis key that
    holds no string): they are not processed, and are reported apart. With
    listed keys, processed + filtered out + ``keys_not_found`` +
    ``unreadable`` = ``keys_listed``; in a whole scan, processed + filtered
    out + ``unreadable`` + ``sessions_gone`` = the total.
    """

    keys_listed: int
    keys_not_found: int
    unreadable: Counter[str]
    # Sessions a scan listed that were gone when it came to read them
    # (deleted, or expired since), where the store lists before it reads.
    sessions_gone: int

    def total_sessions(self) -> int | None:
        """How many sessions the store holds; None if it cannot count them."""

    def scan(self) -> Iterator[list[RawSession]]:
        """Every session that passes the filters, a batch at a time."""

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        """The listed sessions that pass the filters, a batch at a time."""

    def close(self) -> None:
        """Let go of the connections and files it holds: the run is over."""


class ListingSource:
    """
    What the stores that name each session by its key (files, Redis) share:
    list the names, read them a batch at a time, count what was listed.

    Subclasses set ``batch_size``, ``key_range``, ``keys_listed``,
    ``keys_not_found`` and ``_sessions_seen``, and say how to list the
    session names (``_listed``), name one session (``_name``) and read a
    batch of names (``_read``: the sessions, and how many were gone).
    """

    batch_size: int
    key_range: tuple[str | None, str | None]
    keys_listed: int
    keys_not_found: int
    unreadable: Counter[str]
    sessions_gone: int = 0
    _sessions_seen: int | None

    def total_sessions(self) -> int:
        """Count the sessions; after a whole scan, the ones it listed."""
        if self._sessions_seen is None:
            self._sessions_seen = sum(1 for _ in self._listed())
        return self._sessions_seen

    def scan(self) -> Iterator[list[RawSession]]:
        # Counted as it goes; kept as the total only if the scan gets to the end.
        seen = 0
        names: list[tuple[str, Any]] = []
        for name in self._listed():
            seen += 1
            names.append(name)
            if len(names) == self.batch_size:
                yield from self._read_counting_gone(names)
                names = []
        if names:
            yield from self._read_counting_gone(names)
        self._sessions_seen = seen

    def _read_counting_gone(self, names: list[tuple[str, Any]]) -> Iterator[list[RawSession]]:
        for batch, gone in self._read_in_parts(names):
            self.sessions_gone += gone
            yield batch

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        wanted = sorted(key for key in set(keys) if in_range(key, self.key_range))
        self.keys_listed += len(wanted)
        for start in range(0, len(wanted), self.batch_size):
            chunk = wanted[start : start + self.batch_size]
            # Only a key that could be a session key is looked for: no path
            # or pattern can be smuggled in with one.
            names = [(key, self._name(key)) for key in chunk if valid_key(key)]
            self.keys_not_found += len(chunk) - len(names)
            for batch, missing in self._read_in_parts(names):
                self.keys_not_found += missing
                if batch:
                    yield batch

    def close(self) -> None:
        """Nothing to let go of, unless a store holds a connection."""

    def _read_in_parts(
        self, names: list[tuple[str, Any]]
    ) -> Iterator[tuple[list[RawSession], int]]:
        """``_read(names)``, in parts where a store reads a batch a part at a time."""
        yield self._read(names)

    def _listed(self) -> Iterator[tuple[str, Any]]:
        raise NotImplementedError

    def _name(self, key: str) -> Any:
        raise NotImplementedError

    def _read(self, names: list[tuple[str, Any]]) -> tuple[list[RawSession], int]:
        raise NotImplementedError
