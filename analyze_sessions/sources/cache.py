"""
Sessions kept in a cache by Django's ``cache`` engine.

Each cache is read as it stores its values, never through the backend's own
reads: those delete what has expired (the database, the files, local
memory) or unpickle whatever anyone who can write to the cache put there
(Redis, memcached). Values are unpickled only by
:func:`analyze_sessions.unpickling.loads`, and never read past the bound
the source is given.
"""

from __future__ import annotations

import base64
import lzma
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from functools import partial
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.core.cache import BaseCache, caches
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.memcached import PyLibMCCache, PyMemcacheCache
from django.core.cache.backends.redis import RedisCache, RedisSerializer
from django.db import DatabaseError, connections, models, router, transaction
from django.utils.module_loading import import_string

from analyze_sessions import unpickling
from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    Packed,
    RawSession,
    Source,
    SourceError,
    SourceOptions,
    UnsupportedEngine,
    aware,
    driver_message,
    not_made_from,
    valid_key,
)
from analyze_sessions.sources.redis_keys import DEFAULT_TIMEOUT, RedisKeySource, key_glob

# Stands for the session key while the cache's key function runs, so the
# keys of all sessions can be matched whatever that function adds around it.
_MARK = "\x00session-key\x00"

# Keeps an IN list under every database's limit on query parameters.
MAX_KEYS_PER_QUERY = 10_000

# memcached refuses longer keys; such a session cannot be there.
MAX_MEMCACHED_KEY_LENGTH = 250

MEMCACHED_KEYS_AT_ONCE = 16


def cache_source(
    store_class: type[CacheSessionStore],
    *,
    scanning: bool,
    bigger_than: int | None,
    batch_size: int,
    sleep_time: float,
    key_range: KeyRange = EVERY_KEY,
    max_size: int = DEFAULT_MAX_SESSION_SIZE,
) -> Source:
    """
    The source for the engine's cache: one that lists, where it can, and
    one that reads the cache as it stores values, where the command knows
    how; any other cache is refused with the reason.
    """
    alias = settings.SESSION_CACHE_ALIAS
    # Refused before the backend is made: making it imports its client,
    # which may not be installed.
    _refuse_unsafe(alias, _backend_class(alias))
    try:
        cache = caches[alias]
    except Exception as error:  # Whatever a misconfigured backend raises.
        raise UnsupportedEngine(
            f"Cannot use the '{alias}' cache: {driver_message(error)}."
        ) from error
    prefix = store_class.cache_key_prefix
    options: dict[str, Any] = {
        "bigger_than": bigger_than,
        "batch_size": batch_size,
        "sleep_time": sleep_time,
        "key_range": key_range,
        "max_size": max_size,
    }
    if isinstance(cache, RedisCache) or _is_django_redis(type(cache)):
        return RedisSource(cache, prefix, keys=key_glob(store_class, CacheSessionStore), **options)
    if scanning:
        # Said here, before the run starts, for every cache that cannot list.
        raise UnsupportedEngine(
            f"The '{alias}' cache ({_class_path(type(cache))}) cannot list its keys, so its "
            f"sessions cannot all be found: pass --ids-from with the keys of the sessions to "
            f"analyze."
        )
    if isinstance(cache, FileBasedCache):
        from analyze_sessions.sources.filecache import FileCacheSource

        file_source: Source = FileCacheSource(cache, prefix, **options)
        return file_source
    if isinstance(cache, DatabaseCache):
        return DatabaseCacheSource(cache, prefix, **options)
    assert isinstance(cache, PyMemcacheCache)  # As _refuse_unsafe() saw to it.
    return MemcachedSource(cache, prefix, **options)


def _backend_class(alias: str) -> type[Any]:
    config = settings.CACHES.get(alias)
    if config is None:
        raise UnsupportedEngine(
            f"Cannot use the '{alias}' cache: SESSION_CACHE_ALIAS names it, but CACHES "
            f"has no such cache."
        )
    path = config.get("BACKEND", "")
    try:
        backend: type[Any] = import_string(path)
    except ImportError as error:
        raise UnsupportedEngine(
            f"Cannot use the '{alias}' cache: its BACKEND '{path}' cannot be imported."
        ) from error
    return backend


def _refuse_unsafe(alias: str, backend: type[Any]) -> None:
    """Refuse a cache whose reads may write, or run code that the cache holds."""
    named = f"The '{alias}' cache ({_class_path(backend)})"
    if not isinstance(backend, type):
        raise UnsupportedEngine(f"{named} is not a cache backend class, so it is not read.")
    if issubclass(backend, LocMemCache):
        raise UnsupportedEngine(
            f"{named} keeps sessions in the memory of each process that serves them, which "
            f"no other process can read (and its reads delete expired entries): run the "
            f"site with a shared cache to analyze its sessions."
        )
    if issubclass(backend, DummyCache):
        raise UnsupportedEngine(f"{named} keeps nothing, so there are no sessions to analyze.")
    if issubclass(backend, PyLibMCCache):
        raise UnsupportedEngine(
            f"{named} cannot be read safely, as pylibmc unpickles every value itself with "
            f"plain pickle: analyze with a cache of "
            f"django.core.cache.backends.memcached.PyMemcacheCache pointed at the same "
            f"servers."
        )
    known = (FileBasedCache, DatabaseCache, PyMemcacheCache, RedisCache)
    if not (issubclass(backend, known) or _is_django_redis(backend)):
        raise UnsupportedEngine(
            f"{named} is not one this command knows how to read, so it cannot promise "
            f"that reading it neither writes to it nor unpickles what anyone put there: "
            f"it is not read."
        )


def _is_django_redis(backend: type[Any]) -> bool:
    return backend.__module__.startswith("django_redis.")


def _class_path(backend: Any) -> str:
    return f"{getattr(backend, '__module__', '?')}.{getattr(backend, '__qualname__', '?')}"


def unpickled(data: bytes, max_size: int) -> Any:
    """
    The value a cache pickled, built only from the types a session can
    hold: a :class:`~analyze_sessions.unpickling.Refused` for a pickle of
    any other class, None (too large) for one that would build more than
    ``max_size`` bytes hold, and ``data`` itself, which the decoder calls a
    bad payload, where it is no pickle.
    """
    try:
        return unpickling.loads(data, max_size)
    except unpickling.Refused as refused:
        return refused
    except unpickling.TooLarge:
        return None
    except Exception:  # Whatever a broken or hostile pickle makes pickle raise.
        return data


def decompressed(data: bytes, decompressor: Any, max_size: int) -> bytes | None:
    """
    What ``decompressor`` (a zlib or lzma decompressor object) makes of
    ``data``, or None where that is more than ``max_size`` bytes: a few
    kilobytes can expand to gigabytes. Raises ValueError, or the
    decompressor's error, where ``data`` is not a whole compressed stream.
    """
    output: bytes = decompressor.decompress(data, max_size + 1)
    if len(output) > max_size:
        return None
    if not decompressor.eof:
        raise ValueError("truncated")
    return output


class CacheSource:
    """
    What the sources of caches that cannot list their keys share: only
    sessions whose keys are given can be read, a batch at a time, with a
    pause between two batches. Subclasses read a batch (``_read_many``).
    """

    # Reads what it finds when it finds it: nothing is listed first, to be gone after.
    sessions_gone = 0

    @classmethod
    def open(cls, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Source:
        """The source for the engine's cache (see :func:`cache_source`)."""
        if not issubclass(store_class, CacheSessionStore):
            raise UnsupportedEngine(not_made_from(engine, "cache"))
        return cache_source(store_class, scanning=options.scanning, **options.reading())

    # The pauses before each new try of a call whose connection was lost.
    retry_delays: tuple[float, ...] = (1.0, 3.0, 10.0)

    def __init__(
        self,
        cache: BaseCache,
        key_prefix: str,
        *,
        bigger_than: int | None = None,
        batch_size: int = 1000,
        sleep_time: float = 0.0,
        key_range: KeyRange = EVERY_KEY,
        max_size: int = DEFAULT_MAX_SESSION_SIZE,
    ) -> None:
        self.cache = cache
        self.key_range = key_range
        self.key_prefix = key_prefix
        self.bigger_than = bigger_than
        self.batch_size = batch_size
        self.sleep_time = sleep_time
        self.keys_listed = 0
        self.keys_not_found = 0
        self._batches = 0
        self.max_size = max_size
        self.unreadable: Counter[str] = Counter()
        # Sessions processed whose expiry the store holds but could not be read.
        self.unreadable_expiry = 0

    def total_sessions(self) -> int | None:
        """None: such a cache cannot count its sessions."""
        return None

    def scan(self) -> Iterator[list[RawSession]]:
        raise UnsupportedEngine("This cache cannot list its keys: pass --ids-from.")

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        wanted = sorted(key for key in set(keys) if in_range(key, self.key_range))
        self.keys_listed += len(wanted)
        size = self._keys_per_batch()
        try:
            for start in range(0, len(wanted), size):
                chunk = wanted[start : start + size]
                self._pause()
                batch, found = self._read_many([key for key in chunk if valid_key(key)])
                self.keys_not_found += len(chunk) - found
                if batch:
                    yield batch
        finally:
            self.close()

    def close(self) -> None:
        """Let go of the connections the source made; it makes new ones if used again."""

    def _keys_per_batch(self) -> int:
        return self.batch_size

    def _read_many(self, keys: list[str]) -> tuple[list[RawSession], int]:
        """
        The sessions of ``keys`` that pass the size filter, and how many of
        ``keys`` the cache holds (whether they pass, cannot be read, or not).
        Their data is :class:`Packed`: see ``unpack()``.
        """
        raise NotImplementedError

    def unpack(self, payload: Any) -> Any:
        """
        The value that the ``payload`` of a :class:`Packed` stands for: the
        session dict, built only of what a session holds; a Refused for a
        pickle of another class; None past the bound; else the bytes, for
        the decoder to call a bad payload. Called where what anyone who
        can write to the cache chose cannot take the process down.
        """
        raise NotImplementedError

    def _passes(self, stored_size: int) -> bool:
        return self.bigger_than is None or stored_size > self.bigger_than

    def _pause(self) -> None:
        if self._batches and self.sleep_time:
            time.sleep(self.sleep_time)
        self._batches += 1


class DatabaseCacheSource(CacheSource):
    """
    Read listed sessions from the table of Django's DatabaseCache, never
    writing.

    The backend's get_many() deletes the expired rows it meets; this reads
    the table with a SELECT instead, in the database that the cache's router
    reads from, and reports expired sessions as expired. A value is the
    base64 of a pickle; its stored size is the length of that text, what
    the table holds.
    """

    def __init__(self, cache: DatabaseCache, key_prefix: str, **options: Any) -> None:
        super().__init__(cache, key_prefix, **options)
        self.table: str = cache._table  # type: ignore[attr-defined]
        self.using: str = router.db_for_read(cache.cache_model_class)

    def _keys_per_batch(self) -> int:
        limit = connections[self.using].features.max_query_params or MAX_KEYS_PER_QUERY
        # Leave room for the parameters of the size bounds.
        return max(1, min(self.batch_size, limit - 2, MAX_KEYS_PER_QUERY))

    def _read_many(self, keys: list[str]) -> tuple[list[RawSession], int]:
        if not keys:
            return [], 0
        names = {str(self.cache.make_key(self.key_prefix + key)): key for key in keys}
        connection = connections[self.using]
        try:
            rows = self._read_only(*self._query(list(names)))
        except DatabaseError as error:
            # A driver's message can quote what the table holds.
            raise SourceError(
                f"Cannot read the cache table '{self.table}' in the '{self.using}' "
                f"database ({type(error).__name__})."
            ) from error
        expression = models.Expression(output_field=models.DateTimeField())
        converters = [
            *connection.ops.get_db_converters(expression),
            *expression.get_db_converters(connection),
        ]
        batch = []
        found = 0
        for name, value, expires, stored_size in rows:
            key = names.get(name)
            if key is None:  # A name the database matched in its own way (case, padding).
                continue
            found += 1
            if stored_size is not None and not self._passes(stored_size):
                continue
            expires_at = self._expiry(expires, converters, connection)
            if stored_size is None:  # NULL, in a table made by hand.
                batch.append(RawSession(key, b"", expires_at, 0))
            elif stored_size > self.max_size:
                batch.append(RawSession(key, None, expires_at, stored_size))
            else:
                batch.append(RawSession(key, Packed(value), expires_at, stored_size))
        return batch, found

    def _query(self, names: list[str]) -> tuple[str, list[Any]]:
        connection = connections[self.using]
        quote = connection.ops.quote_name
        value, expires = quote("value"), quote("expires")
        length = f"{'CHAR_LENGTH' if connection.vendor == 'mysql' else 'LENGTH'}({value})"
        if connection.vendor == "sqlite":
            # As bytes: SQLite keeps whatever it was given, and its driver's
            # error for text that is not UTF-8 quotes the text.
            value, expires = f"CAST({value} AS BLOB)", f"CAST({expires} AS BLOB)"
        # Only a value that will be decoded is sent: not one past the bound,
        # nor one the size filter leaves out.
        wanted = f"{length} <= %s"
        params: list[Any] = [self.max_size]
        if self.bigger_than is not None:
            wanted += f" AND {length} > %s"
            params.append(self.bigger_than)
        sql = (
            f"SELECT {quote('cache_key')}, CASE WHEN {wanted} THEN {value} END, {expires}, "
            f"{length} FROM {quote(self.table)} "
            f"WHERE {quote('cache_key')} IN ({', '.join(['%s'] * len(names))})"
        )
        return sql, [*params, *names]

    def _read_only(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        # PostgreSQL can refuse writes outright, in a transaction declared
        # read-only, as the database source reads sessions.
        connection = connections[self.using]
        if connection.vendor == "postgresql" and connection.get_autocommit():
            with transaction.atomic(using=self.using):
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION READ ONLY")
                    cursor.execute(sql, params)
                    return list(cursor.fetchall())
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return list(cursor.fetchall())

    def _expiry(self, expires: Any, converters: list[Any], connection: Any) -> datetime | None:
        """The expiry of a row, as the backend reads it, made aware; None if unreadable."""
        try:
            if isinstance(expires, bytes):
                expires = expires.decode("ascii")
            expression = models.Expression(output_field=models.DateTimeField())
            for converter in converters:
                expires = converter(expires, expression, connection)
            if not isinstance(expires, datetime):
                raise TypeError("not a datetime")
        except Exception:  # Whatever a hand-made or damaged row makes the converters raise.
            self.unreadable_expiry += 1
            return None
        if expires.replace(tzinfo=None) >= datetime.max.replace(microsecond=0):
            return None  # What the backend writes for a value that never expires.
        moment = aware(expires)
        assert moment is not None
        try:
            return moment.astimezone(timezone.utc)
        except (OverflowError, ValueError):  # Off either end of the calendar in UTC.
            return datetime.min.replace(tzinfo=timezone.utc)

    def unpack(self, value: Any) -> Any:
        try:
            if isinstance(value, str):
                value = value.encode("ascii")
            pickled = base64.b64decode(value, validate=True)
        except (ValueError, TypeError):  # Not base64, so no value the backend wrote.
            return value if isinstance(value, bytes) else b""
        return unpickled(pickled, self.max_size)


class _RawSerde:
    """A pymemcache serde that keeps what memcached holds: the bytes and their flags."""

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        raise TypeError("This client only reads.")

    def deserialize(self, key: Any, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


class MemcachedSource(CacheSource):
    """
    Read listed sessions from memcached, as Django's PyMemcacheCache keeps
    them.

    The backend's client would unpickle every value with plain pickle: this
    reads with a pymemcache client of its own, on the same servers, that
    keeps each value's bytes and flags, and decodes them as pymemcache's
    serde would, unpickling only what a session can hold. The stored size
    is the length of what memcached holds.
    """

    def __init__(self, cache: PyMemcacheCache, key_prefix: str, **options: Any) -> None:
        super().__init__(cache, key_prefix, **options)
        from pymemcache import HashClient
        from pymemcache.serde import CompressedSerde, PickleSerde

        client_options = dict(cache._options)  # type: ignore[attr-defined]
        serde = client_options.pop("serde", None)
        legacy = client_options.pop("serializer", None), client_options.pop("deserializer", None)
        # Only the serdes whose format is known: the pickle serde, alone or
        # compressed with zlib.
        self._compressed = type(serde) is CompressedSerde
        inner = serde._serde if self._compressed else serde
        if (
            legacy != (None, None)
            or type(inner) is not PickleSerde
            or (self._compressed and serde._decompress is not zlib.decompress)
        ):
            raise UnsupportedEngine(
                f"The memcached cache's serde ({_class_path(type(serde))}) is not one this "
                f"command knows how to read safely: only pymemcache's pickle serde, and its "
                f"CompressedSerde with zlib, are read."
            )
        for option in ("connect_timeout", "timeout"):
            if client_options.get(option) is None:
                client_options[option] = DEFAULT_TIMEOUT
        self._client = HashClient(cache.client_servers, serde=_RawSerde(), **client_options)

    def close(self) -> None:
        self._client.close()

    def _keys_per_batch(self) -> int:
        # A get hands over whole values, up to memcached's largest item
        # (1 MiB unless -I says more): a few at a time keep a batch small.
        return min(self.batch_size, MEMCACHED_KEYS_AT_ONCE)

    def _read_many(self, keys: list[str]) -> tuple[list[RawSession], int]:
        names = {}
        for key in keys:
            name = str(self.cache.make_key(self.key_prefix + key))
            # No such key can be in memcached, and asking for one would fail the batch.
            if len(name.encode()) <= MAX_MEMCACHED_KEY_LENGTH and name.isprintable():
                if " " not in name:
                    names[name] = key
        if not names:
            return [], 0
        try:
            values = self._client.get_many(list(names))
        except OSError as error:
            raise SourceError(
                f"Cannot read sessions from memcached: {error.strerror or type(error).__name__}."
            ) from error
        except Exception as error:  # pymemcache's own errors can quote a key.
            raise SourceError(
                f"Cannot read sessions from memcached ({type(error).__name__})."
            ) from error
        batch = []
        for name, (value, flags) in values.items():
            key = names[name]
            if self._passes(len(value)):
                batch.append(RawSession(key, Packed((value, flags)), None, len(value)))
        return batch, len(values)

    def unpack(self, packed: tuple[bytes, int]) -> Any:
        """What pymemcache's serde makes of a value and its flags; None past the bound."""
        value, flags = packed
        from pymemcache.serde import (
            FLAG_COMPRESSED,
            FLAG_INTEGER,
            FLAG_LONG,
            FLAG_PICKLE,
            FLAG_TEXT,
        )

        if len(value) > self.max_size:
            return None
        if flags & FLAG_COMPRESSED:
            if not self._compressed:
                return value  # No value this cache wrote: a bad payload.
            try:
                inflated = decompressed(value, zlib.decompressobj(), self.max_size)
            except Exception:  # Not zlib: a bad payload.
                return value
            if inflated is None:
                return None
            value = inflated
        # In the order of pymemcache's python_memcache_deserializer().
        try:
            if flags == 0 or flags == FLAG_COMPRESSED:
                return value
            if flags & FLAG_TEXT:
                return value.decode()
            if flags & (FLAG_INTEGER | FLAG_LONG):
                return int(value)
        except ValueError:
            return value
        if flags & FLAG_PICKLE:
            return unpickled(value, self.max_size)
        return value


class RedisSource(RedisKeySource):
    """
    Read sessions from Redis, through Django's RedisCache or django-redis.

    The servers read are those the site reads from: a replica where the
    cache has replicas (RedisCache's servers after the first; django-redis's
    Sentinel finds them), every shard of django-redis's ShardClient, and
    only the sessions each shard holds for the site, so that a stale copy
    on another shard is not counted again.

    Session keys are listed with SCAN on the pattern the cache's key function
    makes, never KEYS. Each value is read with GETRANGE, so that no more than
    the bound is ever read, and its time to live with PTTL, in pipelines of
    a batch; a value that fills the bound is measured with STRLEN. Those,
    and CLIENT NO-TOUCH, are the only commands sent.

    Values are decoded as the backend encodes them, but pickles only by the
    safe unpickler, and compressed values only up to the bound. The stored
    size is the bytes Redis holds for the value.
    """

    # Sessions processed whose expiry the store holds but could not be read.
    unreadable_expiry = 0

    def __init__(
        self, cache: BaseCache, key_prefix: str, *, keys: str = "*", **options: Any
    ) -> None:
        super().__init__(**options)
        self.cache = cache
        self.key_prefix = key_prefix
        around = str(cache.make_key(key_prefix + _MARK)).partition(_MARK)
        if isinstance(cache, RedisCache):
            pool = cache._cache.get_client(write=False).connection_pool
            self._servers([pool], around=(around[0], around[2]), keys=keys)
            self._loads = self._django_loads(cache._cache._serializer)  # type: ignore[attr-defined]
        else:
            self._django_redis_servers(cache.client, (around[0], around[2]), keys)  # type: ignore[attr-defined]
            self._loads = self._django_redis_loads(cache.client)  # type: ignore[attr-defined]

    def unpack(self, value: bytes) -> Any:
        """See CacheSource.unpack()."""
        return self._loads(value)

    def _data(self, value: bytes) -> Packed:
        return Packed(value)

    def _name(self, key: str) -> bytes:
        return str(self.cache.make_key(self.key_prefix + key)).encode()

    def _django_redis_servers(self, backend: Any, around: tuple[str, str], keys: str) -> None:
        """Read the servers that ``backend`` reads sessions from."""
        # Known by their exact classes: a subclass may find its servers its own way.
        kind = _class_path(type(backend))
        if kind == "django_redis.client.default.DefaultClient":
            self._servers(
                [backend.get_client(write=False).connection_pool], around=around, keys=keys
            )
            return
        if kind == "django_redis.client.sentinel.SentinelClient":
            pool = backend.get_client(write=False).connection_pool
            self._servers([pool], around=around, sentinel=True, keys=keys)
            return
        if kind == "django_redis.client.sharded.ShardClient":
            servers = list(dict.fromkeys(backend._server))
            shards = {server: index for index, server in enumerate(servers)}
            self._servers(
                [backend._serverdict[server].connection_pool for server in servers],
                around=around,
                keys=keys,
                # The shard the site's own reads of the name go to.
                shard_of=lambda name: shards[backend.get_server_name(name)],
            )
            return
        raise UnsupportedEngine(
            f"The django-redis client {type(backend).__name__} is not supported: its "
            f"DefaultClient, SentinelClient and ShardClient can be read."
        )

    def _django_loads(self, serializer: Any) -> Callable[[bytes], Any]:
        # RedisSerializer writes integers as digits and anything else pickled.
        if type(serializer) is not RedisSerializer:
            raise UnsupportedEngine(
                f"The Redis cache's serializer ({_class_path(type(serializer))}) is not one "
                f"this command knows how to read safely: only Django's RedisSerializer is "
                f"read."
            )

        def loads(value: bytes) -> Any:
            try:
                return int(value)
            except ValueError:
                return unpickled(value, self.max_size)

        return loads

    def _django_redis_loads(self, backend: Any) -> Callable[[bytes], Any]:
        # Known by their exact classes: a subclass may read its own way.
        compressor = _class_path(type(backend._compressor))
        if compressor not in _DJANGO_REDIS_DECOMPRESSORS:
            raise UnsupportedEngine(
                f"The django-redis compressor {compressor} is not one this command can "
                f"bound: only the identity, zlib, gzip and lzma compressors are read."
            )
        make_decompressor = _DJANGO_REDIS_DECOMPRESSORS[compressor]
        serializer = backend._serializer
        kind = _class_path(type(serializer))
        if kind == "django_redis.serializers.pickle.PickleSerializer":
            deserialize: Callable[[bytes], Any] = partial(unpickled, max_size=self.max_size)
        elif kind in _DJANGO_REDIS_SAFE_SERIALIZERS:
            deserialize = serializer.loads
        else:
            raise UnsupportedEngine(
                f"The django-redis serializer {kind} is not one this command knows how to "
                f"read safely: only its pickle, JSON and MessagePack serializers are read."
            )
        max_size = self.max_size

        def loads(value: bytes) -> Any:
            # As DefaultClient.decode(): digits are an integer; a value that
            # does not decompress is one too small to have been compressed.
            try:
                return int(value)
            except ValueError:
                pass
            if make_decompressor is not None:
                try:
                    inflated = decompressed(value, make_decompressor(), max_size)
                except Exception:
                    pass
                else:
                    if inflated is None:
                        return None
                    value = inflated
            try:
                return deserialize(value)
            except Exception:  # Not JSON, or not MessagePack: a bad payload.
                return value

        return loads


# django-redis's compressors, and how to undo each with a bound on its output.
_DJANGO_REDIS_DECOMPRESSORS: dict[str, Callable[[], Any] | None] = {
    "django_redis.compressors.identity.IdentityCompressor": None,
    "django_redis.compressors.zlib.ZlibCompressor": zlib.decompressobj,
    "django_redis.compressors.gzip.GzipCompressor": partial(
        zlib.decompressobj, 16 + zlib.MAX_WBITS
    ),
    "django_redis.compressors.lzma.LzmaCompressor": lzma.LZMADecompressor,
}
# django-redis's serializers that run no code a value names.
_DJANGO_REDIS_SAFE_SERIALIZERS = frozenset(
    {
        "django_redis.serializers.json.JSONSerializer",
        "django_redis.serializers.msgpack.MSGPackSerializer",
    }
)
