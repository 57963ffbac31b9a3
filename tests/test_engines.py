"""The command end to end with each kind of session store, filled through views."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.auth.models import User
from django.contrib.sessions.backends.file import SessionStore as FileSessionStore
from django.test import Client, override_settings
from pymemcache.client.base import Client as MemcachedClient

from tests.helpers import (
    head,
    run_command,
    section,
    session_via_view,
    two_sessions,
    two_sessions_report,
)
from tests.models import PlainSession, UserSession
from tests.servers import free_port

pytestmark = pytest.mark.django_db

CACHE_ENGINE = "django.contrib.sessions.backends.cache"
ALL_OF_TWO = "Processed 2 sessions out of 2 total sessions"


@pytest.fixture
def session_files(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "sessions"
    directory.mkdir()
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(directory)
    ):
        yield directory
        # The file engine keeps the first directory it is given for good.
        if hasattr(FileSessionStore, "_storage_path"):
            del FileSessionStore._storage_path


def test_file_sessions(session_files: Path, tmp_path: Path) -> None:
    first, second = two_sessions()
    # Not sessions: another prefix, a temporary file of the engine's, a key
    # with characters no key has. A directory named as a session is one the
    # store names but cannot hold: counted apart, as unreadable.
    (session_files / "README").write_text("not a session")
    (session_files / "sessionid_out_tmp123").write_text("x" * 500)
    (session_files / "sessionidabc123").mkdir()
    (session_files / "sessionidABC").write_text("x" * 500)
    ids = tmp_path / "ids"
    ids.write_text(f"{first}\n../../etc/passwd\nmissing\n")
    two_of_three = "Processed 2 sessions out of 3 total sessions"

    # The files hold the same encoded data as database rows: 69 and 83 bytes.
    out, err, returncode = run_command()
    assert headed((out, err, returncode)) == (two_sessions_report((69, 83), two_of_three), "", 0)
    assert section(out, "Totals")[-1] == (
        "Unreadable: 1 session (not a regular file: 1): named as sessions, but not read, "
        "so not processed"
    )
    out, _, _ = run_command("--bigger-than=69")
    assert out.splitlines()[:2] == [
        "Processed 1 sessions out of 3 total sessions",
        "Average size was 83.00 bytes",
    ]
    out, _, _ = run_command(f"--ids-from={ids}")
    assert out.splitlines()[:2] == [
        "Processed 1 sessions out of 3 total sessions",
        "Average size was 69.00 bytes",
    ]
    assert section(out, "Totals")[-1] == "Listed keys not found: 2 of 3"
    assert sorted(path.name for path in session_files.iterdir()) == sorted(
        ["README", "sessionid_out_tmp123", "sessionidabc123", "sessionidABC"]
        + [f"sessionid{first}", f"sessionid{second}"]
    )


def test_file_sessions_in_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "missing"

    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(missing)
    ):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith(f"CommandError: The session storage path '{missing}' doesn't exist.")


@override_settings(SESSION_ENGINE="tests.engines.user_sessions")
def test_a_custom_model_built_on_abstract_base_session() -> None:
    User.objects.create_user("ada", password="secret")
    client = Client()
    client.login(username="ada", password="secret")
    two_sessions()

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 3 sessions out of 3 total sessions\n")
    assert "    _auth_user_id (1 times," in out
    assert UserSession.objects.filter(user__username="ada", ip="192.0.2.1").count() == 1


@override_settings(SESSION_ENGINE="tests.engines.plain")
def test_an_engine_with_a_model_of_its_own_and_no_get_model_class() -> None:
    two_sessions()

    assert PlainSession.objects.count() == 2
    assert headed(run_command()) == (two_sessions_report((69, 83), ALL_OF_TWO), "", 0)
    named, err, returncode = run_command("--model=tests.PlainSession")
    # The same, but for the Scope line that says which model was read.
    scope = "\n\nScope:\n    Only the sessions chosen by --model tests.PlainSession"
    assert (named.replace(scope, "", 1), err, returncode) == run_command()
    assert scope in named


@override_settings(SESSION_ENGINE="tests.engines.elsewhere")
def test_an_engine_that_keeps_sessions_elsewhere_can_name_its_model() -> None:
    with override_settings(SESSION_ENGINE="tests.engines.plain"):
        two_sessions()

    out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err == (
        "CommandError: Session engine 'tests.engines.elsewhere' keeps its sessions where "
        "this command cannot find them: it reads Django's db, cached_db, cache and file "
        "engines, django-redis-sessions, any engine that keeps sessions in a model (name "
        "it with --model app_label.ModelName), and any engine that the "
        'ANALYZE_SESSIONS_SOURCES setting maps to a source class (see "Sessions kept '
        'elsewhere" in README).\n'
    )
    assert headed(run_command("--model=tests.PlainSession")) == (
        two_sessions_report((69, 83), ALL_OF_TWO),
        "",
        0,
    )


@override_settings(SESSION_ENGINE="tests.engines.ambiguous")
def test_an_engine_that_uses_several_session_models_must_name_one() -> None:
    with override_settings(SESSION_ENGINE="tests.engines.plain"):
        two_sessions()

    assert run_command() == (
        "",
        "CommandError: Session engine 'tests.engines.ambiguous' uses several models "
        "that could hold its sessions (tests.PlainSession, tests.UserSession): name "
        "one with --model.\n",
        1,
    )
    assert run_command("--model=tests.PlainSession")[0].startswith(ALL_OF_TWO)


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("tests.NoSuchModel", "Cannot find the model 'tests.NoSuchModel': "),
        ("nolabel", "Invalid --model 'nolabel': give app_label.ModelName, for example "),
        (
            "auth.User",
            "The model 'auth.User' cannot hold sessions: it needs the fields "
            "session_key, session_data, expire_date.",
        ),
    ],
)
def test_a_model_that_cannot_be_used(label: str, message: str) -> None:
    out, err, returncode = run_command(f"--model={label}")

    assert (out, returncode) == ("", 1)
    assert err.startswith(f"CommandError: {message}")


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.signed_cookies")
def test_signed_cookies_are_refused() -> None:
    assert run_command() == (
        "",
        "CommandError: Session engine 'django.contrib.sessions.backends.signed_cookies' "
        "keeps sessions in the browser's cookies: nothing is stored on the server to "
        "analyze.\n",
        1,
    )


def headed(result: tuple[str, str, int]) -> tuple[str, str, int]:
    out, err, returncode = result
    return head(out), err, returncode


def redis_caches(location: str) -> list[dict[str, Any]]:
    options = {"LOCATION": location, "KEY_PREFIX": "shop", "VERSION": 3}
    return [
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", **options},
        {"BACKEND": "django_redis.cache.RedisCache", **options},
    ]


@pytest.mark.parametrize("backend", [0, 1], ids=["RedisCache", "django-redis"])
def test_redis_sessions(
    redis_location: str, redis_server: redis.Redis, backend: int, tmp_path: Path
) -> None:
    server = redis_server
    # Not sessions: another site's, another version's, and other keys.
    server.set("other:3:django.contrib.sessions.cacheabc", b"x" * 100)
    server.set("shop:2:django.contrib.sessions.cacheabc", b"x" * 100)
    server.set("shop:3:cart", b"x" * 100)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_caches(redis_location)[backend]}
    ):
        first, second = two_sessions()
        sizes = tuple(
            server.strlen(f"shop:3:django.contrib.sessions.cache{key}") for key in (first, second)
        )
        ids = tmp_path / "ids"
        ids.write_text(f"{first}\nmissing\n")
        commands_before = commands_run(server)

        report = run_command("--batch-size=1")
        smaller = run_command(f"--bigger-than={min(sizes)}")
        listed = run_command(f"--ids-from={ids}")

    assert headed(report) == (two_sessions_report(sizes, ALL_OF_TWO), "", 0)  # type: ignore[arg-type]
    assert smaller[0].splitlines()[:2] == [
        "Processed 1 sessions out of 2 total sessions",
        f"Average size was {max(sizes)}.00 bytes",
    ]
    assert listed[0].splitlines()[:2] == [
        "Processed 1 sessions out of 2 total sessions",
        f"Average size was {sizes[0]}.00 bytes",
    ]
    assert section(listed[0], "Totals")[-1] == "Listed keys not found: 1 of 2"
    # Read only: nothing but listing and reading went to the server.
    new_commands = set(commands_run(server)) - set(commands_before) | {
        name for name, calls in commands_run(server).items() if calls != commands_before.get(name)
    }
    reads = {"scan", "getrange", "strlen", "pttl", "info"}
    # What redis-py sends on each new connection, and NO-TOUCH (Redis >= 7.2).
    handshake = {"hello", "client|setinfo", "client|maint_notifications", "client|no-touch"}
    assert new_commands <= reads | handshake


def test_redis_values_that_cannot_be_read_back(
    redis_location: str, redis_server: redis.Redis
) -> None:
    server = redis_server
    cache = redis_caches(redis_location)[0]
    prefix = "shop:3:django.contrib.sessions.cache"
    # Named as Django names sessions: 32 lowercase letters and digits.
    server.set(f"{prefix}{'garbage0' * 4}", b"\x80not a pickle")
    server.set(f"{prefix}{'number00' * 4}", b"42")  # Read back as the int 42.
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        key = session_via_view(foo="bar")
        size = server.strlen(f"{prefix}{key}")

        out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == "Processed 3 sessions out of 3 total sessions"
    assert section(out, "Undecodable")[0].startswith("2 sessions, 15 bytes (bad payload: 2)")
    assert section(out, "Totals")[0].startswith(f"Stored: {size + 15} bytes in all")


def commands_run(server: redis.Redis) -> dict[str, int]:
    stats = server.info("commandstats")
    return {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}


def test_memcached_sessions_by_key_only(memcached_location: str, tmp_path: Path) -> None:
    cache = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": memcached_location,
        "KEY_PREFIX": f"run{os.getpid()}",
    }
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        first, second = two_sessions()
        ids = tmp_path / "ids"
        ids.write_text(f"{first}\n{second}\nmissing\n")
        server = MemcachedClient(memcached_location)
        sizes = tuple(
            len(server.get(f"run{os.getpid()}:1:django.contrib.sessions.cache{key}"))
            for key in (first, second)
        )
        server.close()

        scan = run_command()
        listed = run_command(f"--ids-from={ids}")
        bigger = run_command(f"--ids-from={ids}", f"--bigger-than={min(sizes)}")

    assert scan == (
        "",
        "CommandError: The 'default' cache "
        "(django.core.cache.backends.memcached.PyMemcacheCache) cannot list its keys, "
        "so its sessions cannot all be found: pass --ids-from with the keys of the "
        "sessions to analyze.\n",
        1,
    )
    report = two_sessions_report(
        sizes,  # type: ignore[arg-type]
        "Processed 2 sessions out of an unknown number of total sessions",
    )
    assert headed(listed) == (report, "", 0)
    assert section(listed[0], "Totals")[-1] == "Listed keys not found: 1 of 3"
    assert bigger[0].splitlines()[:2] == [
        "Processed 1 sessions out of an unknown number of total sessions",
        f"Average size was {max(sizes)}.00 bytes",
    ]


@pytest.mark.parametrize("backend", ["django.core.cache.backends.db.DatabaseCache"])
def test_caches_that_cannot_list_their_keys(backend: str) -> None:
    cache = {"BACKEND": backend, "LOCATION": "sessions_cache"}
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err == (
        f"CommandError: The 'default' cache ({backend}) cannot list its keys, so its "
        "sessions cannot all be found: pass --ids-from with the keys of the sessions "
        "to analyze.\n"
    )


def test_a_redis_server_that_cannot_be_reached() -> None:
    location = f"redis://127.0.0.1:{free_port()}/0"
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location}
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith("CommandError: Cannot list sessions in Redis: Error 111 connecting to")
    assert err.count("\n") == 1


@pytest.mark.usefixtures("redis_server")
def test_redis_reads_in_throttled_batches(
    redis_location: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("analyze_sessions.sources.cache.time.sleep", pauses.append)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_caches(redis_location)[0]}
    ):
        for n in range(5):
            session_via_view(n=str(n))

        out, _, _ = run_command("--batch-size=2", "--sleep-time=0.25")

    assert out.splitlines()[0] == "Processed 5 sessions out of 5 total sessions"
    assert pauses == [0.25, 0.25]  # Three batches: 2, 2 and 1.


def test_file_totals_after_a_limited_scan_and_impossible_keys(
    session_files: Path, tmp_path: Path
) -> None:
    for n in range(6):
        session_via_view(n=str(n))
    ids = tmp_path / "ids"
    ids.write_text("a" * 300 + "\n" + "b" * 150 + "\n")

    limited, _, _ = run_command("--limit=2", "--batch-size=3")
    listed, err, returncode = run_command(f"--ids-from={ids}")

    assert limited.startswith("Processed 2 sessions out of 6 total sessions\n")
    # A key too long to name a file is not there; no error, no key printed.
    assert (err, returncode) == ("", 0)
    assert section(listed, "Totals")[-1] == "Listed keys not found: 2 of 2"


@pytest.mark.usefixtures("redis_server")
def test_redis_listed_keys_not_found_with_bigger_than(redis_location: str, tmp_path: Path) -> None:
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_caches(redis_location)[0]}
    ):
        keys = two_sessions()
        (tmp_path / "ids").write_text("\n".join([*keys, "missing1", "missing2"]))

        out, _, _ = run_command(f"--ids-from={tmp_path / 'ids'}", "--bigger-than=1")

    assert section(out, "Totals")[-1] == "Listed keys not found: 2 of 4"
