"""
An engine of the tests' own, that keeps sessions where no built-in source
looks: one JSON line a session in the file ``JSONLINES_SESSIONS_FILE``;
and the source that reads them, which the ANALYZE_SESSIONS_SOURCES setting
names for it. What README's "Sessions kept elsewhere" shows, whole.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, SessionBase
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from analyze_sessions.shards import in_range
from analyze_sessions.sources import RawSession, SourceError, SourceOptions, UnsupportedEngine


def _path() -> Path:
    if settings.JSONLINES_SESSIONS_FILE is None:
        raise ImproperlyConfigured("Set JSONLINES_SESSIONS_FILE to keep sessions in a file.")
    return Path(settings.JSONLINES_SESSIONS_FILE)


def _lines() -> dict[str, dict[str, str]]:
    path = _path()
    if not path.exists():
        return {}
    return {row["key"]: row for row in map(json.loads, path.read_text().splitlines())}


def _write(rows: dict[str, dict[str, str]]) -> None:
    text = "".join(json.dumps(row) + "\n" for row in rows.values())
    _path().write_text(text)


class SessionStore(SessionBase):
    def load(self) -> dict[str, Any]:
        row = _lines().get(self.session_key or "")
        if row is None or datetime.fromisoformat(row["expires"]) <= timezone.now():
            self._session_key = None
            return {}
        return self.decode(row["data"])

    def exists(self, session_key: str) -> bool:
        return session_key in _lines()

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()  # type: ignore[attr-defined]
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        if self.session_key is None:
            return self.create()
        rows = _lines()
        if must_create and self.session_key in rows:
            raise CreateError
        data = self.encode(self._get_session(no_load=must_create))  # type: ignore[attr-defined]
        expires = self.get_expiry_date().isoformat()
        rows[self.session_key] = {"key": self.session_key, "data": data, "expires": expires}
        _write(rows)

    def delete(self, session_key: str | None = None) -> None:
        rows = _lines()
        rows.pop(session_key or self.session_key or "", None)
        _write(rows)

    @classmethod
    def clear_expired(cls) -> None:
        now = timezone.now()
        _write({k: r for k, r in _lines().items() if datetime.fromisoformat(r["expires"]) > now})


class JsonLinesSource:
    """The source of the engine's sessions: see analyze_sessions.sources.Source."""

    @classmethod
    def open(
        cls, engine: str, store_class: type[SessionBase], options: SourceOptions
    ) -> JsonLinesSource:
        if settings.JSONLINES_SESSIONS_FILE is None:
            raise UnsupportedEngine("Set JSONLINES_SESSIONS_FILE to read the engine's sessions.")
        return cls(Path(settings.JSONLINES_SESSIONS_FILE), options)

    def __init__(self, path: Path, options: SourceOptions) -> None:
        self.path = path
        self.options = options
        self.keys_listed = 0
        self.keys_not_found = 0
        self.sessions_gone = 0
        self.unreadable: Counter[str] = Counter()

    def total_sessions(self) -> int:
        return sum(1 for _ in self._rows())

    def scan(self) -> Iterator[list[RawSession]]:
        yield from self._batches(self._rows())

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        wanted = {key for key in keys if in_range(key, self.options.key_range)}
        self.keys_listed += len(wanted)
        found = [row for row in self._rows() if row["key"] in wanted]
        self.keys_not_found += len(wanted) - len(found)
        yield from self._batches(found)

    def close(self) -> None:
        pass

    def _rows(self) -> Iterator[dict[str, str]]:
        try:
            with self.path.open() as lines:
                for line in lines:
                    row = json.loads(line)
                    if in_range(row["key"], self.options.key_range):
                        yield row
        except OSError as error:
            raise SourceError(f"Cannot read {self.path}: {error.strerror}.") from error

    def _batches(self, rows: Iterable[dict[str, str]]) -> Iterator[list[RawSession]]:
        batch: list[RawSession] = []
        for row in rows:
            size = len(row["data"].encode())
            if self.options.bigger_than is not None and size <= self.options.bigger_than:
                continue
            data = row["data"] if size <= self.options.max_size else None
            expires = datetime.fromisoformat(row["expires"])
            batch.append(RawSession(row["key"], data, expires, size))
            if len(batch) == self.options.batch_size:
                yield batch
                batch = []
                time.sleep(self.options.sleep_time)
        if batch:
            yield batch
