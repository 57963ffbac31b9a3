"""
A source of the site's own (ANALYZE_SESSIONS_SOURCES), held to the protocol.

The command's own sources are tested with it; a site's is not, and its
failures must not become tracebacks in a cron mail, or mails that quote
what its exceptions say (a URL with a password, a session's data). So
whatever it raises, returns or yields is checked here: a failure is one
sentence that names the class and the kind of exception, never its
message, and what it yields must be sessions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, TypeVar

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.sources import (
    RawSession,
    Source,
    SourceClass,
    SourceError,
    SourceOptions,
    UnsupportedEngine,
    aware,
)

T = TypeVar("T")

_METHODS = ("scan", "lookup", "total_sessions", "close")
# What a source's batches end with, where None would be a batch that is not one.
_END = object()


def open_site_source(
    found: SourceClass,
    path: str,
    engine: str,
    store_class: type[SessionBase],
    options: SourceOptions,
) -> Source:
    """The source ``found.open()`` returns, checked at every step."""
    try:
        source = found.open(engine, store_class, options)
    except UnsupportedEngine:
        raise
    except SourceError as error:  # The store is not there: the source's own sentence.
        raise UnsupportedEngine(str(error)) from error
    except Exception as error:
        raise UnsupportedEngine(
            f"The source class '{path}' failed to open the sessions of session engine "
            f"'{engine}' ({type(error).__name__})."
        ) from error
    if not all(callable(getattr(source, name, None)) for name in _METHODS):
        raise UnsupportedEngine(
            f"The source class '{path}' did not open a source for session engine '{engine}': "
            f"what its open() returned has no {', '.join(f'{name}()' for name in _METHODS)}."
        )
    return SiteSource(source, path)


class SiteSource:
    """A site's source, whose every answer is checked (see the module's docstring)."""

    def __init__(self, source: Any, path: str) -> None:
        self._source = source
        self._path = path
        # The optional hooks run where their failures are already contained:
        # the decoder counts a session whose expiry or value fails as a bad payload.
        for hook in ("expiry", "unpack"):
            if callable(getattr(source, hook, None)):
                setattr(self, hook, getattr(source, hook))

    @property
    def keys_listed(self) -> int:
        return _count(getattr(self._source, "keys_listed", 0))

    @property
    def keys_not_found(self) -> int:
        return _count(getattr(self._source, "keys_not_found", 0))

    @property
    def sessions_gone(self) -> int:
        return _count(getattr(self._source, "sessions_gone", 0))

    @property
    def unreadable_expiry(self) -> int:
        return _count(getattr(self._source, "unreadable_expiry", 0))

    @property
    def unreadable(self) -> Counter[str]:
        found = getattr(self._source, "unreadable", None)
        if not isinstance(found, dict):
            return Counter()
        return Counter({str(reason): _count(count) for reason, count in found.items()})

    def total_sessions(self) -> int | None:
        total: Any = self._calling("count its sessions", self._source.total_sessions)
        if total is not None and _count(total, -1) < 0:
            raise SourceError(
                f"The source class '{self._path}' counted its sessions as something other "
                f"than a number."
            )
        counted: int | None = total
        return counted

    def scan(self) -> Iterator[list[RawSession]]:
        return self._checked(lambda: self._source.scan())

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        return self._checked(lambda: self._source.lookup(keys))

    def close(self) -> None:
        try:
            self._source.close()
        except Exception:  # The run is over: nothing is left to lose.
            pass

    def _checked(self, batches: Callable[[], Iterable[Any]]) -> Iterator[list[RawSession]]:
        found = iter(self._calling("read its sessions", batches))
        while True:
            batch = self._calling("read its sessions", lambda: next(found, _END))
            if batch is _END:
                break
            yield self._sessions(batch)
        for counted in ("keys_listed", "keys_not_found", "sessions_gone"):
            if _count(getattr(self._source, counted, 0), -1) < 0:
                raise SourceError(
                    f"The source class '{self._path}' kept {counted} as something other than "
                    f"a count."
                )

    def _sessions(self, batch: Any) -> list[RawSession]:
        if not isinstance(batch, (list, tuple)):
            raise self._not_sessions()
        sessions = []
        for item in batch:
            try:
                raw = RawSession(*item)
            except TypeError:
                raise self._not_sessions() from None
            if not (
                isinstance(raw.key, str)
                and (raw.data is None or isinstance(raw.data, (str, dict)))
                and (raw.expires_at is None or isinstance(raw.expires_at, datetime))
                and _count(raw.stored_size, -1) >= 0
            ):
                raise self._not_sessions()
            sessions.append(raw._replace(expires_at=aware(raw.expires_at)))
        return sessions

    def _not_sessions(self) -> SourceError:
        return SourceError(
            f"The source class '{self._path}' yielded something other than lists of "
            f"RawSession(key, data, expires_at, stored_size), of the types README gives."
        )

    def _calling(self, doing: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except (SourceError, KeyboardInterrupt):
            raise
        except Exception as error:
            raise SourceError(
                f"The source class '{self._path}' failed to {doing} ({type(error).__name__})."
            ) from error


def _count(value: Any, otherwise: int = 0) -> int:
    """``value`` if it is a count (a whole number, 0 or more), else ``otherwise``."""
    if type(value) is int and value >= 0:
        return value
    return otherwise
