"""
A source of the site's own (ANALYZE_SESSIONS_SOURCES), held to the protocol.

The command's own sources are tested with it; a site's is not, and its
failures must not become tracebacks in a cron mail, or mails that quote
what its exceptions say (a URL with a password, a session's data). So
every call into its code, and every attribute read of it, is guarded: a
failure of any kind (SystemExit included; only Ctrl-C goes through) is
one sentence that names the class and the kind of exception, never its
message, its own SourceError and UnsupportedEngine included. What it
returns and yields must be of the exact types the protocol gives, within
bounds, and in the key range asked for; the reasons it gives for
unreadable sessions are shown only where they are plain words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any, TypeVar

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.shards import in_range
from analyze_sessions.sources import (
    Packed,
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
# The largest count or size taken from a site's source: more than any store holds.
MAX_COUNT = 2**63 - 1
# The reasons for unreadable sessions shown: plain words, and at most so many.
_PLAIN_WORDS = re.compile(r"[a-z][a-z0-9 -]{0,39}")
MAX_REASONS = 20
OTHER_REASON = "other reason"


class _Checked(Exception):
    """What a site's source gave is not what the protocol says: the message says so."""


class _Failed(Exception):
    """A site's code failed: its own exception, of whatever kind, is kept as the cause."""


def guarded(call: Callable[[], T]) -> T:
    """``call()``; any failure but Ctrl-C is raised as _Failed, named by its kind."""
    try:
        return call()
    except KeyboardInterrupt:
        raise
    except BaseException as error:
        raise _Failed(type(error).__name__) from error


def open_site_source(
    found: SourceClass,
    path: str,
    engine: str,
    store_class: type[SessionBase],
    options: SourceOptions,
) -> Source:
    """The source ``found.open()`` returns, checked at every step."""
    try:
        source = guarded(lambda: found.open(engine, store_class, options))
        methods = guarded(lambda: [callable(getattr(source, name, None)) for name in _METHODS])
    except _Failed as error:
        raise UnsupportedEngine(
            f"The source class '{path}' failed to open the sessions of session engine "
            f"'{engine}' ({error})."
        ) from error
    if not all(methods):
        raise UnsupportedEngine(
            f"The source class '{path}' did not open a source for session engine '{engine}': "
            f"what its open() returned has no {', '.join(f'{name}()' for name in _METHODS)}."
        )
    return SiteSource(source, path, options)


class SiteSource:
    """A site's source, whose every answer is checked (see the module's docstring)."""

    def __init__(self, source: Any, path: str, options: SourceOptions) -> None:
        self._source = source
        self._path = path
        self._key_range = options.key_range
        # The optional hooks, guarded so that the decoder, which counts a
        # session whose hook fails as a bad payload, sees an Exception.
        for name in ("expiry", "unpack"):
            try:
                hook = guarded(partial(getattr, source, name, None))
            except _Failed as error:
                raise UnsupportedEngine(
                    f"The source class '{path}' failed to give its {name}() hook ({error})."
                ) from error
            if callable(hook):
                setattr(self, name, self._hook(name, hook))

    @property
    def keys_listed(self) -> int:
        return self._count_or_zero("keys_listed")

    @property
    def keys_not_found(self) -> int:
        return self._count_or_zero("keys_not_found")

    @property
    def sessions_gone(self) -> int:
        return self._count_or_zero("sessions_gone")

    @property
    def unreadable_expiry(self) -> int:
        return self._count_or_zero("unreadable_expiry")

    @property
    def unreadable(self) -> Counter[str]:
        try:
            found = guarded(
                lambda: list(dict(getattr(self._source, "unreadable", None) or {}).items())
            )
        except _Failed:
            return Counter()
        counted: Counter[str] = Counter()
        for reason, count in found:
            if _count(count) is None:
                continue
            # An exact str before anything else: a key of its own type could run its code.
            plain = type(reason) is str and _PLAIN_WORDS.fullmatch(reason) is not None
            if not plain or (reason not in counted and len(counted) >= MAX_REASONS):
                reason = OTHER_REASON
            counted[reason] += count
        return counted

    def total_sessions(self) -> int | None:
        total = self._calling("count its sessions", lambda: self._source.total_sessions())
        if total is not None and _count(total) is None:
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
            guarded(lambda: self._source.close())
        except _Failed:  # The run is over: nothing is left to lose.
            pass

    def _checked(self, batches: Callable[[], Iterable[Any]]) -> Iterator[list[RawSession]]:
        found = self._calling("read its sessions", lambda: iter(batches()))
        while True:
            batch = self._calling("read its sessions", lambda: next(found, _END))
            if batch is _END:
                break
            yield self._calling("read its sessions", partial(self._sessions, batch))
        for name in ("keys_listed", "keys_not_found", "sessions_gone"):
            count = self._calling("count what it read", partial(getattr, self._source, name, 0))
            if _count(count) is None:
                raise SourceError(
                    f"The source class '{self._path}' kept {name} as something other than a count."
                )

    def _sessions(self, batch: Any) -> list[RawSession]:
        if type(batch) is not list:
            raise self._not_sessions()
        sessions = []
        for item in batch:
            if type(item) is not RawSession and not (type(item) is tuple and len(item) == 4):
                raise self._not_sessions()
            raw = RawSession(*item)
            # The data as the engine stores it: text. A dict of the site's
            # objects would run their code where nothing contains it; a
            # packed value is unpacked in the sandbox, by the source's hook.
            packed = type(raw.data) is Packed and hasattr(self, "unpack")
            if not (
                type(raw.key) is str
                and (raw.data is None or type(raw.data) is str or packed)
                and _count(raw.stored_size) is not None
            ):
                raise self._not_sessions()
            if in_range(raw.key, self._key_range):
                sessions.append(raw._replace(expires_at=self._moment(raw.expires_at)))
        return sessions

    def _moment(self, moment: Any) -> datetime | None:
        """An expiry as the command keeps them, aware in UTC; None past the calendar."""
        if moment is None:
            return None
        if type(moment) is not datetime:
            raise self._not_sessions()
        try:
            utc = aware(moment)
            return None if utc is None else utc.astimezone(timezone.utc)
        except OverflowError:  # datetime.max, for "never", where it is not in UTC.
            return None

    def _hook(self, name: str, hook: Callable[..., Any]) -> Callable[..., Any]:
        def checked(*args: Any) -> Any:
            result = guarded(lambda: hook(*args))
            if name == "expiry":
                return guarded(partial(self._moment, result))
            # The session dict, None past the bound, or bytes: a bad payload.
            return result if type(result) in (dict, bytes) or result is None else b""

        return checked

    def _count_or_zero(self, name: str) -> int:
        try:
            count = guarded(lambda: getattr(self._source, name, 0))
        except _Failed:
            return 0
        return _count(count) or 0

    def _not_sessions(self) -> _Checked:
        return _Checked(
            f"The source class '{self._path}' yielded something other than lists of "
            f"RawSession(key, data, expires_at, stored_size), of the types README gives."
        )

    def _failed(self, doing: str, error: _Failed) -> SourceError:
        return SourceError(f"The source class '{self._path}' failed to {doing} ({error}).")

    def _calling(self, doing: str, call: Callable[[], T]) -> T:
        try:
            return guarded(call)
        except _Failed as error:
            if isinstance(error.__cause__, _Checked):
                raise SourceError(str(error.__cause__)) from error  # This guard's own sentence.
            raise self._failed(doing, error) from error


def _count(value: Any) -> int | None:
    """``value`` if it is a count: a whole number from 0 to MAX_COUNT, else None."""
    if type(value) is int and 0 <= value <= MAX_COUNT:
        return value
    return None
