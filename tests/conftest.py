"""Start the database server the run asks for, or say why it cannot."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings

from analyze_sessions.sources.cache import CacheSource
from analyze_sessions.sources.database import DatabaseSource
from analyze_sessions.sources.redis_keys import RedisKeySource
from tests import servers

_UNAVAILABLE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    backend = os.environ.get("ANALYZE_SESSIONS_DB", "sqlite")
    if backend == "sqlite":
        return
    try:
        server = servers.start(backend)
    except servers.Unavailable as error:
        if os.environ.get("CI") == "true":
            raise pytest.UsageError(str(error)) from None
        config.stash[_UNAVAILABLE] = str(error)
        return
    config.add_cleanup(server.stop)
    databases: dict[str, dict[str, Any]] = settings.DATABASES
    for name, value in server.settings.items():
        # For django-admin processes that tests start.
        os.environ[f"ANALYZE_SESSIONS_DB_{name}"] = value
        for database in databases.values():
            database[name] = value


def pytest_report_header(config: pytest.Config) -> str:
    backend = os.environ.get("ANALYZE_SESSIONS_DB", "sqlite")
    unavailable = config.stash.get(_UNAVAILABLE, None)
    return f"database: {backend}" + (f" (unavailable: {unavailable})" if unavailable else "")


# The arguments of pytest.mark.django_db, in their order.
_DJANGO_DB_ARGUMENTS = (
    "transaction",
    "reset_sequences",
    "databases",
    "serialized_rollback",
    "available_apps",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("ANALYZE_SESSIONS_DB", "sqlite") == "sqlite":
        # The source reads SQLite through a read-only connection of its own,
        # which cannot see what a test wrote inside a transaction that is
        # never committed: on SQLite every database test commits, and the
        # database is emptied after it. PostgreSQL and MariaDB read through
        # the test's own connection, and keep the cheaper rolled-back tests.
        for item in items:
            marker = item.get_closest_marker("django_db")
            if marker is not None:
                arguments = dict(zip(_DJANGO_DB_ARGUMENTS, marker.args, strict=False))
                arguments.update(marker.kwargs, transaction=True)
                item.add_marker(pytest.mark.django_db(**arguments), append=False)
    unavailable = config.stash.get(_UNAVAILABLE, None)
    if unavailable is None:
        return
    skip = pytest.mark.skip(reason=unavailable)
    for item in items:
        if item.get_closest_marker("django_db"):
            item.add_marker(skip)


def _service(request: pytest.FixtureRequest, start: Callable[[], servers.Server]) -> str:
    try:
        server = start()
    except servers.Unavailable as error:
        if os.environ.get("CI") == "true":
            pytest.fail(str(error))
        pytest.skip(str(error))
    request.addfinalizer(server.stop)
    return server.settings["LOCATION"]


@pytest.fixture(scope="session")
def redis_location(request: pytest.FixtureRequest) -> str:
    """Where a Redis server started for this run listens."""
    return _service(request, servers.start_redis)


@pytest.fixture(scope="module")
def redis_primary_and_replica(request: pytest.FixtureRequest) -> tuple[str, str]:
    """
    Where a Redis primary and its replica listen: servers of their own, as a
    replica's heartbeats would show in the run's Redis's statistics.
    """
    primary = _service(request, servers.start_redis)
    port = int(primary.rsplit(":", 1)[1].split("/")[0])
    return primary, _service(request, lambda: servers.start_redis(replica_of=port))


SENTINEL_SERVICE = "sessions"


@pytest.fixture(scope="module")
def redis_sentinel(
    request: pytest.FixtureRequest, redis_primary_and_replica: tuple[str, str]
) -> tuple[str, int]:
    """
    Where a Sentinel watching the module's primary listens, once it knows
    of its replica, up and in step.
    """
    primary = redis_primary_and_replica[0]
    port = int(primary.rsplit(":", 1)[1].split("/")[0])
    location = _service(request, lambda: servers.start_redis_sentinel(port, SENTINEL_SERVICE))
    host, sentinel_port = location.rsplit(":", 1)
    with redis.Redis(host, int(sentinel_port)) as sentinel:
        deadline = time.monotonic() + 60
        while not any(
            replica["master-link-status"] == "ok" and not replica["is_sdown"]
            for replica in sentinel.sentinel_slaves(SENTINEL_SERVICE)
        ):
            assert time.monotonic() < deadline, "The Sentinel found no replica."
            time.sleep(0.1)
    return host, int(sentinel_port)


@pytest.fixture(scope="module")
def redis_shards(request: pytest.FixtureRequest) -> list[str]:
    """Where three Redis servers of their own listen, to shard a cache across."""
    return [_service(request, servers.start_redis) for _ in range(3)]


@pytest.fixture
def redis_server(redis_location: str) -> Iterator[redis.Redis]:
    """A client of the run's Redis, emptied first, and closed after the test."""
    with redis.Redis.from_url(redis_location) as server:
        server.flushdb()
        yield server


@pytest.fixture(scope="session")
def memcached_location(request: pytest.FixtureRequest) -> str:
    """Where a memcached server started for this run listens."""
    return _service(request, servers.start_memcached)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retry lost connections without the pauses a production run takes."""
    monkeypatch.setattr(DatabaseSource, "retry_delays", (0.01, 0.01, 0.01))
    monkeypatch.setattr(CacheSource, "retry_delays", (0.01, 0.01, 0.01))
    monkeypatch.setattr(RedisKeySource, "retry_delays", (0.01, 0.01, 0.01))
