"""
django-redis-sessions (``redis_sessions.session``): sessions made through
the engine's own SessionStore in a real Redis, and read where the engine's
settings say they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.sessions.serializers import JSONSerializer
from django.core import signing
from django.test import override_settings
from redis_sessions import settings as engine_settings
from redis_sessions.session import RedisServer, SessionStore

from analyze_sessions.sources.redis_keys import RedisKeySource
from tests import servers
from tests.conftest import SENTINEL_SERVICE
from tests.helpers import run_command
from tests.test_redis_replicas import command_calls, replicated

pytestmark = pytest.mark.django_db

ENGINE = "redis_sessions.session"
PREFIX = "site-sessions"
RETIRED_SECRET_KEY = "retired-" * 8
# What the engine signs with: the key salt of a class named SessionStore.
SALT = "django.contrib.sessions.SessionStore"

# What reading sends, after the connection's handshake (HELLO, CLIENT
# SETINFO); anything else would be a write, or a touch.
READING_COMMANDS = {"scan", "strlen", "getrange", "pttl", "info", "client|no-touch"}
HANDSHAKE = {"hello", "client|setinfo"}


def use(**values: Any) -> None:
    """Give the engine's settings these values (as the site's settings would, on import)."""
    for name, value in values.items():
        setattr(engine_settings, f"SESSION_REDIS_{name}", value)


@pytest.fixture(autouse=True)
def engine(monkeypatch: pytest.MonkeyPatch, redis_location: str) -> Iterator[None]:
    """The engine, set up on the run's Redis under PREFIX, its connections made anew."""
    host, port = redis_location.removeprefix("redis://").split("/")[0].rsplit(":", 1)
    for name in dir(engine_settings):
        if name.startswith("SESSION_REDIS_"):
            monkeypatch.setattr(engine_settings, name, getattr(engine_settings, name))
    # The engine keeps one connection per kind for the life of the process:
    # a test's own, closed after it, so that no socket is left to the next.
    connections: dict[str, Any] = {}
    monkeypatch.setattr(RedisServer, "_RedisServer__redis", connections)
    use(HOST=host, PORT=int(port), DB=0, PREFIX=PREFIX, URL=None, PASSWORD=None)
    try:
        with override_settings(SESSION_ENGINE=ENGINE):
            yield
    finally:
        for client in connections.values():
            pool = client.connection_pool
            for sentinel in getattr(getattr(pool, "sentinel_manager", None), "sentinels", []):
                sentinel.close()
            pool.disconnect()


def make_session(ttl: int | None = None, **values: Any) -> str:
    """A session saved by the engine's own SessionStore; its key."""
    store = SessionStore()
    store.update(values)
    if ttl is not None:
        store.set_expiry(ttl)
    store.save()
    key = store.session_key
    assert isinstance(key, str)
    return key


def stored(server: redis.Redis) -> dict[str, bytes]:
    """What Redis holds under the engine's prefix, as strings: by session key."""
    found: dict[str, bytes] = {}
    for name in server.scan_iter(match=f"{PREFIX}:*"):
        value = server.get(name) if server.type(name) == b"string" else None
        if isinstance(value, bytes):
            found[name.decode().removeprefix(f"{PREFIX}:")] = value
    return found


def decoded(data: bytes) -> dict[str, Any] | None:
    """The session ``data`` holds, as Django reads it with today's keys; None if it cannot."""
    try:
        session: dict[str, Any] = signing.loads(data.decode(), salt=SALT, serializer=JSONSerializer)
    except signing.BadSignature:
        return None
    return session


def entry_size(key: str, value: Any) -> int:
    return len(JSONSerializer().dumps({key: value})) - len(JSONSerializer().dumps({}))


def test_a_scan_reports_what_redis_holds(redis_server: redis.Redis) -> None:
    for n in range(5):
        make_session(cart=["item"] * n, _auth_user_id=str(n % 2))
    make_session(search="x" * 300)
    with override_settings(SECRET_KEY=RETIRED_SECRET_KEY):
        make_session(cart=["old"])
    soon = make_session(ttl=30, flash="bye")
    # Under the prefix, but no session: not a string, and not a session key.
    redis_server.rpush(f"{PREFIX}:{'l' * 32}", "x")
    redis_server.set(f"{PREFIX}:not/a/key", "x")
    # The site's other keys are not the engine's.
    redis_server.set(f"other:{'k' * 32}", "x" * 1000)

    out, err, returncode = run_command("--format=json", "--top=20")

    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    held = stored(redis_server)
    del held["not/a/key"]
    sessions = {key: decoded(data) for key, data in held.items()}
    bad = [key for key, session in sessions.items() if session is None]
    assert len(held) == 8 and len(bad) == 1
    assert document["engine"] == ENGINE
    assert document["sessions"]["total"] == 9  # The list too: named as a session.
    assert document["sessions"]["processed"] == 8
    assert document["sessions"]["unreadable"] == {"not a string": 1}
    assert document["stored_bytes"]["total"] == sum(len(data) for data in held.values())
    assert document["undecodable"]["sessions"] == 1
    assert document["undecodable"]["stored_bytes"] == len(held[bad[0]])
    assert document["undecodable"]["reasons"] == {"bad signature": 1}
    # Signed with a key no longer configured: dead weight.
    assert document["undecodable"]["unknown_key"] == {
        "sessions": 1,
        "stored_bytes": len(held[bad[0]]),
    }
    expected_keys: dict[str, int] = {}
    for session in sessions.values():
        for key, value in (session or {}).items():
            expected_keys[key] = expected_keys.get(key, 0) + entry_size(key, value)
    assert {key["key"]: key["total_bytes"] for key in document["keys"]} == expected_keys
    # The expiry is the time to live's.
    largest = {row["key_prefix"]: row for row in document["largest_sessions"]}
    expires = datetime.fromisoformat(largest[soon[:6]]["expire_date"])
    left = expires - datetime.now(timezone.utc)
    assert timedelta(seconds=25) < left <= timedelta(seconds=30)


def test_a_session_past_its_time_to_live_is_gone(redis_server: redis.Redis) -> None:
    make_session(cart=["a"])
    make_session(ttl=1, flash="bye")

    first, _, _ = run_command("--format=json")
    time.sleep(1.2)
    second, err, returncode = run_command("--format=json")

    assert (err, returncode) == ("", 0)
    assert json.loads(first)["sessions"]["processed"] == 2
    assert json.loads(second)["sessions"]["processed"] == 1
    assert len(stored(redis_server)) == 1


def test_reading_changes_no_value_and_no_time_to_live(redis_server: redis.Redis) -> None:
    for n in range(7):
        make_session(n=n)
    with override_settings(SECRET_KEY=RETIRED_SECRET_KEY):
        make_session(n=99)
    names = redis_server.keys(f"{PREFIX}:*")
    before = {name: (redis_server.dump(name), redis_server.pttl(name)) for name in names}
    redis_server.config_resetstat()

    out, err, returncode = run_command("--batch-size=3", "--sleep-time=0.01")

    calls = command_calls(redis_server)
    after = {name: (redis_server.dump(name), redis_server.pttl(name)) for name in names}
    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 8 sessions out of 8 total sessions\n")
    assert set(calls) <= READING_COMMANDS | HANDSHAKE | {"config|resetstat"}, calls
    assert {"scan", "getrange", "pttl"} <= set(calls)
    for name, (value, ttl) in before.items():
        assert after[name][0] == value
        assert after[name][1] <= ttl  # Only time has passed: no expiry was set again.


def test_listed_sessions_and_a_size_filter(redis_server: redis.Redis, tmp_path: Path) -> None:
    small = [make_session(n=n) for n in range(3)]
    large = [make_session(blob="x" * 500, n=n) for n in range(2)]
    held = stored(redis_server)
    listed = tmp_path / "keys.txt"
    listed.write_text("\n".join([small[0], large[0], "a" * 32, "*", f"{PREFIX}:{small[1]}"]))
    threshold = max(len(held[key]) for key in small)

    out, err, returncode = run_command("--format=json", f"--ids-from={listed}")
    sized, sized_err, sized_returncode = run_command("--format=json", f"--bigger-than={threshold}")

    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    assert document["sessions"]["processed"] == 2
    assert document["sessions"]["not_found"] == 3
    assert document["stored_bytes"]["total"] == len(held[small[0]]) + len(held[large[0]])
    assert (sized_err, sized_returncode) == ("", 0)
    by_size = json.loads(sized)
    assert by_size["sessions"]["processed"] == 2
    assert by_size["stored_bytes"]["total"] == sum(len(held[key]) for key in large)


def test_a_lost_connection_is_made_again(
    redis_server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(7):
        make_session(n=n)
    killed: list[int] = []

    def pause(seconds: float) -> None:
        if not killed:  # Every client but the one asking: the run's own among them.
            killed.append(redis_server.client_kill_filter(_type="normal"))

    monkeypatch.setattr("analyze_sessions.sources.redis_keys.time.sleep", pause)
    out, err, returncode = run_command("--batch-size=2", "--sleep-time=0.5")

    assert killed and killed[0] >= 1
    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 7 sessions out of 7 total sessions\n")


def test_the_database_number_and_a_url_are_read_as_the_engine_reads_them(
    redis_server: redis.Redis, redis_location: str
) -> None:
    use(DB=3)
    keys = [make_session(n=n) for n in range(3)]
    database_3 = redis.Redis.from_url(redis_location.replace("/0", "/3"))
    assert len(stored(database_3)) == 3 and stored(redis_server) == {}

    by_host, err, returncode = run_command("--format=json")
    use(URL=redis_location.replace("/0", "/3"), DB=0, HOST=None)
    by_url, url_err, url_returncode = run_command("--format=json")
    database_3.flushdb()
    database_3.close()

    assert (err, returncode, url_err, url_returncode) == ("", 0, "", 0)
    for out in (by_host, by_url):
        document = json.loads(out)
        assert document["sessions"]["processed"] == 3
        assert {row["key_prefix"] for row in document["largest_sessions"]} == {
            key[:6] for key in keys
        }


def test_a_unix_socket_and_a_password() -> None:
    try:
        server = servers.start_redis(password="open-sesame")
    except servers.Unavailable as error:
        pytest.skip(str(error))
    try:
        use(HOST=None, UNIX_DOMAIN_SOCKET_PATH=server.settings["SOCKET"], PASSWORD="open-sesame")
        use(DB=1)
        for n in range(4):
            make_session(n=n)

        out, err, returncode = run_command()
        use(PASSWORD="wrong")
        wrong, wrong_err, wrong_returncode = run_command()
    finally:
        server.stop()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 4 sessions out of 4 total sessions\n")
    assert (wrong, wrong_returncode) == ("", 1)
    assert wrong_err.startswith("CommandError: Cannot list sessions in Redis: ")
    assert "wrong" not in wrong_err and "open-sesame" not in wrong_err
    assert wrong_err.count("\n") == 1


def test_sentinel_settings_read_a_replica_of_the_service(
    redis_primary_and_replica: tuple[str, str], redis_sentinel: tuple[str, int]
) -> None:
    primary_location, replica_location = redis_primary_and_replica
    primary = redis.Redis.from_url(primary_location)
    primary.flushdb()
    replica = redis.Redis.from_url(replica_location)
    # As the engine reads them: a host named wins over the Sentinels, and
    # host is "localhost" unless set to None.
    use(HOST=None, SENTINEL_LIST=[redis_sentinel], SENTINEL_MASTER_ALIAS=SENTINEL_SERVICE)
    for n in range(6):
        make_session(n=n)
    replicated(primary, replica)
    primary.config_resetstat()
    replica.config_resetstat()

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 6 sessions out of 6 total sessions\n")
    assert not {"scan", "getrange", "pttl"} & set(command_calls(primary))
    assert {"scan", "getrange", "pttl"} <= set(command_calls(replica))
    primary.flushdb()
    primary.close()
    replica.close()


def test_a_host_wins_over_sentinels_as_in_the_engine(redis_server: redis.Redis) -> None:
    # The Sentinels listed are not there: the host is read, as the engine writes to it.
    use(SENTINEL_LIST=[("127.0.0.1", servers.free_port())], SENTINEL_MASTER_ALIAS="sessions")
    for n in range(2):
        make_session(n=n)

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 2 sessions out of 2 total sessions\n")


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        (
            {"POOL": [{"host": "127.0.0.1", "port": 6379}]},
            "CommandError: django-redis-sessions' SESSION_REDIS['POOL'] is not supported: ",
        ),
        (
            {"HOST": None, "SENTINEL_LIST": [("127.0.0.1", 1)], "SENTINEL_MASTER_ALIAS": None},
            "CommandError: django-redis-sessions' SESSION_REDIS_SENTINEL_LIST is set, but not "
            "the service it watches: set SESSION_REDIS_SENTINEL_MASTER_ALIAS.\n",
        ),
    ],
)
def test_settings_the_command_cannot_read_are_one_sentence(
    settings: dict[str, Any], refusal: str
) -> None:
    use(**settings)

    out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith(refusal) and err.count("\n") == 1


def test_a_connection_object_is_read_through_a_client_of_the_commands_own(
    redis_server: redis.Redis, redis_location: str
) -> None:
    site_connection = redis.Redis.from_url(redis_location.replace("/0", "/5"))
    use(CONNECTION_OBJECT=site_connection)
    for n in range(3):
        make_session(n=n)
    # Counts the connections it makes from 0, once those made so far are closed.
    site_connection.connection_pool.disconnect()
    site_connection.connection_pool.reset()

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 3 sessions out of 3 total sessions\n")
    # The site's own connections were not used to read.
    assert site_connection.connection_pool._created_connections == 0
    site_connection.flushdb()
    site_connection.close()


def test_without_a_prefix_only_names_shaped_like_the_engines_keys_are_read(
    redis_server: redis.Redis,
) -> None:
    use(PREFIX="")
    keys = [make_session(n=n) for n in range(3)]
    # The rest of the site's database: a queue, counters, locks, and names
    # one letter off a session key's shape.
    redis_server.rpush("celery", "task")
    for name in ("counter", "lock", "x" * 31, "y" * 33, "Z" * 32, "a" * 32 + "b" * 1000):
        redis_server.set(name, "1")
    # The same shape: only its data can tell it is no session.
    redis_server.set("q" * 32, "junk")

    out, err, returncode = run_command("--format=json")

    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    assert document["sessions"]["total"] == document["sessions"]["processed"] == 4
    assert document["sessions"]["unreadable"] == {}
    assert document["undecodable"]["sessions"] == 1
    assert {row["key_prefix"] for row in document["largest_sessions"]} == {
        key[:6] for key in [*keys, "q" * 32]
    }


def test_redis_never_sends_a_name_longer_than_a_session_key(
    redis_server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_session(n=1)
    redis_server.set(f"{PREFIX}:{'a' * 32}{'b' * 100_000}", "x")
    listed: list[bytes] = []
    scan = RedisKeySource._scan

    def recording_scan(self: RedisKeySource, shard: int, cursor: int) -> tuple[int, list[Any]]:
        found = scan(self, shard, cursor)
        listed.extend(found[1])
        return found

    monkeypatch.setattr(RedisKeySource, "_scan", recording_scan)
    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 1 sessions out of 1 total sessions\n")
    assert [len(name) for name in listed] == [len(PREFIX) + 1 + 32]


def test_a_value_that_grows_while_read_is_read_again_alone(
    redis_server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [make_session(n="x" * n) for n in range(4)]
    sent: list[list[tuple[Any, ...]]] = []
    pipeline = RedisKeySource._pipeline

    def site_writes_between(
        self: RedisKeySource, shard: int, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        sent.append(commands)
        replies = pipeline(self, shard, commands)
        if commands[0][0] == "STRLEN":  # The site appends to three sessions, right after.
            for key in keys[:2]:
                redis_server.append(f"{PREFIX}:{key}", "z" * 500)
            redis_server.append(f"{PREFIX}:{keys[2]}", "z" * 2000)  # Now past the bound.
        return replies

    monkeypatch.setattr(RedisKeySource, "_pipeline", site_writes_between)
    out, err, returncode = run_command("--format=json", "--max-session-size=1KiB")

    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    held = stored(redis_server)
    assert document["sessions"]["processed"] == 4
    assert document["stored_bytes"]["total"] == sum(len(data) for data in held.values())
    # Measured as they are now, the one past the bound too, never read whole.
    assert document["undecodable"]["reasons"] == {"bad signature": 2, "too large": 1}
    sizes, grouped, *alone = sent
    measured = {name: len(held[name.decode().split(":")[1]]) for _, name in sizes}
    for key, grown in zip(keys[:3], (500, 500, 2000), strict=True):
        measured[f"{PREFIX}:{key}".encode()] -= grown
    # Each value was asked for as far as its size then said, one byte more at most...
    assert [command[3] for command in grouped if command[0] == "GETRANGE"] == [
        measured[command[1]] for command in grouped if command[0] == "GETRANGE"
    ]
    # ...and each that had grown, again on its own, up to the bound.
    assert sorted(command[0][1] for command in alone) == sorted(
        f"{PREFIX}:{key}".encode() for key in keys[:3]
    )
    assert all(command[0][3] == 1024 for command in alone)


@pytest.mark.parametrize(
    "settings",
    [
        {"URL": "http://example.com/0"},
        {"HOST": None, "SENTINEL_LIST": ["127.0.0.1:26379"], "SENTINEL_MASTER_ALIAS": "s"},
        {"CONNECTION_OBJECT": "redis://127.0.0.1:6379/0"},
    ],
)
def test_settings_the_engine_could_not_connect_with_are_one_sentence(
    settings: dict[str, Any],
) -> None:
    use(**settings)

    out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith(
        "CommandError: django-redis-sessions' settings name no Redis server this command can "
        "connect to ("
    )
    assert err.count("\n") == 1


def test_a_sentinel_client_as_the_connection_object_reads_a_replica(
    redis_primary_and_replica: tuple[str, str], redis_sentinel: tuple[str, int]
) -> None:
    from redis.sentinel import Sentinel

    primary_location, replica_location = redis_primary_and_replica
    primary = redis.Redis.from_url(primary_location)
    primary.flushdb()
    replica = redis.Redis.from_url(replica_location)
    use(CONNECTION_OBJECT=Sentinel([redis_sentinel]).master_for(SENTINEL_SERVICE))  # type: ignore[no-untyped-call]
    for n in range(3):
        make_session(n=n)
    replicated(primary, replica)
    primary.config_resetstat()

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 3 sessions out of 3 total sessions\n")
    assert not {"scan", "getrange", "pttl"} & set(command_calls(primary))
    primary.flushdb()
    primary.close()
    replica.close()


def test_an_engine_that_keeps_sessions_elsewhere_than_the_engine_is_refused() -> None:
    with override_settings(SESSION_ENGINE="tests.engines.redis_tenants"):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err == (
        "CommandError: Session engine 'tests.engines.redis_tenants' changes where or how "
        "django-redis-sessions keeps sessions (get_real_stored_key()): map it to a source of "
        "its own in ANALYZE_SESSIONS_SOURCES.\n"
    )
