"""Sessions kept in a cache by Django's ``cache`` engine."""

from __future__ import annotations

import base64
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.core.cache import BaseCache, InvalidCacheBackendError, caches
from django.core.cache.backends.db import DatabaseCache
from django.core.cache.backends.redis import RedisCache

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    ListingSource,
    RawSession,
    SourceError,
    UnsupportedEngine,
    first_line,
    valid_key,
)

T = TypeVar("T")

# Stands for the session key while the cache's key function runs, so the
# keys of all sessions can be matched whatever that function adds around it.
_MARK = "\x00session-key\x00"


def cache_source(
    store_class: type[CacheSessionStore],
    *,
    scanning: bool,
    bigger_than: int | None,
    batch_size: int,
    sleep_time: float,
    key_range: KeyRange = EVERY_KEY,
    max_size: int = DEFAULT_MAX_SESSION_SIZE,
) -> CacheSource:
    """The source for the engine's cache: one that lists, where it can."""
    alias = settings.SESSION_CACHE_ALIAS
    try:
        cache = caches[alias]
    except InvalidCacheBackendError as error:
        raise UnsupportedEngine(f"Cannot use the '{alias}' cache: {first_line(error)}.") from error
    options: dict[str, Any] = {
        "bigger_than": bigger_than,
        "batch_size": batch_size,
        "sleep_time": sleep_time,
        "key_range": key_range,
        "max_size": max_size,
    }
    if isinstance(cache, RedisCache) or type(cache).__module__.startswith("django_redis."):
        return RedisSource(cache, store_class.cache_key_prefix, **options)
    if scanning:
        backend = f"{type(cache).__module__}.{type(cache).__qualname__}"
        raise UnsupportedEngine(
            f"The '{alias}' cache ({backend}) cannot list its keys, so its sessions "
            f"cannot all be found: pass --ids-from with the keys of the sessions to "
            f"analyze."
        )
    return CacheSource(cache, store_class.cache_key_prefix, **options)


class CacheSource:
    """
    Read listed sessions from any cache, through its backend, never writing.

    Most caches cannot list their keys, so only sessions whose keys are given
    can be read. Their stored size is the size of the value as the backend
    writes it: exactly what memcached (pymemcache) and the database cache
    hold; for other backends, the pickle that Django's own backends store.
    """

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

    def total_sessions(self) -> int | None:
        """None: such a cache cannot count its sessions."""
        return None

    def scan(self) -> Iterator[list[RawSession]]:
        raise UnsupportedEngine("This cache cannot list its keys: pass --ids-from.")

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        wanted = sorted(key for key in set(keys) if in_range(key, self.key_range))
        self.keys_listed += len(wanted)
        for start in range(0, len(wanted), self.batch_size):
            chunk = wanted[start : start + self.batch_size]
            self._pause()
            found = self._get_many([key for key in chunk if valid_key(key)])
            self.keys_not_found += len(chunk) - len(found)
            batch = [raw for raw in found if self._passes(raw)]
            if batch:
                yield batch

    def _get_many(self, keys: list[str]) -> list[RawSession]:
        try:
            values = self.cache.get_many([self.key_prefix + key for key in keys])
        except Exception as error:  # Each client library raises its own errors.
            raise SourceError(
                f"Cannot read sessions from the cache: {first_line(error)}."
            ) from error
        return [
            RawSession(key, value, None, self._stored_size(value))
            for key in keys
            if (value := values.get(self.key_prefix + key)) is not None
        ]

    def _stored_size(self, value: Any) -> int:
        serde = getattr(self.cache, "_options", {}).get("serde")
        if serde is not None:  # pymemcache: what it sends the server.
            data, _flags = serde.serialize("", value)
            return len(data)
        pickled = pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
        if isinstance(self.cache, DatabaseCache):
            return len(base64.b64encode(pickled))
        return len(pickled)

    def _passes(self, raw: RawSession) -> bool:
        return self.bigger_than is None or raw.stored_size > self.bigger_than

    def _pause(self) -> None:
        if self._batches and self.sleep_time:
            time.sleep(self.sleep_time)
        self._batches += 1


class RedisSource(ListingSource, CacheSource):
    """
    Read sessions from Redis, through Django's RedisCache or django-redis.

    Session keys are listed with SCAN on the pattern the cache's key function
    makes, never KEYS; values are read in batches with MGET and decoded by
    the backend's own deserializer. The stored size is the bytes Redis holds
    for the value, and the expiry its time to live. Only SCAN, STRLEN, MGET
    and PTTL are sent.
    """

    def __init__(self, cache: BaseCache, key_prefix: str, **options: Any) -> None:
        super().__init__(cache, key_prefix, **options)
        if isinstance(cache, RedisCache):
            self._client = cache._cache.get_client(write=False)
            self._loads = cache._cache._serializer.loads  # type: ignore[attr-defined]
        else:  # django-redis
            try:
                self._client = cache.client.get_client(write=False)  # type: ignore[attr-defined]
            except TypeError as error:
                raise UnsupportedEngine(
                    f"The django-redis client {type(cache.client).__name__} "  # type: ignore[attr-defined]
                    f"is not supported: only its DefaultClient can be scanned."
                ) from error
            self._loads = cache.client.decode  # type: ignore[attr-defined]
        head, _, tail = str(cache.make_key(key_prefix + _MARK)).partition(_MARK)
        self._head, self._tail = head, tail
        self._pattern = _glob_escape(head) + "*" + _glob_escape(tail)
        self._sessions_seen: int | None = None
        self._worked = False

    def _name(self, key: str) -> bytes:
        return str(self.cache.make_key(self.key_prefix + key)).encode()

    def _listed(self) -> Iterator[tuple[str, bytes]]:
        # SCAN may return a key twice (while Redis rehashes, or when a lost
        # connection makes a call run again), so keys already seen are skipped.
        seen: set[bytes] = set()
        cursor = 0
        while True:
            cursor, names = self._retrying("list sessions in", partial(self._scan, cursor))
            for name in names:
                text = name.decode("utf-8", errors="replace")
                key = text[len(self._head) : len(text) - len(self._tail)]
                if name not in seen and valid_key(key) and in_range(key, self.key_range):
                    seen.add(name)
                    yield key, name
            if cursor == 0:
                return

    def _read(self, names: list[tuple[str, bytes]]) -> tuple[list[RawSession], int]:
        """The sessions named that pass the size filter, and how many are gone."""
        self._pause()
        missing = 0
        if self.bigger_than is not None and names:
            sizes = self._retrying(
                "read sessions from", partial(self._pipeline, "strlen", [n for _, n in names])
            )
            # STRLEN says 0 for a key that is not there.
            missing = sum(1 for size in sizes if size == 0)
            bigger = [size > self.bigger_than for size in sizes]
            names = [pair for pair, keep in zip(names, bigger, strict=True) if keep]
        if not names:
            return [], missing
        values, *ttls = self._retrying("read sessions from", partial(self._values, names))
        now = datetime.now(timezone.utc)
        batch = []
        for (key, _), value, ttl in zip(names, values, ttls, strict=True):
            if value is None:
                missing += 1  # Never there, or expired since it was listed.
                continue
            expires = now + timedelta(milliseconds=ttl) if ttl >= 0 else None
            batch.append(RawSession(key, self._decode(value), expires, len(value)))
        return batch, missing

    def _decode(self, value: bytes) -> Any:
        try:
            return self._loads(value)
        except Exception:
            return value  # Left for the decoder to call undecodable.

    def _scan(self, cursor: int) -> tuple[int, list[Any]]:
        found: tuple[int, list[Any]] = self._client.scan(
            cursor, match=self._pattern, count=self.batch_size
        )
        return found

    def _values(self, names: list[tuple[str, bytes]]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        pipeline.mget([name for _, name in names])
        for _, name in names:
            pipeline.pttl(name)
        result: list[Any] = pipeline.execute()
        return result

    def _retrying(self, doing: str, call: Callable[[], T]) -> T:
        """
        ``call()``; if the connection to Redis is lost, call it again after
        growing pauses, a bounded number of times.
        """
        for delay in (*self.retry_delays, None):
            try:
                result = call()
                self._worked = True
                return result
            except Exception as error:
                # A server away from the start is an error at once; one lost
                # during the run is given time to come back.
                if delay is None or not self._worked or not _connection_lost(error):
                    raise SourceError(f"Cannot {doing} Redis: {first_line(error)}.") from error
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _pipeline(self, command: str, names: list[bytes]) -> list[Any]:
        pipeline = self._client.pipeline(transaction=False)
        for name in names:
            getattr(pipeline, command)(name)
        result: list[Any] = pipeline.execute()
        return result


def _connection_lost(error: Exception) -> bool:
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - the Redis client is there
        return False
    return isinstance(error, (ConnectionError, TimeoutError))


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
