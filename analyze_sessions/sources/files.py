"""Sessions kept in files by Django's ``file`` engine."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.file import SessionStore as FileSessionStore
from django.core.exceptions import ImproperlyConfigured

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    ListingSource,
    RawSession,
    SourceError,
    UnsupportedEngine,
    valid_key,
)


class FileSource(ListingSource):
    """
    Read the session files in the engine's directory, never changing one.

    A session file is named with the session cookie's name and then the
    session key, as the engine names them; other files are ignored, and a
    file that vanishes while the scan runs is skipped. The stored size is
    the file's size. ``sleep_time`` seconds pass between two batches.
    """

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
            return expiry
        # A number of seconds counts from each load, so the engine never
        # finds such a session expired.
        return None

    def _name(self, key: str) -> str:
        return os.path.join(self.directory, self.prefix + key)

    def _listed(self) -> Iterator[tuple[str, str]]:
        try:
            entries = os.scandir(self.directory)
        except OSError as error:
            raise SourceError(
                f"Cannot list the session directory '{self.directory}': {error.strerror}."
            ) from error
        with entries:
            for entry in entries:
                key = entry.name[len(self.prefix) :]
                if (
                    entry.name.startswith(self.prefix)
                    and valid_key(key)
                    and in_range(key, self.key_range)
                    and entry.is_file(follow_symlinks=False)
                ):
                    yield key, entry.path

    def _read(self, paths: list[tuple[str, str]]) -> tuple[list[RawSession], int]:
        """The sessions in ``paths`` that pass the size filter, and how many are gone."""
        if self._batches and self.sleep_time:
            time.sleep(self.sleep_time)
        self._batches += 1
        batch, missing = [], 0
        for key, path in paths:
            try:
                status = os.stat(path)
                if self.bigger_than is not None and status.st_size <= self.bigger_than:
                    continue
                with open(path, "rb") as session_file:
                    data = session_file.read()
            except FileNotFoundError:
                missing += 1  # Never there, or gone since it was listed.
                continue
            except OSError as error:
                # The file's name holds the session key: show only its start.
                raise SourceError(
                    f"Cannot read the session file {self.prefix}{key[:6]}\u2026 in "
                    f"'{self.directory}': {error.strerror}."
                ) from error
            modified = datetime.fromtimestamp(status.st_mtime, tz=timezone.utc)
            # Django writes ASCII; anything else is junk, kept as junk.
            text = data.decode("ascii", errors="replace")
            batch.append(RawSession(key, text, modified + self.cookie_age, len(data)))
        return batch, missing
