"""
Sessions in caches, read on real servers as an attacker may have filled
them: the cache is never written to, no pickle runs code, nothing read is
quoted, and what is read is bounded.
"""

from __future__ import annotations

import base64
import gzip
import json
import lzma
import pickle
import socket
import threading
import time
import tracemalloc
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.core.cache import BaseCache, caches
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.utils import timezone as django_timezone
from django.utils.crypto import get_random_string
from pymemcache.client.base import Client as MemcachedClient
from pymemcache.serde import FLAG_COMPRESSED, FLAG_PICKLE

from analyze_sessions.sources import Packed, RawSession, Source, UnsupportedEngine
from analyze_sessions.sources.cache import cache_source
from tests.helpers import head, run_command, section, session_via_view, two_sessions_report

pytestmark = pytest.mark.django_db

CACHE_ENGINE = "django.contrib.sessions.backends.cache"
PREFIX = CacheSessionStore.cache_key_prefix
UNKNOWN_TOTAL = "Processed 2 sessions out of an unknown number of total sessions"
LOWER = "abcdefghijklmnopqrstuvwxyz0123456789"


def new_key() -> str:
    return get_random_string(32, LOWER)


def redis_cache(location: str | list[str], backend: str, **options: Any) -> dict[str, Any]:
    path = {
        "RedisCache": "django.core.cache.backends.redis.RedisCache",
        "django-redis": "django_redis.cache.RedisCache",
    }[backend]
    cache: dict[str, Any] = {
        "BACKEND": path,
        "LOCATION": location,
        "KEY_PREFIX": "shop",
        "VERSION": 3,
    }
    if options:
        cache["OPTIONS"] = options
    return cache


def redis_name(key: str) -> str:
    return f"shop:3:{PREFIX}{key}"


def memcached_cache(location: str, **options: Any) -> dict[str, Any]:
    # The server lives as long as the run: a prefix of its own keeps each test apart.
    cache: dict[str, Any] = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": location,
        "KEY_PREFIX": get_random_string(8, LOWER),
    }
    if options:
        cache["OPTIONS"] = options
    return cache


DATABASE_CACHE = {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"}


def source(*, scanning: bool = False, max_size: int = 16 * 1024 * 1024, **options: Any) -> Source:
    return cache_source(
        CacheSessionStore,
        scanning=scanning,
        bigger_than=options.get("bigger_than"),
        batch_size=options.get("batch_size", 100),
        sleep_time=options.get("sleep_time", 0.0),
        max_size=max_size,
    )


def unpacked(source: Any, raw: RawSession) -> RawSession:
    """``raw`` with its value unpacked, as the decoder unpacks it."""
    if isinstance(raw.data, Packed):
        return raw._replace(data=source.unpack(raw.data.payload))
    return raw


def looked_up(source: Source, keys: list[str]) -> dict[str, RawSession]:
    return {raw.key: unpacked(source, raw) for batch in source.lookup(keys) for raw in batch}


def scanned(source: Source) -> dict[str, RawSession]:
    return {raw.key: unpacked(source, raw) for batch in source.scan() for raw in batch}


def ids_file(directory: Path, *keys: str) -> str:
    path = directory / "ids"
    path.write_text("".join(f"{key}\n" for key in keys))
    return f"--ids-from={path}"


def cache_name(key: str) -> str:
    """The name the configured cache keeps the session ``key`` under."""
    return str(caches["default"].make_key(PREFIX + key))


def pickled(value: Any) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)


class MakesAFile:
    """Unpickled by plain pickle, opens ``path`` for writing: creates it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


# The table of Django's database cache.


@pytest.fixture
def cache_table() -> Iterator[None]:
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": DATABASE_CACHE}):
        call_command("createcachetable", verbosity=0)
        yield


def table_rows() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key, value FROM cache")
        return dict(cursor.fetchall())


def set_expires(key: str, moment: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE cache SET expires = %s WHERE cache_key = %s",
            [connection.ops.adapt_datetimefield_value(moment), cache_name(key)],
        )


def insert_row(key: str, value: str) -> None:
    expires = django_timezone.now() + timedelta(days=1)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO cache (cache_key, value, expires) VALUES (%s, %s, %s)",
            [cache_name(key), value, connection.ops.adapt_datetimefield_value(expires)],
        )


@pytest.mark.parametrize("use_tz", [True, False])
@pytest.mark.usefixtures("cache_table")
def test_database_cache_keeps_expired_rows_and_counts_them(tmp_path: Path, use_tz: bool) -> None:
    with override_settings(USE_TZ=use_tz, TIME_ZONE="America/Chicago"):
        live = session_via_view(foo="bar")
        expired = session_via_view(foo="bazbaz", n="1")
        made = time.time()
        # What the backend writes, and its get_many() deletes on sight.
        set_expires(expired, django_timezone.now() - timedelta(hours=1))
        before = table_rows()

        raws = looked_up(source(), [live, expired])
        out, err, returncode = run_command(ids_file(tmp_path, live, expired, new_key()))

    # Never written to: both rows are there as they were.
    assert table_rows() == before
    # The session's default age is two weeks; the other expired an hour ago.
    for key, seconds in [(live, 14 * 86400), (expired, -3600)]:
        moment = raws[key].expires_at
        assert moment is not None and moment.tzinfo is timezone.utc
        assert abs(moment.timestamp() - (made + seconds)) < 60
    # The base64 of the two dicts' pickles: protocol 5 writes 27 bytes for
    # the first (a 2-byte header, an 9-byte frame, the dict, two strings of 5
    # bytes, three memo marks, SETITEM, STOP), 39 for the second: 36 and 52
    # characters.
    sizes = (
        len(base64.b64encode(pickled({"foo": "bar"}))),
        len(base64.b64encode(pickled({"foo": "bazbaz", "n": "1"}))),
    )
    assert sizes == (36, 52)
    assert (head(out), err, returncode) == (two_sessions_report(sizes, UNKNOWN_TOTAL), "", 0)
    assert section(out, "Expired")[0].startswith("1 session (50.0%), 52 bytes (59.1% of stored)")
    assert section(out, "Totals")[-1] == "Listed keys not found: 1 of 3"


@pytest.mark.usefixtures("cache_table")
def test_database_cache_rows_that_hold_no_session(tmp_path: Path) -> None:
    key = session_via_view(foo="bar")
    broken = {new_key(): value for value in ["not base64!", base64.b64encode(b"junk").decode()]}
    for other, value in broken.items():
        insert_row(other, value)

    out, err, returncode = run_command(ids_file(tmp_path, key, *broken))

    # 36 characters for the session, 11 and 8 for the rows that hold none.
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == "Processed 3 sessions out of an unknown number of total sessions"
    assert section(out, "Undecodable")[0].startswith("2 sessions, 19 bytes (bad payload: 2)")
    assert section(out, "Totals")[0].startswith("Stored: 55 bytes in all")


# Pickles that run code.


def plant_in_redis(server: redis.Redis, key: str, value: bytes) -> None:
    server.set(redis_name(key), value)


@pytest.mark.parametrize("store", ["RedisCache", "django-redis", "memcached", "database"])
def test_a_pickle_that_would_run_code_is_never_unpickled(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    made = tmp_path / "made-by-the-pickle"
    evil = pickled(MakesAFile(made))
    planted = new_key()
    if store == "database":
        request.getfixturevalue("cache_table")
        cache = DATABASE_CACHE
    elif store == "memcached":
        cache = memcached_cache(request.getfixturevalue("memcached_location"))
    else:
        server = request.getfixturevalue("redis_server")
        cache = redis_cache(request.getfixturevalue("redis_location"), store)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        key = session_via_view(foo="bar")
        if store == "database":
            insert_row(planted, base64.b64encode(evil).decode())
            stored = len(base64.b64encode(evil))
        elif store == "memcached":
            client = MemcachedClient(cache["LOCATION"])
            # Answered, so that the entry is there before the command reads.
            client.set(cache_name(planted), evil, flags=FLAG_PICKLE, noreply=False)
            client.close()
            stored = len(evil)
        else:
            plant_in_redis(server, planted, evil)
            stored = len(evil)

        out, err, returncode = run_command(ids_file(tmp_path, key, planted))

    assert not made.exists()
    assert (err, returncode) == ("", 0)
    # Redis counts what it holds under the prefix; the others cannot.
    total = "2 total" if store in {"RedisCache", "django-redis"} else "an unknown number of total"
    assert out.splitlines()[0] == f"Processed 2 sessions out of {total} sessions"
    assert section(out, "Undecodable")[0].startswith(f"1 session, {stored} bytes (bad payload: 1)")


# Redis: keys of another type, and what an ACL forbids.


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_redis_keys_of_another_type_are_unreadable_and_counted(
    redis_location: str, redis_server: redis.Redis, backend: str, tmp_path: Path
) -> None:
    hashed = new_key()
    redis_server.hset(redis_name(hashed), "field", "x" * 100)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        first = session_via_view(foo="bar")
        second = session_via_view(foo="bazbaz", n="1")
        runs = [
            run_command(),
            run_command("--bigger-than=1", "--batch-size=1"),
            run_command(ids_file(tmp_path, first, hashed, new_key())),
        ]
        scanning = source(scanning=True, batch_size=2)
        scan = scanned(scanning)
        looking = source()
        found = looked_up(looking, [first, second, hashed, new_key()])

    unreadable = (
        "Unreadable: 1 session (not a string: 1): named as sessions, but not read, so not processed"
    )
    for out, err, returncode in runs:
        assert (err, returncode) == ("", 0)
        assert hashed[:7] not in out + err
        assert unreadable in section(out, "Totals")
    assert runs[0][0].splitlines()[0] == "Processed 2 sessions out of 3 total sessions"
    assert runs[1][0].splitlines()[0] == "Processed 2 sessions out of 3 total sessions"
    assert runs[2][0].splitlines()[0] == "Processed 1 sessions out of 3 total sessions"
    assert section(runs[2][0], "Totals")[-2:] == [unreadable, "Listed keys not found: 1 of 3"]
    # Processed, unreadable and gone add up to what the scan listed.
    assert sorted(scan) == sorted([first, second])
    assert scanning.unreadable == Counter({"not a string": 1})
    assert len(scan) + 1 + scanning.sessions_gone == scanning.total_sessions() == 3
    # And to what was listed.
    assert sorted(found) == sorted([first, second])
    assert looking.unreadable == Counter({"not a string": 1})
    assert (looking.keys_listed, looking.keys_not_found) == (4, 1)


@pytest.fixture
def restricted_user(redis_server: redis.Redis) -> Iterator[Callable[[str], str]]:
    """Make a Redis user that may run everything but one command; return its URL."""
    made: list[str] = []

    def user(forbidden: str) -> str:
        name = f"reader{len(made)}"
        redis_server.acl_setuser(
            name,
            enabled=True,
            passwords=["+secret"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", f"-{forbidden}"],
            reset=True,
        )
        made.append(name)
        kwargs = redis_server.connection_pool.connection_kwargs
        return f"redis://{name}:secret@{kwargs['host']}:{kwargs['port']}/0"

    yield user
    for name in made:
        redis_server.acl_deluser(name)


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
@pytest.mark.parametrize(
    ("forbidden", "options"),
    [("getrange", []), ("pttl", []), ("strlen", ["--bigger-than=1"]), ("scan", [])],
)
def test_a_command_the_acl_forbids_is_one_sentence(
    redis_location: str,
    restricted_user: Callable[[str], str],
    backend: str,
    forbidden: str,
    options: list[str],
    tmp_path: Path,
) -> None:
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        key = session_via_view(foo="bar")
    restricted = redis_cache(restricted_user(forbidden), backend)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": restricted}):
        scan = run_command(*options)
        listed = run_command(*options, ids_file(tmp_path, key))

    sentence = (
        f"CommandError: Redis refused the {forbidden.upper()} command to the cache's user "
        f"(NOPERM): reading sessions needs SCAN, GETRANGE, STRLEN and PTTL.\n"
    )
    assert scan == ("", sentence, 1)
    if forbidden != "scan":  # Listed keys are read without listing.
        assert listed == ("", sentence, 1)


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_a_user_the_acl_keeps_from_info_still_reads(
    redis_location: str, restricted_user: Callable[[str], str], backend: str
) -> None:
    # INFO only tells whether a replica is in step: without it, the server is read.
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        session_via_view(foo="bar")
    restricted = redis_cache(restricted_user("info"), backend)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": restricted}):
        out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 1 sessions out of 1 total sessions\n")


# The bound on what is read.


def large_and_small(cache: dict[str, Any]) -> tuple[str, str]:
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        return session_via_view(foo="bar"), session_via_view(filler="x" * 2000)


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_a_redis_value_over_the_bound_is_not_read(
    redis_location: str, redis_server: redis.Redis, backend: str
) -> None:
    cache = redis_cache(redis_location, backend)
    small, large = large_and_small(cache)
    sizes = {key: redis_server.strlen(redis_name(key)) for key in (small, large)}
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        scan = scanned(source(scanning=True, max_size=200))
        listed = looked_up(source(max_size=200), [small, large])
        out, err, returncode = run_command("--max-session-size=1KiB")

    for raws in (scan, listed):
        assert raws[small].data == {"foo": "bar"}
        assert raws[small].stored_size == sizes[small] < 200
        # Too large: not read, but measured as Redis measures it.
        assert raws[large].data is None
        assert raws[large].stored_size == sizes[large] > 2000
        assert raws[large].expires_at is not None
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == "Processed 2 sessions out of 2 total sessions"
    assert section(out, "Undecodable")[0].startswith(
        f"1 session, {sizes[large]} bytes (too large: 1)"
    )


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_redis_keys_gone_during_a_scan_are_counted(
    redis_location: str,
    redis_server: redis.Redis,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        keys = [session_via_view(n=str(n)) for n in range(3)]
        # Before the second batch is read, every session is deleted: its key
        # was listed, and is gone when read; so may be the third, if SCAN
        # listed it by then.
        monkeypatch.setattr(
            "analyze_sessions.sources.cache.time.sleep",
            lambda seconds: redis_server.delete(*[redis_name(key) for key in keys]),
        )
        scanning = source(scanning=True, batch_size=1, sleep_time=0.1)
        scan = scanned(scanning)

    assert len(scan) == 1
    assert scanning.unreadable == Counter()
    # Processed and gone add up to what the scan listed.
    assert 1 <= scanning.sessions_gone == (scanning.total_sessions() or 0) - 1


@pytest.mark.usefixtures("cache_table")
def test_a_database_cache_value_over_the_bound_is_not_read() -> None:
    small, large = large_and_small(DATABASE_CACHE)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": DATABASE_CACHE}):
        raws = looked_up(source(max_size=200), [small, large])
        stored = table_rows()

    assert raws[small].data == {"foo": "bar"}
    assert raws[large].data is None
    assert raws[large].stored_size == len(stored[cache_name(large)]) > 2000


def test_a_memcached_value_over_the_bound_is_not_decoded(memcached_location: str) -> None:
    cache = memcached_cache(memcached_location)
    small, large = large_and_small(cache)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        raws = looked_up(source(max_size=200), [small, large])
        client = MemcachedClient(memcached_location)
        size = len(client.get(cache_name(large)))
        client.close()

    assert raws[small].data == {"foo": "bar"}
    assert (raws[large].data, raws[large].stored_size) == (None, size)


BOMB = pickled({"x": b"\0" * (32 * 1024 * 1024)})


def peak_memory(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("compressor", "compress"),
    [
        ("zlib.ZlibCompressor", zlib.compress),
        ("gzip.GzipCompressor", gzip.compress),
        ("lzma.LzmaCompressor", lzma.compress),
    ],
)
def test_a_django_redis_decompression_bomb_stops_at_the_bound(
    redis_location: str, redis_server: redis.Redis, compressor: str, compress: Any
) -> None:
    cache = redis_cache(
        redis_location, "django-redis", COMPRESSOR=f"django_redis.compressors.{compressor}"
    )
    bomb = new_key()
    redis_server.set(redis_name(bomb), compress(BOMB))
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        key = session_via_view(filler="y" * 300)  # Compressed, as over the minimum length.
        raws: dict[str, RawSession] = {}
        peak = peak_memory(
            lambda: raws.update(looked_up(source(max_size=1024 * 1024), [key, bomb]))
        )

    assert raws[key].data == {"filler": "y" * 300}
    assert raws[bomb].data is None
    assert raws[bomb].stored_size == redis_server.strlen(redis_name(bomb))
    # Read whole, the bomb would take 64 MiB: 32 decompressed, 32 unpickled.
    assert peak < 16 * 1024 * 1024


def test_a_memcached_decompression_bomb_stops_at_the_bound(memcached_location: str) -> None:
    from pymemcache.serde import CompressedSerde

    cache = memcached_cache(memcached_location, serde=CompressedSerde())
    bomb = new_key()
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        key = session_via_view(filler="y" * 500)
        client = MemcachedClient(memcached_location)
        client.set(
            cache_name(bomb),
            zlib.compress(BOMB),
            flags=FLAG_PICKLE | FLAG_COMPRESSED,
            noreply=False,  # Answered: there before the source reads it.
        )
        client.close()
        raws: dict[str, RawSession] = {}
        peak = peak_memory(
            lambda: raws.update(looked_up(source(max_size=1024 * 1024), [key, bomb]))
        )

    assert raws[key].data == {"filler": "y" * 500}
    assert raws[bomb].data is None
    assert peak < 16 * 1024 * 1024


# USE_TZ = False.


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis", "memcached"])
def test_a_cache_with_use_tz_false(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "memcached":
        cache = memcached_cache(request.getfixturevalue("memcached_location"))
    else:
        request.getfixturevalue("redis_server")
        cache = redis_cache(request.getfixturevalue("redis_location"), backend)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE,
        CACHES={"default": cache},
        USE_TZ=False,
        TIME_ZONE="America/Chicago",
    ):
        key = session_via_view(foo="bar")
        raws = looked_up(source(), [key])
        out, err, returncode = run_command(ids_file(tmp_path, key))

    moment = raws[key].expires_at
    if backend == "memcached":  # memcached does not tell when a value expires.
        assert moment is None
    else:
        assert moment is not None and moment.tzinfo is timezone.utc
        assert abs(moment - datetime.now(timezone.utc) - timedelta(weeks=2)) < timedelta(minutes=1)
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[3].startswith("    foo (1 times, avg. size 11.00 bytes)")


# Caches that are refused.


class HomeMadeCache(BaseCache):
    """A cache backend this command knows nothing of."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)


@pytest.mark.parametrize(
    ("backend", "sentence"),
    [
        (
            "django.core.cache.backends.locmem.LocMemCache",
            "keeps sessions in the memory of each process that serves them, which no other "
            "process can read (and its reads delete expired entries): run the site with a "
            "shared cache to analyze its sessions.",
        ),
        (
            "django.core.cache.backends.dummy.DummyCache",
            "keeps nothing, so there are no sessions to analyze.",
        ),
        (
            "tests.test_sources_cache.HomeMadeCache",
            "is not one this command knows how to read, so it cannot promise that reading "
            "it neither writes to it nor unpickles what anyone put there: it is not read.",
        ),
    ],
)
@pytest.mark.parametrize("listed", [False, True])
def test_caches_that_are_refused(backend: str, sentence: str, listed: bool, tmp_path: Path) -> None:
    cache = {"BACKEND": backend, "LOCATION": "127.0.0.1:1"}
    options = [ids_file(tmp_path, new_key())] if listed else []
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        result = run_command(*options)

    assert result == ("", f"CommandError: The 'default' cache ({backend}) {sentence}\n", 1)


def test_pylibmc_is_refused() -> None:
    # Refused before the backend is made, which needs pylibmc installed.
    backend = "django.core.cache.backends.memcached.PyLibMCCache"
    cache = {"BACKEND": backend, "LOCATION": "127.0.0.1:1"}
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        for scanning in (True, False):
            with pytest.raises(UnsupportedEngine) as refused:
                source(scanning=scanning)

            assert str(refused.value) == (
                f"The 'default' cache ({backend}) cannot be read safely, as pylibmc "
                "unpickles every value itself with plain pickle: analyze with a cache of "
                "django.core.cache.backends.memcached.PyMemcacheCache pointed at the same "
                "servers."
            )


def test_a_cache_alias_that_is_not_configured() -> None:
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, SESSION_CACHE_ALIAS="sessions"):
        with pytest.raises(UnsupportedEngine) as refused:
            source()

    assert str(refused.value) == (
        "Cannot use the 'sessions' cache: SESSION_CACHE_ALIAS names it, but CACHES has no "
        "such cache."
    )


# Access times.


class RecordingProxy:
    """
    A TCP proxy in front of a real server that keeps, for each connection
    made through it, what the client sent.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent: list[bytearray] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            record = bytearray()
            self.sent.append(record)
            threading.Thread(target=self._pump, args=(client, server, record), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, None), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, record: bytearray | None) -> None:
        try:
            while data := source.recv(65536):
                if record is not None:
                    record += data
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()
        for end in self._sockets:
            end.close()


def resp(*words: str) -> bytes:
    """A command as redis-py writes it on the wire."""
    return b"".join(
        [f"*{len(words)}\r\n".encode()] + [f"${len(word)}\r\n{word}\r\n".encode() for word in words]
    )


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_reading_asks_redis_not_to_touch_keys(
    redis_location: str,
    redis_server: redis.Redis,
    backend: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    On Redis 7.2 and later, a run leaves OBJECT IDLETIME as it was. Before
    7.2 (the suite's own server is 7.0) Redis has no NO-TOUCH: then the test
    shows that every connection the run made, the one made again after a
    lost connection included, sent CLIENT NO-TOUCH ON before any read, and
    that the run went on when Redis refused it.
    """
    kwargs = redis_server.connection_pool.connection_kwargs
    proxy = RecordingProxy(kwargs["host"], kwargs["port"])
    killed: list[int] = []

    def pause(seconds: float) -> None:
        if not killed:  # Every client but the one asking: the run's own, among them.
            killed.append(redis_server.client_kill_filter(_type="normal"))

    monkeypatch.setattr("analyze_sessions.sources.cache.time.sleep", pause)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        for n in range(4):
            session_via_view(n=str(n))
    names = redis_server.keys(f"shop:3:{PREFIX}*")
    version = tuple(int(part) for part in redis_server.info("server")["redis_version"].split("."))
    touching = version >= (7, 2)
    if touching:
        time.sleep(2.1)  # OBJECT IDLETIME counts whole seconds.
    through_proxy = redis_cache(f"redis://127.0.0.1:{proxy.port}/0", backend)
    try:
        with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": through_proxy}):
            out, err, returncode = run_command("--batch-size=2", "--sleep-time=0.1")
    finally:
        proxy.close()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 4 sessions out of 4 total sessions\n")
    if touching:
        assert all(redis_server.object("idletime", name) >= 2 for name in names)
    reading = [bytes(sent) for sent in proxy.sent if b"GETRANGE" in sent or b"SCAN" in sent]
    assert killed and len(reading) >= 2  # The run connected again after the kill.
    no_touch = resp("CLIENT", "NO-TOUCH", "ON")
    for sent in reading:
        first_read = min(sent.find(word) for word in (b"GETRANGE", b"SCAN") if word in sent)
        assert 0 <= sent.find(no_touch) < first_read


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_a_time_to_live_past_the_calendar_is_no_expiry(
    redis_location: str, redis_server: redis.Redis, backend: str
) -> None:
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        key = session_via_view(foo="bar")
        # What PEXPIRE, or the site's own cache.touch(), accepts.
        redis_server.pexpire(redis_name(key), 10**15)

        out, err, returncode = run_command("--format=json")

    document = json.loads(out)
    assert (err, returncode) == ("", 0)
    assert document["sessions"]["processed"] == 1
    assert document["largest_sessions"][0]["expire_date"] is None


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_a_batch_of_large_redis_values_is_read_a_budget_at_a_time(
    redis_location: str, redis_server: redis.Redis, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("analyze_sessions.sources.redis_keys.READ_BUDGET", 1024 * 1024)
    with override_settings(
        SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": redis_cache(redis_location, backend)}
    ):
        keys = [session_via_view(filler="f" * 512 * 1024) for _ in range(10)]
        fillers: dict[str, int] = {}
        scanning = source(scanning=True, batch_size=100)

        def scan() -> None:
            for batch in scanning.scan():  # Kept only as long as the pipeline keeps it.
                for raw in batch:
                    fillers[raw.key] = len(unpacked(scanning, raw).data["filler"])

        # Ten values of half a megabyte, in one batch of keys: read two at a
        # time, and each two handed on before the next are read.
        peak = peak_memory(scan)

    assert fillers == {key: 512 * 1024 for key in keys}
    assert peak < 3 * 1024 * 1024


@pytest.mark.django_db
@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_redis_lists_only_names_shaped_as_the_engines_keys(
    redis_location: str, redis_server: redis.Redis, backend: str
) -> None:
    cache = redis_cache(redis_location, backend)
    with override_settings(SESSION_ENGINE=CACHE_ENGINE, CACHES={"default": cache}):
        keys = [session_via_view(n=str(n)) for n in range(2)]
        # Under the sessions' prefix, but of no shape Django gives a key.
        for name in ("short", "x" * 33, "UPPER" * 7, "a" * 32 + "b" * 100_000):
            redis_server.set(redis_name(name), b"1")
        out, err, returncode = run_command("--format=json")
    with override_settings(
        SESSION_ENGINE="tests.engines.cache_own_keys", CACHES={"default": cache}
    ):
        own = [session_via_view(n=str(n)) for n in range(3)]
        mine, own_err, own_returncode = run_command("--format=json")

    assert (err, returncode, own_err, own_returncode) == ("", 0, "", 0)
    document = json.loads(out)
    assert document["sessions"]["total"] == document["sessions"]["processed"] == 2
    assert {row["key_prefix"] for row in document["largest_sessions"]} == {key[:6] for key in keys}
    # An engine that makes its keys its own way has every name listed:
    # its own sessions, Django's, and the names of no shape (unreadable as
    # sessions, but named so).
    assert all(key.startswith("site") and len(key) == 16 for key in own)
    everything = json.loads(mine)
    assert everything["sessions"]["total"] == 2 + 3 + 2  # Not "UPPER"*7 nor the long name.
