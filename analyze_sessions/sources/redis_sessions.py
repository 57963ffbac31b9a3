"""
Sessions kept by django-redis-sessions (``redis_sessions.session``): each
session's signed data as a Redis string named ``<prefix>:<session key>``
(or the key alone, without a prefix), with a time to live.

The server is found as the engine finds it, from the settings it read
(``redis_sessions.settings``): ``SESSION_REDIS_CONNECTION_OBJECT``, else
``SESSION_REDIS``'s ``url``, ``unix_domain_socket_path``, or ``host`` and
``port`` (with ``db`` and ``password``), else the Sentinels of
``SESSION_REDIS_SENTINEL_LIST``, whose replica is read where one is in
step. The command's own clients are used, never the engine's, with the
command's own time limits: the engine's ``socket_timeout`` is made for one
read in a request, not for a pipeline of a batch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.sources import SourceOptions, UnsupportedEngine
from analyze_sessions.sources.redis_keys import DEFAULT_TIMEOUT, RedisKeySource


class RedisSessionsSource(RedisKeySource):
    """
    Read the sessions of django-redis-sessions: listed with SCAN on its
    prefix, their expiry from their time to live, and their data handed to
    the decoder as the engine's ``decode()`` reads it, so that sessions
    signed with a retired key, or not signed at all, are told apart.
    """

    @classmethod
    def open(
        cls, engine: str, store_class: type[SessionBase], options: SourceOptions
    ) -> RedisSessionsSource:
        return cls(**options.reading())

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # What the engine read of the site's settings, once, when it was imported.
        engine_settings = import_module("redis_sessions.settings")
        prefix = engine_settings.SESSION_REDIS_PREFIX
        around = (f"{prefix}:" if prefix else "", "")
        if engine_settings.SESSION_REDIS_CONNECTION_OBJECT is not None:
            pool = engine_settings.SESSION_REDIS_CONNECTION_OBJECT.connection_pool
            self._servers([pool], around=around)
        elif engine_settings.SESSION_REDIS_POOL is not None:
            raise UnsupportedEngine(
                "django-redis-sessions' SESSION_REDIS['POOL'] is not supported: the engine "
                "cannot make a session without a key with it (SessionStore() fails), so its "
                "servers are not read."
            )
        elif _server_named(engine_settings):
            self._servers([_pool(engine_settings)], around=around)
        elif engine_settings.SESSION_REDIS_SENTINEL_LIST is not None:
            self._servers([_sentinel_pool(engine_settings)], around=around, sentinel=True)
        else:
            raise UnsupportedEngine(
                "django-redis-sessions' settings name no Redis server: set SESSION_REDIS's "
                "url, unix_domain_socket_path or host, or SESSION_REDIS_SENTINEL_LIST."
            )

    def _data(self, value: bytes) -> str:
        # As the engine's load() reads it. Signed data is ASCII: anything
        # else was not signed by Django, and fails the signature's check.
        return value.decode("ascii", errors="replace")


def _server_named(engine_settings: Any) -> bool:
    """
    Whether the settings name one server, which the engine then uses even
    where it has Sentinels too: ``host`` is ``localhost`` unless set, so
    the Sentinels are used only with ``host`` set to None.
    """
    return any(
        value is not None
        for value in (
            engine_settings.SESSION_REDIS_URL,
            engine_settings.SESSION_REDIS_UNIX_DOMAIN_SOCKET_PATH,
            engine_settings.SESSION_REDIS_HOST,
        )
    )


def _pool(engine_settings: Any) -> Any:
    """A pool of connections to the one server the settings name, as the engine connects."""
    import redis

    if engine_settings.SESSION_REDIS_URL is not None:
        return redis.ConnectionPool.from_url(engine_settings.SESSION_REDIS_URL)
    common = {
        "db": engine_settings.SESSION_REDIS_DB,
        "password": engine_settings.SESSION_REDIS_PASSWORD,
    }
    if engine_settings.SESSION_REDIS_UNIX_DOMAIN_SOCKET_PATH is not None:
        return redis.ConnectionPool(
            connection_class=redis.UnixDomainSocketConnection,
            path=engine_settings.SESSION_REDIS_UNIX_DOMAIN_SOCKET_PATH,
            **common,
        )
    return redis.ConnectionPool(
        host=engine_settings.SESSION_REDIS_HOST, port=engine_settings.SESSION_REDIS_PORT, **common
    )


def _sentinel_pool(engine_settings: Any) -> Any:
    """The pool of the Sentinels' service, which finds its server on the first read."""
    from redis.sentinel import Sentinel

    service = engine_settings.SESSION_REDIS_SENTINEL_MASTER_ALIAS
    if not service:
        raise UnsupportedEngine(
            "django-redis-sessions' SESSION_REDIS_SENTINEL_LIST is set, but not the service "
            "it watches: set SESSION_REDIS_SENTINEL_MASTER_ALIAS."
        )
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(engine_settings.SESSION_REDIS_SENTINEL_LIST),
        socket_timeout=DEFAULT_TIMEOUT,
        socket_connect_timeout=DEFAULT_TIMEOUT,
        db=engine_settings.SESSION_REDIS_DB,
        password=engine_settings.SESSION_REDIS_PASSWORD,
    )
    return sentinel.master_for(service).connection_pool  # type: ignore[no-untyped-call]
