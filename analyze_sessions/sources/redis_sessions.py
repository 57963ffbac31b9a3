"""
Sessions kept by django-redis-sessions (``redis_sessions.session``): each
session's signed data as a Redis string named ``<prefix>:<session key>``
(or the key alone, without a prefix), with a time to live.

The server is found as the engine finds it, from the settings it read
(``redis_sessions.settings``): ``SESSION_REDIS_CONNECTION_OBJECT``, else
``SESSION_REDIS``'s ``url``, ``unix_domain_socket_path``, or ``host`` and
``port`` (with ``db`` and ``password``), else the Sentinels of
``SESSION_REDIS_SENTINEL_LIST``, whose replica is read where one is in
step. The command's own clients are used, never the engine's. Where the
settings name the server, they have the command's own time limits: the
engine's ``socket_timeout`` is made for one read in a request, not for a
pipeline of a batch. A connection object's settings are copied whole.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.sources import SourceOptions, UnsupportedEngine
from analyze_sessions.sources.redis_keys import DEFAULT_TIMEOUT, RedisKeySource, key_glob


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
        engine_class = import_module("redis_sessions.session").SessionStore
        changed = [
            name
            for name in _WHERE_AND_HOW
            if getattr(store_class, name, None) is not getattr(engine_class, name)
        ]
        if changed:
            raise UnsupportedEngine(
                f"Session engine '{engine}' changes where or how django-redis-sessions keeps "
                f"sessions ({', '.join(f'{name}()' for name in changed)}): map it to a source "
                f"of its own in ANALYZE_SESSIONS_SOURCES."
            )
        return cls(keys=key_glob(store_class, engine_class), **options.reading())

    def __init__(self, *, keys: str = "*", **options: Any) -> None:
        super().__init__(**options)
        # What the engine read of the site's settings, once, when it was imported.
        engine_settings = import_module("redis_sessions.settings")
        prefix = engine_settings.SESSION_REDIS_PREFIX
        around = (f"{prefix}:" if prefix else "", "")
        try:
            pool, sentinel = _server(engine_settings)
        except (ValueError, TypeError, AttributeError, KeyError) as error:
            # Settings the engine itself would fail on, when it first connects.
            raise UnsupportedEngine(
                f"django-redis-sessions' settings name no Redis server this command can "
                f"connect to ({type(error).__name__}): {_SETTINGS_READ}."
            ) from error
        self._servers([pool], around=around, sentinel=sentinel, keys=keys)

    def _data(self, value: bytes) -> str:
        # As the engine's load() reads it. Signed data is ASCII: anything
        # else was not signed by Django, and fails the signature's check.
        return value.decode("ascii", errors="replace")


# What a subclass of the engine may not change for its sessions to be
# read as the engine's: where it keeps them, and how it writes and reads them.
_WHERE_AND_HOW = ("__init__", "get_real_stored_key", "save", "load")

_SETTINGS_READ = (
    "the connection object, SESSION_REDIS's url, unix_domain_socket_path, or host and port, "
    "or the (host, port) pairs of SESSION_REDIS_SENTINEL_LIST are read, in that order"
)


def _server(engine_settings: Any) -> tuple[Any, bool]:
    """The pool of the server the engine reads, and whether it is a Sentinel's."""
    from redis.sentinel import SentinelConnectionPool

    if engine_settings.SESSION_REDIS_CONNECTION_OBJECT is not None:
        pool = engine_settings.SESSION_REDIS_CONNECTION_OBJECT.connection_pool
        # A client of Sentinel's master_for() or slave_for(): its connections find their server.
        return pool, isinstance(pool, SentinelConnectionPool)
    if engine_settings.SESSION_REDIS_POOL is not None:
        raise UnsupportedEngine(
            "django-redis-sessions' SESSION_REDIS['POOL'] is not supported: the engine "
            "cannot make a session without a key with it (SessionStore() fails), so its "
            "servers are not read."
        )
    if _server_named(engine_settings):
        return _pool(engine_settings), False
    if engine_settings.SESSION_REDIS_SENTINEL_LIST is not None:
        return _sentinel_pool(engine_settings), True
    raise UnsupportedEngine(
        "django-redis-sessions' settings name no Redis server: set SESSION_REDIS's "
        "url, unix_domain_socket_path or host, or SESSION_REDIS_SENTINEL_LIST."
    )


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
    sentinels = [
        (str(host), int(port)) for host, port in engine_settings.SESSION_REDIS_SENTINEL_LIST
    ]
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        sentinels,
        socket_timeout=DEFAULT_TIMEOUT,
        socket_connect_timeout=DEFAULT_TIMEOUT,
        db=engine_settings.SESSION_REDIS_DB,
        password=engine_settings.SESSION_REDIS_PASSWORD,
    )
    return sentinel.master_for(service).connection_pool  # type: ignore[no-untyped-call]
