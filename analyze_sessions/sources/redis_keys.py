"""
Sessions kept one to a Redis key, whoever writes them: Django's cache
engines, django-redis-sessions.

Keys are listed with SCAN, never KEYS, on the servers the site reads from;
values are read with GETRANGE, never past the bound, with their times to
live (PTTL), in pipelines of a batch; a value that fills the bound is
measured with STRLEN. Those, INFO and CLIENT NO-TOUCH are the only commands
sent, each on a client of the source's own, with a time limit.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import Any, TypeVar

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.seen import SeenNames
from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.shown import masked
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    ListingSource,
    RawSession,
    SourceError,
    driver_message,
    valid_key,
)

T = TypeVar("T")

# A server that stops answering fails the run after this long instead of
# holding it for ever, where the site's settings give no timeout.
DEFAULT_TIMEOUT = 60.0

# Why a session the store names cannot be read (see Source.unreadable).
NOT_A_STRING = "not a string"


def key_glob(store_class: type[SessionBase], engine_class: type[SessionBase]) -> str:
    """
    The glob pattern of the keys ``store_class``, made from the engine
    ``engine_class``, makes: Django's own are 32 lowercase letters and
    digits. Listing only names of that shape, Redis never sends the source
    a name longer than a session's (a key of hundreds of megabytes, say,
    that anyone with a connection can write), nor, where the engine has no
    prefix, the other keys of the database. An engine that makes its keys
    its own way (another ``_get_new_session_key()`` or ``create()``) is
    listed by every name.
    """
    makes_keys = (
        store_class._get_new_session_key is SessionBase._get_new_session_key  # type: ignore[attr-defined]
        and store_class.create is engine_class.create
    )
    return "[0-9a-z]" * 32 if makes_keys else "*"


class RedisKeySource(ListingSource):
    """
    Read sessions kept one to a key, on one or more Redis servers.

    A subclass says where: it calls :meth:`_servers` with the connection
    pools of the servers the site reads from (or a Sentinel's, whose
    replica is found on the first read), which of them holds a session's
    name where there are several, and the text around the session key in a
    name. It names a session's key (``_name``) and says what a value read
    is to the decoder (``_data``).

    A replica is read only while it is in step with its primary: one still
    making its first copy, or cut off from its primary, holds fewer
    sessions than the store, and reading it would report them as the
    store's.
    """

    # The pauses before each new try of a call whose connection was lost.
    retry_delays: tuple[float, ...] = (1.0, 3.0, 10.0)

    def __init__(
        self,
        *,
        bigger_than: int | None = None,
        batch_size: int = 1000,
        sleep_time: float = 0.0,
        key_range: KeyRange = EVERY_KEY,
        max_size: int = DEFAULT_MAX_SESSION_SIZE,
    ) -> None:
        self.key_range = key_range
        self.bigger_than = bigger_than
        self.batch_size = batch_size
        self.sleep_time = sleep_time
        self.max_size = max_size
        self.keys_listed = 0
        self.keys_not_found = 0
        self.unreadable: Counter[str] = Counter()
        self._batches = 0
        self._sessions_seen: int | None = None
        self._clients: list[Any] = []
        self._sentinel: Any = None
        self._shard_of: Callable[[str], int] | None = None
        self._head = self._tail = self._pattern = ""
        # The servers that answered once: one that fails later is given time.
        self._worked: set[int] = set()
        # The servers whose replication was checked (see _client()).
        self._checked: set[int] = set()

    def _servers(
        self,
        pools: list[Any],
        *,
        around: tuple[str, str],
        sentinel: bool = False,
        shard_of: Callable[[str], int] | None = None,
        keys: str = "*",
    ) -> None:
        """
        Read the servers of ``pools``: through Sentinel if ``sentinel`` (one
        pool, a Sentinel's), else each, where ``shard_of`` says which
        server a session's name belongs on. Names are the session key with
        ``around`` (head, tail) on either side, and only those whose key
        matches the glob pattern ``keys`` are listed (see :func:`key_glob`).
        """
        self._sentinel = pools[0] if sentinel else None
        # A Sentinel's replica is asked for on the first read (see _client()).
        self._clients = [None if sentinel else _reading_client(pool) for pool in pools]
        self._shard_of = shard_of
        self._head, self._tail = around
        self._pattern = _glob_escape(self._head) + keys + _glob_escape(self._tail)

    def _name(self, key: str) -> bytes:
        return f"{self._head}{key}{self._tail}".encode()

    def _data(self, value: bytes) -> Any:
        """What a value read is to the decoder (see RawSession.data)."""
        raise NotImplementedError

    def _pause(self) -> None:
        if self._batches and self.sleep_time:
            time.sleep(self.sleep_time)
        self._batches += 1

    def _client(self, shard: int) -> Any:
        """
        The reading client of ``shard``. Through Sentinel, one of the
        replicas it knows of, found on the first read and kept, so that a
        scan goes on where its cursor belongs (see _sentinel_server()).
        Each is checked once to be in step with its primary.
        """
        client = self._clients[shard]
        if client is None:
            host, port = self._sentinel_server()
            client = self._clients[shard] = _reading_client(self._sentinel, host=host, port=port)
        if shard not in self._checked:
            _check_replication(client)
            self._checked.add(shard)
        return client

    def _sentinel_server(self) -> tuple[str, int]:
        """
        Where the Sentinels say a replica of the service is, up and in step
        with its primary; where none is, the primary, as the site's own
        reads go then. Each Sentinel is asked in turn, with this source's
        own time limit.
        """
        service = self._sentinel.service_name
        failures: list[str] = []
        for sentinel in self._sentinel.sentinel_manager.sentinels:
            asking = _reading_client(sentinel.connection_pool)
            try:
                replicas = asking.sentinel_slaves(service)
                primary = asking.sentinel_get_master_addr_by_name(service)
            except Exception as error:  # Down, refusing, or not watching the service.
                failures.append(_redis_failure(error))
                continue
            finally:
                asking.connection_pool.disconnect()
            for replica in replicas:
                if replica.get("master-link-status") == "ok" and not (
                    replica.get("is_sdown")
                    or replica.get("is_odown")
                    or replica.get("is_disconnected")
                ):
                    return str(replica["ip"]), int(replica["port"])
            if primary:
                host = primary[0]
                return host.decode() if isinstance(host, bytes) else str(host), int(primary[1])
            failures.append("no primary")
        raise SourceError(
            f"No Sentinel named a server of the Redis service '{service}' "
            f"({', '.join(sorted(set(failures))) or 'no Sentinels'})."
        )

    def close(self) -> None:
        for client in self._clients:
            if client is not None:
                client.connection_pool.disconnect()

    def total_sessions(self) -> int:
        try:
            return super().total_sessions()
        finally:
            self.close()

    def scan(self) -> Iterator[list[RawSession]]:
        try:
            yield from ListingSource.scan(self)
        finally:
            self.close()

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        try:
            yield from ListingSource.lookup(self, keys)
        finally:
            self.close()

    def _listed(self) -> Iterator[tuple[str, bytes]]:
        for shard in range(len(self._clients)):
            yield from self._listed_on(shard)

    def _listed_on(self, shard: int) -> Iterator[tuple[str, bytes]]:
        # SCAN may return a key twice (while Redis resizes its table, or when
        # a lost connection makes a call run again), so keys already seen
        # are skipped: remembered in 12 bytes each.
        seen = SeenNames()
        cursor = 0
        while True:
            cursor, names = self._retrying(
                "list sessions in", shard, partial(self._scan, shard, cursor)
            )
            for name in names:
                text = name.decode("utf-8", errors="replace")
                key = text[len(self._head) : len(text) - len(self._tail)]
                if valid_key(key) and in_range(key, self.key_range) and seen.add(name):
                    if self._shard_of is None or self._shard_of(text) == shard:
                        yield key, name
            if cursor == 0:
                return

    def _read(self, names: list[tuple[str, bytes]]) -> tuple[list[RawSession], int]:
        batch: list[RawSession] = []
        gone = 0
        for part, part_gone in self._read_in_parts(names):
            batch += part
            gone += part_gone
        return batch, gone

    def _read_in_parts(
        self, names: list[tuple[str, bytes]]
    ) -> Iterator[tuple[list[RawSession], int]]:
        """
        The sessions named that pass the size filter, and how many are gone,
        a part at a time. A key that holds no string is tallied as
        unreadable.

        Sizes come first: only the values wanted are read, none past the
        bound, and no more of them at once than ``READ_BUDGET`` bytes, each
        part handed on before the next is read, so that a batch of large
        values never sits in memory whole.
        """
        self._pause()
        if self._shard_of is None:
            yield from self._read_on(0, names)
            return
        on: dict[int, list[tuple[str, bytes]]] = {}
        for key, name in names:
            on.setdefault(self._shard_of(name.decode("utf-8", errors="replace")), []).append(
                (key, name)
            )
        for shard, named in sorted(on.items()):
            yield from self._read_on(shard, named)

    def _read_on(
        self, shard: int, names: list[tuple[str, bytes]]
    ) -> Iterator[tuple[list[RawSession], int]]:
        """What _read_in_parts() reads, for names on ``shard``."""
        if not names:
            return
        sizes = self._commands(shard, [("STRLEN", name) for _, name in names], names)
        wanted: list[tuple[str, bytes, int]] = []
        too_large: list[tuple[str, bytes, int]] = []
        for (key, name), size in zip(names, sizes, strict=True):
            if size is None or (self.bigger_than is not None and 0 < size <= self.bigger_than):
                continue  # Tallied as unreadable, or filtered out.
            (too_large if size > self.max_size else wanted).append((key, name, size))
        grown: list[tuple[str, bytes, int]] = []
        for group in _within(wanted, READ_BUDGET):
            yield self._read_values(shard, group, read_values=True, grown=grown)
        # Each alone, to the bound: the group's budget was of their sizes before.
        for key, name, _ in grown:
            yield self._read_grown(shard, key, name)
        if too_large:
            yield self._read_values(shard, too_large, read_values=False)

    def _read_values(
        self,
        shard: int,
        group: list[tuple[str, bytes, int]],
        *,
        read_values: bool,
        grown: list[tuple[str, bytes, int]] | None = None,
    ) -> tuple[list[RawSession], int]:
        """
        The sessions of ``group``, with their values if ``read_values``; how
        many are gone. A value is read no further than its size said, and one
        byte more: one that has grown since is put in ``grown``, to be read
        again, if given, so that a group never reads more than its sizes add
        up to.
        """
        commands: list[tuple[Any, ...]] = []
        for _, name, size in group:
            if read_values:
                commands.append(("GETRANGE", name, 0, min(size, self.max_size)))
            commands.append(("PTTL", name))
        step = 2 if read_values else 1
        replies = self._commands(
            shard, commands, [(key, name) for key, name, _ in group for _ in range(step)]
        )
        now = datetime.now(timezone.utc)
        batch, gone = [], 0
        for index, (key, name, size) in enumerate(group):
            value = replies[step * index] if read_values else None
            ttl = replies[step * index + step - 1]
            if ttl == -2:  # Never there, or expired or deleted since it was listed.
                gone += 1
            elif read_values and value is None:
                continue  # Changed type since: tallied as unreadable.
            elif grown is not None and value is not None and len(value) > size:
                grown.append((key, name, size))
            elif value is None or len(value) > self.max_size:
                batch.append(RawSession(key, None, _in(now, ttl), size))
            else:
                if self.bigger_than is not None and len(value) <= self.bigger_than:
                    continue  # Shorter since its size was asked.
                batch.append(RawSession(key, self._data(value), _in(now, ttl), len(value)))
        return batch, gone

    def _read_grown(self, shard: int, key: str, name: bytes) -> tuple[list[RawSession], int]:
        """A session whose value grew since its size was asked: read alone, to the bound."""
        commands = [("GETRANGE", name, 0, self.max_size), ("PTTL", name), ("STRLEN", name)]
        value, ttl, size = self._commands(shard, commands, [(key, name)] * 3)
        if ttl == -2:
            return [], 1
        if value is None or size is None:  # Changed type since: tallied as unreadable.
            return [], 0
        expires_at = _in(datetime.now(timezone.utc), ttl)
        if len(value) > self.max_size:
            return [RawSession(key, None, expires_at, max(size, len(value)))], 0
        if self.bigger_than is not None and len(value) <= self.bigger_than:
            return [], 0
        return [RawSession(key, self._data(value), expires_at, len(value))], 0

    def _commands(
        self, shard: int, commands: list[tuple[Any, ...]], names: list[tuple[str, bytes]]
    ) -> list[Any]:
        """
        The replies to ``commands``, sent in one pipeline, each about the
        session of the same place in ``names``. A reply of the wrong type
        (the key holds no string) is None, and the session is tallied as
        unreadable; any other error stops the run.
        """
        replies = self._retrying(
            "read sessions from", shard, partial(self._pipeline, shard, commands)
        )
        unreadable: set[bytes] = set()
        for command, (key, name), reply in zip(commands, names, replies, strict=True):
            if not isinstance(reply, Exception):
                continue
            failure = _redis_failure(reply)
            if failure == "WRONGTYPE":
                if name not in unreadable:
                    unreadable.add(name)
                    self.unreadable[NOT_A_STRING] += 1
                continue
            if failure == "NOPERM":
                raise SourceError(_refused_command(command[0]))
            raise SourceError(
                f"Redis failed to run {command[0]} on session {masked(key)} ({failure})."
            )
        return [
            None if isinstance(reply, Exception) or name in unreadable else reply
            for (_, name), reply in zip(names, replies, strict=True)
        ]

    def _pipeline(self, shard: int, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipeline = self._client(shard).pipeline(transaction=False)
        for command in commands:
            pipeline.execute_command(*command)
        # Errors come back as replies, so that one key of another type does
        # not stop the run, and no error quotes a key.
        result: list[Any] = pipeline.execute(raise_on_error=False)
        return result

    def _scan(self, shard: int, cursor: int) -> tuple[int, list[Any]]:
        found: tuple[int, list[Any]] = self._client(shard).scan(
            cursor, match=self._pattern, count=self.batch_size
        )
        return found

    def _retrying(self, doing: str, shard: int, call: Callable[[], T]) -> T:
        """
        ``call()`` on ``shard``; if the connection to it is lost, call it
        again after growing pauses, a bounded number of times.
        """
        for delay in (*self.retry_delays, None):
            try:
                result = call()
                self._worked.add(shard)
                return result
            except SourceError:
                raise
            except Exception as error:
                # A server away from the start is an error at once; one lost
                # during the run is given time to come back.
                if delay is None or shard not in self._worked or not _connection_lost(error):
                    raise SourceError(_redis_error(doing, error)) from error
            time.sleep(delay)
        raise AssertionError("unreachable")


def _reading_client(pool: Any, **address: Any) -> Any:
    """
    A client of its own on the server of ``pool`` (or at ``address``, host
    and port, with its settings), each of whose connections asks Redis not
    to count the source's reads as accesses.
    """
    import redis

    kwargs = {**pool.connection_kwargs, **address}
    # What redis-py's pool makes for its own connections (a Sentinel's pool
    # itself among them): the new pool makes its own.
    for owned in ("maint_notifications_pool_handler", "himport_registry", "connection_pool"):
        kwargs.pop(owned, None)
    kwargs["redis_connect_func"] = _connect_without_touching
    kwargs["decode_responses"] = False  # Values are bytes, whatever the cache says.
    for option in ("socket_connect_timeout", "socket_timeout"):
        if kwargs.get(option) is None:
            kwargs[option] = DEFAULT_TIMEOUT
    connection_class = pool.connection_class
    if address:  # Found through Sentinel, whose connections find their own server.
        secure = issubclass(connection_class, redis.SSLConnection)
        connection_class = redis.SSLConnection if secure else redis.Connection
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs)
    )


def _check_replication(client: Any) -> None:
    """
    Refuse a replica that is not in step with its primary. A server that
    keeps its replication to itself (an ACL without INFO) is read as it is.
    """
    from redis.exceptions import ResponseError

    try:
        replication = client.info("replication")
    except ResponseError:
        return
    if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
        raise SourceError(
            f"The Redis replica at {_address(client)} is not in step with its "
            f"primary (its link to it is {replication.get('master_link_status', 'unknown')}): "
            f"it may hold only some of the sessions, so it is not read."
        )


def _address(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return str(kwargs["path"])
    return f"{kwargs.get('host')}:{kwargs.get('port')}"


def _connect_without_touching(connection: Any) -> None:
    """
    Set up a new connection as redis-py does, then turn on CLIENT NO-TOUCH,
    so that reading keys leaves their LRU clocks (OBJECT IDLETIME) as they
    were. Redis before 7.2 has no such command, and an ACL may forbid it:
    reading then goes on, and counts as an access.
    """
    from redis.exceptions import ResponseError

    connection.on_connect()
    try:
        connection.send_command("CLIENT", "NO-TOUCH", "ON")
        connection.read_response()
    except ResponseError:
        pass


# Redis's error codes: the first word of an error it sends, which names the
# kind of failure and never quotes a key or a value.
_REDIS_ERROR_CODES = frozenset(
    {
        "ERR",
        "WRONGTYPE",
        "NOPERM",
        "NOAUTH",
        "WRONGPASS",
        "OOM",
        "BUSY",
        "LOADING",
        "READONLY",
        "MASTERDOWN",
        "MISCONF",
        "NOREPLICAS",
        "MOVED",
        "ASK",
        "TRYAGAIN",
        "CLUSTERDOWN",
        "CROSSSLOT",
        "EXECABORT",
        "NOSCRIPT",
    }
)


def _redis_failure(error: Exception) -> str:
    """The kind of a Redis error: its error code, else its class's name."""
    code = getattr(error, "status_code", None) or str(error).split(" ", 1)[0]
    return code if code in _REDIS_ERROR_CODES else type(error).__name__


# The most bytes of values one pipeline asks Redis for, whatever the batch.
READ_BUDGET = 64 * 1024 * 1024


def _within(
    sized: list[tuple[str, bytes, int]], budget: int
) -> Iterator[list[tuple[str, bytes, int]]]:
    """``sized`` (key, name, size) in groups whose sizes add up to ``budget`` at most, or one."""
    group: list[tuple[str, bytes, int]] = []
    total = 0
    for item in sized:
        if group and total + item[2] > budget:
            yield group
            group, total = [], 0
        group.append(item)
        total += item[2]
    if group:
        yield group


def _in(now: datetime, ttl: int) -> datetime | None:
    """When a key whose time to live is ``ttl`` ms expires: never, for none or past the calendar."""
    try:
        return now + timedelta(milliseconds=ttl) if ttl >= 0 else None
    except OverflowError:  # PEXPIRE takes times no calendar has.
        return None


def _refused_command(command: str) -> str:
    return (
        f"Redis refused the {command} command to the cache's user (NOPERM): reading "
        f"sessions needs SCAN, GETRANGE, STRLEN and PTTL."
    )


def _redis_error(doing: str, error: Exception) -> str:
    """A sentence for ``error``: the network's own words, else the kind of failure."""
    failure = _redis_failure(error)
    if failure == "NOPERM" and doing == "list sessions in":
        return _refused_command("SCAN")
    if _about_the_connection(error) or failure in {"NOAUTH", "WRONGPASS", "AuthenticationError"}:
        # About the connection, which holds no session's data.
        return f"Cannot {doing} Redis: {driver_message(error)}."
    return f"Cannot {doing} Redis ({failure})."


def _about_the_connection(error: Exception) -> bool:
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - the Redis client is there
        return False
    return isinstance(error, (ConnectionError, TimeoutError))


def _connection_lost(error: Exception) -> bool:
    """
    Whether ``error`` says the connection was lost, and a new one may
    work. A server that stopped answering (a timeout) is not given the
    time again: each try would wait the whole timeout.
    """
    try:
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError:  # pragma: no cover - the Redis client is there
        return False
    return isinstance(error, ConnectionError) and not isinstance(error, TimeoutError)


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
