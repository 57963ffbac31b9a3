"""Stores that fail or change under a running scan."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.sessions.models import Session
from django.db import connection, connections
from django.test import override_settings

from tests import servers
from tests.helpers import run_command, section, session_via_view, within
from tests.servers import free_port

SERVER_ONLY = pytest.mark.skipif(
    "connection.vendor == 'sqlite'",
    reason="SQLite has no server connection to lose: run with ANALYZE_SESSIONS_DB=postgres "
    "or mysql.",
)


def server_session_id() -> int:
    connection.ensure_connection()
    if connection.vendor == "postgresql":
        return int(connection.connection.info.backend_pid)
    return int(connection.connection.thread_id())


def kill_session_connection() -> None:
    """End the default connection's session on the server, from another connection."""
    with connections["replica"].cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_terminate_backend(%s)", [server_session_id()])
        else:
            cursor.execute(f"KILL {server_session_id()}")


@pytest.fixture
def between_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Run a function in the first pause between two batches of a scan."""
    actions: list[Callable[[], None]] = []

    def pause(seconds: float) -> None:
        if actions:
            actions.pop(0)()

    def schedule(action: Callable[[], None]) -> None:
        actions.append(action)

    monkeypatch.setattr("analyze_sessions.sources.database.time.sleep", pause)
    yield schedule


@SERVER_ONLY
@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_a_lost_connection_is_made_again_and_the_scan_resumes(
    between_batches: Callable[..., None],
) -> None:
    for n in range(10):
        session_via_view(n=str(n))
    killed: list[int] = []

    def kill() -> None:
        killed.append(server_session_id())
        kill_session_connection()

    between_batches(kill)

    out, err, returncode = run_command("--batch-size=3", "--sleep-time=0.5")

    # The scan went on in a new server session, and read each session once.
    assert killed and server_session_id() != killed[0]
    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 10 sessions out of 10 total sessions\n")
    # {"n":"0"} is 9 bytes: 12 characters of base64, and 51 more.
    assert section(out, "Totals")[0] == "Stored: 630 bytes in all, 63.00 bytes a session"


@SERVER_ONLY
@pytest.mark.django_db(transaction=True, databases=["default", "replica"])
def test_a_database_that_stays_away_gives_an_error_and_the_partial_report(
    between_batches: Callable[..., None],
) -> None:
    for n in range(10):
        session_via_view(n=str(n))
    settings = connection.settings_dict
    port = settings["PORT"]

    def go_away() -> None:
        kill_session_connection()
        settings["PORT"] = str(free_port())  # Nothing listens there.

    between_batches(go_away)
    try:
        out, err, returncode = run_command("--batch-size=3", "--sleep-time=0.5")
    finally:
        settings["PORT"] = port
        connection.close()

    assert out.startswith("Processed 3 sessions out of an unknown number of total sessions\n")
    assert section(out, "Scope") == ["Partial: interrupted after 3 sessions"]
    assert err.startswith("CommandError: Cannot read sessions from the 'default' database: ")
    assert err.endswith(" The report covers the sessions read before.\n")
    assert returncode == 1


@pytest.mark.django_db
def test_rows_deleted_and_added_during_a_scan(between_batches: Callable[..., None]) -> None:
    created = [session_via_view(n=str(n)) for n in range(9)]
    # The order pages follow: SQLite's rowids, which count up as rows are
    # added; elsewhere the keys'.
    in_order = created if connection.vendor == "sqlite" else sorted(created)
    added: list[str] = []

    def change_the_store() -> None:
        Session.objects.filter(session_key__in=in_order[-2:]).delete()
        added.extend(session_via_view(n="late") for _ in range(2))

    between_batches(change_the_store)

    out, err, returncode = run_command("--batch-size=3", "--sleep-time=1", "--format=json")

    # Keyset paging reads what is there when it gets there: the first page,
    # then whatever is left after it, new rows included when they come later.
    if connection.vendor == "sqlite":
        expected = 7 + len(added)
    else:
        expected = 7 + sum(key > in_order[2] for key in added)
    assert (err, returncode) == ("", 0)
    assert f'"processed": {expected},' in out


@pytest.mark.django_db
def test_a_lost_redis_connection_is_made_again(
    redis_location: str, redis_server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_location}
    killed: list[Any] = []

    def pause(seconds: float) -> None:
        if not killed:
            # Every client but the one asking.
            killed.append(redis_server.client_kill_filter(_type="normal"))

    monkeypatch.setattr("analyze_sessions.sources.cache.time.sleep", pause)
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.cache", CACHES={"default": cache}
    ):
        for n in range(7):
            session_via_view(n=str(n))

        out, err, returncode = run_command("--batch-size=2", "--sleep-time=0.5")

    assert killed and killed[0] >= 1  # At least the command's own connection.
    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 7 sessions out of 7 total sessions\n")


@pytest.mark.django_db
def test_a_redis_that_stops_answering_ends_the_run_after_one_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    try:
        server = servers.start_redis()
    except servers.Unavailable as error:
        pytest.skip(str(error))
    location = server.settings["LOCATION"]
    cache = {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": location,
        "OPTIONS": {"socket_timeout": 1},
    }
    with redis.Redis.from_url(location) as client:
        pid = int(client.info("server")["process_id"])
    pauses: list[float] = []

    def pause(seconds: float) -> None:
        if not pauses:
            os.kill(pid, signal.SIGSTOP)  # Still there, answering nothing.
        pauses.append(seconds)

    monkeypatch.setattr("analyze_sessions.sources.cache.time.sleep", pause)
    try:
        with override_settings(
            SESSION_ENGINE="django.contrib.sessions.backends.cache", CACHES={"default": cache}
        ):
            for n in range(6):
                session_via_view(n=str(n))
            with within(30):
                out, err, returncode = run_command("--batch-size=2", "--sleep-time=0.5")
            during = list(pauses)
    finally:
        os.kill(pid, signal.SIGCONT)
        server.stop()

    # The pause between two batches, and no pause before a try again: each
    # would wait the whole timeout.
    assert during == [0.5]
    assert out.startswith("Processed 2 sessions out of an unknown number of total sessions\n")
    assert (err, returncode) == (
        "CommandError: Cannot read sessions from Redis: Timeout reading from socket. The report "
        "covers the sessions read before.\n",
        1,
    )


@pytest.mark.django_db
def test_session_files_deleted_during_a_lookup_are_not_found_and_the_counts_add_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(directory)
    ):
        keys = sorted(session_via_view(n=str(n)) for n in range(10))
        deleted: list[str] = []

        def delete_the_last_five(seconds: float) -> None:
            if not deleted:  # In the first pause: the files of keys not read yet.
                for key in keys[5:]:
                    (directory / f"sessionid{key}").unlink()
                    deleted.append(key)

        monkeypatch.setattr("analyze_sessions.sources.files.time.sleep", delete_the_last_five)
        ids = tmp_path / "ids"
        ids.write_text("\n".join(keys))

        out, err, returncode = run_command(
            f"--ids-from={ids}", "--batch-size=5", "--sleep-time=1", "--format=json"
        )
        from django.contrib.sessions.backends.file import SessionStore as FileSessionStore

        if hasattr(FileSessionStore, "_storage_path"):
            del FileSessionStore._storage_path

    document = json.loads(out)
    assert (err, returncode) == ("", 0)
    # Read in key order, five a batch: the first five, then none of the rest.
    assert document["sessions"] == {
        "total": 5,
        "processed": 5,
        "undecodable": 0,
        "not_found": 5,
        "unreadable": {},
        "gone": 0,
    }
