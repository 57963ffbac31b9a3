"""Where raw sessions come from: one module per kind of session store."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import import_module
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, SessionBase
from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone as django_timezone
from django.utils.module_loading import import_string

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range

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


@dataclass(frozen=True)
class SourceOptions:
    """
    What the command asks of a source: the sessions it is to read, and how
    hard it may work the store.

    ``scanning`` says whether every session is to be read (``scan()``),
    rather than listed ones (``lookup()``), which some stores cannot do.
    Only keys in ``key_range`` (see :func:`analyze_sessions.shards.in_range`)
    are read, listed or counted, and only sessions stored in more than
    ``bigger_than`` bytes are read. A session stored in more than
    ``max_size`` bytes is not read: its ``data`` is None. The store is read
    ``batch_size`` sessions at a time, with a pause of ``sleep_time``
    seconds between two batches. ``model_label`` and ``using`` are
    ``--model`` and ``--database``, for stores that are models.
    """

    scanning: bool = True
    bigger_than: int | None = None
    batch_size: int = 1000
    sleep_time: float = 0.0
    key_range: KeyRange = EVERY_KEY
    max_size: int = DEFAULT_MAX_SESSION_SIZE
    model_label: str | None = None
    using: str = DEFAULT_DB_ALIAS

    def reading(self) -> dict[str, Any]:
        """The options every source takes, as keyword arguments."""
        return {
            "bigger_than": self.bigger_than,
            "batch_size": self.batch_size,
            "sleep_time": self.sleep_time,
            "key_range": self.key_range,
            "max_size": self.max_size,
        }


# Where the sessions of each engine are read from: an engine's module path,
# or that of a class its SessionStore is made from, and the source class
# that reads them. ANALYZE_SESSIONS_SOURCES adds to these, and wins.
BUILT_IN_SOURCES = {
    "django.contrib.sessions.backends.db": "analyze_sessions.sources.database.DatabaseSource",
    "django.contrib.sessions.backends.file": "analyze_sessions.sources.files.FileSource",
    "django.contrib.sessions.backends.cache": "analyze_sessions.sources.cache.CacheSource",
    "django.contrib.sessions.backends.signed_cookies": "analyze_sessions.sources.NothingStored",
    "redis_sessions.session": "analyze_sessions.sources.redis_sessions.RedisSessionsSource",
}

SOURCES_SETTING = "ANALYZE_SESSIONS_SOURCES"


def open_source(engine: str, store_class: type[SessionBase], options: SourceOptions) -> Source:
    """
    Return the source of the sessions that ``engine`` keeps: the one its
    module, or the module of a class its ``SessionStore`` is made from, is
    registered with (:data:`BUILT_IN_SOURCES`, and the site's own in
    ``ANALYZE_SESSIONS_SOURCES``); else, for an engine that keeps sessions
    in a model, the database's. With ``--model``, always the database's.
    """
    from analyze_sessions.sources.database import DatabaseSource, session_model

    if not options.model_label:
        registered = registered_source(engine, store_class)
        if registered is not None:
            found, site_path = registered
            # The command's own classes are trusted wherever they are named.
            if site_path is None or getattr(found, "__module__", "").startswith(_OWN):
                return found.open(engine, store_class, options)
            from analyze_sessions.sources.site import open_site_source

            return open_site_source(found, site_path, engine, store_class, options)
    if not options.model_label and session_model(engine, store_class) is None:
        raise UnsupportedEngine(
            f"Session engine '{engine}' keeps its sessions where this command cannot "
            f"find them: it reads Django's db, cached_db, cache and file engines, "
            f"django-redis-sessions, any engine that keeps sessions in a model (name it "
            f"with --model app_label.ModelName), and any engine that the {SOURCES_SETTING} "
            f'setting maps to a source class (see "Sessions kept elsewhere" in README).'
        )
    return DatabaseSource.open(engine, store_class, options)


def registered_source(
    engine: str, store_class: type[SessionBase]
) -> tuple[SourceClass, str | None] | None:
    """
    The source class registered for ``engine``, or for its
    ``SessionStore``'s classes, and its path where the site registered it.
    """
    site = getattr(settings, SOURCES_SETTING, None) or {}
    if not isinstance(site, dict) or not all(
        isinstance(name, str) and isinstance(path, str) for name, path in site.items()
    ):
        raise UnsupportedEngine(
            f"The {SOURCES_SETTING} setting must map engines' module paths to the dotted "
            f"paths of source classes, both strings."
        )
    sources = {**BUILT_IN_SOURCES, **site}
    modules = [engine] + [
        kind.__module__ for kind in store_class.__mro__ if kind not in (SessionBase, object)
    ]
    for module in modules:
        if module in sources:
            from_site = module in site
            path = sources[module]
            return _source_class(module, path, from_site=from_site), path if from_site else None
    return None


_OWN = "analyze_sessions."


def _source_class(engine: str, path: str, *, from_site: bool) -> SourceClass:
    named = f" that {SOURCES_SETTING} names" if from_site else ""
    try:
        found = import_string(path)
        opens = callable(getattr(found, "open", None))
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # The site's module failed: its message may hold anything.
        raise UnsupportedEngine(
            f"Cannot load the source class '{path}' for session engine '{engine}'{named}: "
            f"{_import_failure(path, error)}."
        ) from error
    if not opens:
        raise UnsupportedEngine(
            f"'{path}', the source class {SOURCES_SETTING} names for session engine "
            f"'{engine}', has no open() class method: see \"Sessions kept elsewhere\" in README."
        )
    source_class: SourceClass = found
    return source_class


def _import_failure(path: str, error: BaseException) -> str:
    """
    What went wrong importing ``path``: the module or class missing, said
    in this command's words, else only the kind of exception the module's
    own code raised.
    """
    module, _, name = path.rpartition(".")
    if (
        isinstance(error, ModuleNotFoundError)
        and error.name
        and (module == error.name or module.startswith(f"{error.name}."))
    ):
        return f"there is no module '{error.name}'"
    if type(error) is ImportError and str(error) in (
        f"{path} doesn't look like a module path",
        f'Module "{module}" does not define a "{name}" attribute/class',
    ):
        if not module:
            return "it is not a dotted path"
        return f"there is no class '{name}' in module '{module}'"
    return f"importing it raised {type(error).__name__}"


def not_made_from(engine: str, built_in: str) -> str:
    """Why a source of Django's ``built_in`` engine cannot read ``engine``."""
    return (
        f"Session engine '{engine}' cannot be read as Django's {built_in} engine, as "
        f"{SOURCES_SETTING} says: its SessionStore is not made from that engine's."
    )


class NothingStored:
    """Sessions kept in the browser's cookies: there is nothing to read."""

    @classmethod
    def open(cls, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Source:
        raise UnsupportedEngine(
            f"Session engine '{engine}' keeps sessions in the browser's cookies: "
            f"nothing is stored on the server to analyze."
        )


class SourceClass(Protocol):
    """
    What ``ANALYZE_SESSIONS_SOURCES`` names for an engine: a class whose
    ``open()`` returns a :class:`Source` of that engine's sessions.
    """

    def open(self, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Source:
        """
        The source of the sessions ``store_class`` (engine ``engine``'s
        ``SessionStore``) keeps, reading them as ``options`` say. Raises
        :class:`UnsupportedEngine`, whose message says why, where they
        cannot be read so: the run does not start.
        """
        ...


class Source(Protocol):
    """
    What the command reads sessions from, whatever the store: what a
    source class's ``open()`` returns (see :class:`SourceClass`).

    ``scan()`` and ``lookup()`` yield lists of :class:`RawSession`, a batch
    at a time, of the sessions that pass the filters of the
    :class:`SourceOptions` it was opened with, each at most once; between
    two batches they pause, and they read nothing the store deletes or
    changes on reading (no access times, no expiry). A store that fails,
    or whose connection is lost past the retries the source allows, raises
    :class:`SourceError` with one sentence that quotes no session's key or
    data: the sessions yielded before are reported, marked partial.

    ``unreadable`` counts, by reason, the sessions the store names but that
    could not be read (a file that is a symbolic link, a Redis key that
    holds no string): they are not processed, and are reported apart. With
    listed keys, processed + filtered out + ``keys_not_found`` +
    ``unreadable`` = ``keys_listed``; in a whole scan, processed + filtered
    out + ``unreadable`` + ``sessions_gone`` = the total.

    A source may also have ``expiry(raw, session)``, the expiry of a
    decoded session where its ``expires_at`` is not the whole story (files);
    ``unpack(payload)``, which makes the payload of a :class:`Packed` into
    the session dict in a sandbox (caches); and ``unreadable_expiry``, how
    many sessions processed had an expiry the store holds but could not
    be read.
    """

    @property
    def keys_listed(self) -> int: ...

    @property
    def keys_not_found(self) -> int: ...

    @property
    def unreadable(self) -> Counter[str]: ...

    @property
    def sessions_gone(self) -> int:
        """
        Sessions a scan listed that were gone when it came to read them
        (deleted, or expired since), where the store lists before it reads.
        """
        ...

    def total_sessions(self) -> int | None:
        """
        How many sessions the store holds, in the key range; None if it
        cannot count them. Called after a whole scan, which may have
        counted them on the way.
        """

    def scan(self) -> Iterator[list[RawSession]]:
        """Every session that passes the filters, a batch at a time."""

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        """
        The listed sessions that pass the filters, a batch at a time:
        ``keys_listed`` counts those in the key range, ``keys_not_found``
        those the store does not hold (or that could not be a session key).
        """

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
