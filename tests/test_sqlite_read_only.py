"""SQLite is read through a connection that cannot write: real files, real processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.contrib.sessions.backends.db import SessionStore

from analyze_sessions.sources.database import read_only_sqlite

ROOT = Path(__file__).resolve().parent.parent

# Django's own table, as its migration makes it on SQLite.
SESSION_TABLE = (
    'CREATE TABLE "django_session" ("session_key" varchar(40) NOT NULL PRIMARY KEY, '
    '"session_data" text NOT NULL, "expire_date" datetime NOT NULL)'
)

# A writer that commits sessions into the write-ahead log, never checkpoints
# it, and dies without closing, as a killed server process would.
KILLED_WRITER = """
import json, os, sqlite3, sys
database = sqlite3.connect(sys.argv[1], isolation_level=None)
assert database.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
database.execute("PRAGMA wal_autocheckpoint=0")
for row in json.loads(sys.argv[2]):
    database.execute("INSERT INTO django_session VALUES (?, ?, ?)", row)
os._exit(0)
"""


def analyze_sessions(
    *args: str, name: str, replica: str = "", stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run a real ``django-admin analyze-sessions`` on the SQLite file ``name``, as cron would."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(ROOT),
        "ANALYZE_SESSIONS_DB": "sqlite",
        "ANALYZE_SESSIONS_DB_NAME": name,
        "ANALYZE_SESSIONS_REPLICA_NAME": replica or name,
    }
    executable = Path(sys.executable).with_name("django-admin")
    return subprocess.run(
        [str(executable), "analyze-sessions", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def sessions(count: int, first: int = 0) -> list[tuple[str, str, str]]:
    expires = (datetime.now(timezone.utc) + timedelta(days=1)).replace(tzinfo=None)
    return [
        (f"{n:032d}", SessionStore().encode({"n": str(n)}), expires.isoformat(sep=" "))
        for n in range(first, first + count)
    ]


def test_a_log_left_by_a_killed_writer_is_read_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "sessions.sqlite3"
    database = sqlite3.connect(path)
    database.execute(SESSION_TABLE)
    database.executemany("INSERT INTO django_session VALUES (?, ?, ?)", sessions(2))
    database.commit()
    database.close()
    subprocess.run(
        [sys.executable, "-c", KILLED_WRITER, str(path), json.dumps(sessions(3, first=2))],
        check=True,
    )
    wal = tmp_path / "sessions.sqlite3-wal"
    main_before, wal_before = path.read_bytes(), wal.read_bytes()
    assert len(wal_before) > 0  # The three sessions are there, and only there.

    for args in ([], ["--ids-from=-"], ["--jobs=2"], ["--bigger-than=60", "--format=json"]):
        keys = "".join(f"{n:032d}\n" for n in range(5))
        result = analyze_sessions(*args, name=str(path), stdin=keys)

        assert (result.stderr, result.returncode) == ("", 0), args
        if args == ["--bigger-than=60", "--format=json"]:
            assert json.loads(result.stdout)["sessions"]["processed"] == 5
        else:
            assert result.stdout.startswith("Processed 5 sessions out of 5 total sessions\n"), args
        # Nothing checkpointed, nothing removed.
        assert path.read_bytes() == main_before, args
        assert wal.read_bytes() == wal_before, args


def test_a_missing_database_file_is_one_sentence_and_stays_missing(tmp_path: Path) -> None:
    missing = tmp_path / "replica.sqlite3"
    existing = tmp_path / "sessions.sqlite3"
    sqlite3.connect(existing).execute(SESSION_TABLE).connection.close()

    result = analyze_sessions("--database=replica", name=str(existing), replica=str(missing))

    assert (result.stdout, result.stderr, result.returncode) == (
        "",
        f"CommandError: The SQLite database file '{missing}' of the 'replica' database "
        "does not exist.\n",
        1,
    )
    assert sorted(tmp_path.iterdir()) == [existing]


@pytest.mark.parametrize(
    ("name", "uri", "path"),
    [
        ("/srv/site/db.sqlite3", "file:/srv/site/db.sqlite3?mode=ro", "/srv/site/db.sqlite3"),
        # Quoted, so that no character of the path is read as part of the URI.
        (
            "/srv/my site/db?#%.sqlite3",
            "file:/srv/my%20site/db%3F%23%25.sqlite3?mode=ro",
            "/srv/my site/db?#%.sqlite3",
        ),
        (Path("/srv/site/db.sqlite3"), "file:/srv/site/db.sqlite3?mode=ro", "/srv/site/db.sqlite3"),
        # A URI already: its mode is made read-only, and the rest kept.
        (
            "file:/srv/site/db.sqlite3?mode=rwc&cache=private",
            "file:/srv/site/db.sqlite3?cache=private&mode=ro",
            "/srv/site/db.sqlite3",
        ),
        (
            "file:///srv/my%20site/db.sqlite3",
            "file:///srv/my%20site/db.sqlite3?mode=ro",
            "/srv/my site/db.sqlite3",
        ),
    ],
)
def test_read_only_settings(name: str | Path, uri: str, path: str) -> None:
    options = {"init_command": "PRAGMA synchronous=1", "timeout": 5}
    settings_dict = {"ENGINE": "django.db.backends.sqlite3", "NAME": name, "OPTIONS": options}

    read_only, file = read_only_sqlite(settings_dict)

    assert read_only == {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": uri,
        "OPTIONS": {**options, "detect_types": 0},
    }
    assert file == path
    assert settings_dict["NAME"] == name  # The alias's own settings are left alone.


def test_a_relative_name_is_read_where_django_would_open_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    read_only, path = read_only_sqlite({"NAME": "db.sqlite3", "OPTIONS": {}})

    assert (read_only["NAME"], path) == (
        f"file:{tmp_path}/db.sqlite3?mode=ro",
        f"{tmp_path}/db.sqlite3",
    )
