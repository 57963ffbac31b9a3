"""Redis with replicas: sessions are read from a replica, never the primary."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import caches
from django.test import override_settings

from tests.helpers import run_command
from tests.test_sources_cache import redis_cache

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
    cache = redis_cache([primary_location, replica_location], backend)  # type: ignore[arg-type]
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
