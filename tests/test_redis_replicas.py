"""Redis with replicas: sessions are read from a replica, never the primary."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import caches
from django.test import override_settings

from tests import servers
from tests.conftest import SENTINEL_SERVICE
from tests.helpers import run_command
from tests.test_sources_cache import redis_cache, redis_name

pytestmark = pytest.mark.django_db

# What reading sessions sends, and what the report counts with.
READS = ("scan", "getrange", "strlen", "pttl")


def command_calls(server: redis.Redis) -> dict[str, int]:
    """How often each command was called on ``server`` since its statistics were reset."""
    stats: dict[str, Any] = server.info("commandstats")
    return {name.removeprefix("cmdstat_"): found["calls"] for name, found in stats.items()}


def replicated(primary: redis.Redis, replica: redis.Redis) -> None:
    """Wait until the replica holds what the primary holds."""
    deadline = time.monotonic() + 30
    while replica.dbsize() != primary.dbsize():
        assert time.monotonic() < deadline, "The replica did not catch up."
        time.sleep(0.05)


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_sessions_are_read_from_a_replica_and_never_the_primary(
    redis_primary_and_replica: tuple[str, str], backend: str
) -> None:
    primary_location, replica_location = redis_primary_and_replica
    primary = redis.Redis.from_url(primary_location)
    primary.flushdb()
    replica = redis.Redis.from_url(replica_location)
    cache = redis_cache([primary_location, replica_location], backend)
    with override_settings(
        CACHES={"default": cache}, SESSION_ENGINE="django.contrib.sessions.backends.cache"
    ):
        for n in range(25):
            store = SessionStore()
            store["n"] = n
            store.create()
        replicated(primary, replica)
        primary.config_resetstat()
        replica.config_resetstat()

        out, err, returncode = run_command()
        caches["default"].close()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 25 sessions out of 25 total sessions\n")
    # The primary's own statistics: not one read of the scan reached it.
    assert [name for name in command_calls(primary) if name in READS] == []
    assert {"scan", "getrange", "pttl"} <= set(command_calls(replica))
    primary.close()
    replica.close()


def test_sentinel_finds_the_replica_that_is_read(
    redis_primary_and_replica: tuple[str, str], redis_sentinel: tuple[str, int]
) -> None:
    primary_location, replica_location = redis_primary_and_replica
    primary = redis.Redis.from_url(primary_location)
    primary.flushdb()
    replica = redis.Redis.from_url(replica_location)
    cache = sentinel_cache([redis_sentinel])
    with override_settings(
        CACHES={"default": cache}, SESSION_ENGINE="django.contrib.sessions.backends.cache"
    ):
        for n in range(25):
            store = SessionStore()
            store["n"] = "n" * n
            store.create()
        replicated(primary, replica)
        primary.config_resetstat()
        replica.config_resetstat()

        out, err, returncode = run_command("--format=json")
        caches["default"].close()

    assert (err, returncode) == ("", 0)
    sessions = json.loads(out)["sessions"]
    assert (sessions["processed"], sessions["total"]) == (25, 25)
    assert [name for name in command_calls(primary) if name in READS] == []
    assert {"scan", "getrange", "pttl"} <= set(command_calls(replica))
    primary.close()
    replica.close()


# django-redis's ShardClient.add() warns about its own call of set().
@pytest.mark.filterwarnings("ignore:set on sharded client:UserWarning")
def test_every_shard_is_read_and_each_session_counted_once(redis_shards: list[str]) -> None:
    shards = [redis.Redis.from_url(location) for location in redis_shards]
    for shard in shards:
        shard.flushdb()
    cache = redis_cache(
        redis_shards, "django-redis", CLIENT_CLASS="django_redis.client.ShardClient"
    )
    with override_settings(
        CACHES={"default": cache}, SESSION_ENGINE="django.contrib.sessions.backends.cache"
    ):
        keys: list[str] = []
        for n in range(60):
            store = SessionStore()
            store["n"] = "n" * n
            store.create()
            assert store.session_key is not None
            keys.append(store.session_key)
        # Where the site keeps each session: every shard holds some.
        holders = {key: next(s for s in shards if s.exists(redis_name(key))) for key in keys}
        assert all(shard.dbsize() for shard in shards)
        sizes = {key: holders[key].strlen(redis_name(key)) for key in keys}
        # A stale copy of a session on a shard the site does not read it from
        # (left there by a change of shards): not a session of the site's.
        stale = keys[0]
        elsewhere = next(s for s in shards if s is not holders[stale])
        copy = holders[stale].get(redis_name(stale))
        assert isinstance(copy, bytes)
        elsewhere.set(redis_name(stale), copy + b"stale")
        before = {i: dict(shard.info("commandstats")) for i, shard in enumerate(shards)}

        out, err, returncode = run_command("--format=json")
        listed_out, listed_err, listed_returncode = run_command(
            "--format=json", "--ids-from=-", stdin="\n".join(keys)
        )
        caches["default"].close()

    for output, error, code in (
        (out, err, returncode),
        (listed_out, listed_err, listed_returncode),
    ):
        assert (error, code) == ("", 0)
        sessions = json.loads(output)["sessions"]
        assert sessions["processed"] == 60
        assert json.loads(output)["stored_bytes"]["total"] == sum(sizes.values())
    assert json.loads(out)["sessions"]["total"] == 60
    # Each shard was read.
    for i, shard in enumerate(shards):
        assert (
            command_calls(shard).get("getrange", 0)
            > before[i].get("cmdstat_getrange", {"calls": 0})["calls"]
        )
        shard.close()


@pytest.mark.parametrize("backend", ["RedisCache", "django-redis"])
def test_a_replica_out_of_step_with_its_primary_is_not_read(
    request: pytest.FixtureRequest, redis_primary_and_replica: tuple[str, str], backend: str
) -> None:
    # A replica of a primary it cannot reach: it holds none of the sessions.
    server = servers.start_redis(replica_of=servers.free_port())
    request.addfinalizer(server.stop)
    primary_location = redis_primary_and_replica[0]
    lost = server.settings["LOCATION"]
    cache = redis_cache([primary_location, lost], backend)
    with override_settings(
        CACHES={"default": cache}, SESSION_ENGINE="django.contrib.sessions.backends.cache"
    ):
        SessionStore().create()
        out, err, returncode = run_command()
        caches["default"].close()

    address = lost.removeprefix("redis://").removesuffix("/0")
    assert (out, err, returncode) == (
        "",
        f"CommandError: The Redis replica at {address} is not in step "
        f"with its primary (its link to it is down): it may hold only some of the sessions, "
        f"so it is not read.\n",
        1,
    )


def sentinel_cache(sentinels: list[tuple[str, int]], service: str = SENTINEL_SERVICE) -> Any:
    # As django-redis's documentation sets Sentinel up: the service's name
    # as the host, the Sentinels in the options.
    return redis_cache(
        f"redis://{service}/0",
        "django-redis",
        CLIENT_CLASS="django_redis.client.SentinelClient",
        CONNECTION_FACTORY="django_redis.pool.SentinelConnectionFactory",
        SENTINELS=sentinels,
    )


def test_a_service_no_sentinel_knows_is_one_sentence(redis_sentinel: tuple[str, int]) -> None:
    nowhere = ("127.0.0.1", servers.free_port())
    with override_settings(
        CACHES={"default": sentinel_cache([nowhere, redis_sentinel], "elsewhere")},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
    ):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err == (
        "CommandError: No Sentinel named a server of the Redis service "
        "'elsewhere' (ConnectionError, ERR).\n"
    )


def test_through_a_sentinel_that_knows_no_replica_the_primary_is_read(
    request: pytest.FixtureRequest,
) -> None:
    # As the site's own reads do then.
    primary_server = servers.start_redis()
    request.addfinalizer(primary_server.stop)
    port = int(primary_server.settings["LOCATION"].rsplit(":", 1)[1].split("/")[0])
    sentinel_server = servers.start_redis_sentinel(port, "lone")
    request.addfinalizer(sentinel_server.stop)
    host, sentinel_port = sentinel_server.settings["LOCATION"].rsplit(":", 1)
    with override_settings(
        CACHES={"default": sentinel_cache([(host, int(sentinel_port))], "lone")},
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
    ):
        for _ in range(3):
            SessionStore().create()
        out, err, returncode = run_command()
        caches["default"].close()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 3 sessions out of 3 total sessions\n")
    with redis.Redis.from_url(primary_server.settings["LOCATION"]) as primary:
        assert "scan" in command_calls(primary)
