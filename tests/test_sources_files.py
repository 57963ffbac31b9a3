from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.contrib.sessions.backends.file import SessionStore
from django.test import override_settings

from analyze_sessions.sources import RawSession
from analyze_sessions.sources.files import FileSource

MODIFIED = datetime(2026, 1, 1, tzinfo=timezone.utc)
COOKIE_AGE = timedelta(weeks=2)  # Django's default SESSION_COOKIE_AGE.


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        yield tmp_path
        # The file engine keeps the first directory it is given for good.
        if hasattr(SessionStore, "_storage_path"):
            del SessionStore._storage_path


def saved(**items: object) -> str:
    store = SessionStore()
    store.update(items)
    store.create()
    return str(store.session_key)


def test_stored_size_is_the_file_size_and_expiry_follows_its_mtime(directory: Path) -> None:
    key = saved(foo="bar")
    path = directory / f"sessionid{key}"
    os.utime(path, (MODIFIED.timestamp(), MODIFIED.timestamp()))

    [[raw]] = FileSource(SessionStore).scan()

    assert raw == RawSession(key, path.read_text(), MODIFIED + COOKIE_AGE, 69)


@pytest.mark.parametrize(
    ("expiry", "expires_at"),
    [
        (None, MODIFIED + COOKIE_AGE),
        ("2030-05-06T07:08:09+00:00", datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),
        ("not a date", MODIFIED + COOKIE_AGE),
        # Seconds count from each load: the engine never finds it expired.
        (3600, None),
    ],
)
def test_expiry_as_the_file_engine_judges_it(
    directory: Path, expiry: object, expires_at: datetime | None
) -> None:
    raw = RawSession("k", "", MODIFIED + COOKIE_AGE, 0)
    session = {} if expiry is None else {"_session_expiry": expiry}

    assert FileSource(SessionStore).expiry(raw, session) == expires_at


def test_files_that_vanish_during_a_scan_are_skipped(directory: Path) -> None:
    keys = sorted(saved(n=n) for n in range(6))
    scan = FileSource(SessionStore, batch_size=2).scan()
    seen = [raw.key for raw in next(scan)]
    for key in set(keys) - set(seen):
        (directory / f"sessionid{key}").unlink()
        break

    seen += [raw.key for batch in scan for raw in batch]

    assert len(seen) == 5 and set(seen) < set(keys)


def test_sleep_time_pauses_between_batches(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        saved(n=n)
    pauses: list[float] = []
    monkeypatch.setattr("analyze_sessions.sources.files.time.sleep", pauses.append)

    batches = list(FileSource(SessionStore, batch_size=2, sleep_time=0.5).scan())

    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert pauses == [0.5, 0.5]
