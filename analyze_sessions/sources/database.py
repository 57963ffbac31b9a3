"""Sessions kept in a database model: ``db``, ``cached_db`` and custom stores."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from importlib import import_module
from typing import Any, TypeVar

from django.apps import apps
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.models import Field, Model, QuerySet
from django.db.models.functions import Length

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    RawSession,
    SourceError,
    UnsupportedEngine,
    first_line,
)

T = TypeVar("T")

# Keeps an IN list under every backend's limit on query parameters, including
# PostgreSQL's 65,535 when a large --batch-size is asked for.
MAX_KEYS_PER_QUERY = 10_000

_WITHOUT_ROWID = re.compile(r"\bWITHOUT\s+ROWID\b", re.IGNORECASE)


SESSION_FIELDS = ("session_key", "session_data", "expire_date")


def expiry(value: Any, aware: bool) -> datetime | None:
    """An expire_date as the database gives it, as Django would give it with USE_TZ = ``aware``."""
    if isinstance(value, str):  # SQLite keeps text.
        value = datetime.fromisoformat(value)
    if value is not None and aware and value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)  # Django stores UTC.
    moment: datetime | None = value
    return moment


def session_model(engine: str, store_class: type[SessionBase]) -> type[Model] | None:
    """
    Return the model that the session engine ``engine`` keeps sessions in,
    or None if it keeps them elsewhere.

    That is the model its ``SessionStore.get_model_class()`` returns, or else
    the one model with the session fields that its module uses, as
    third-party engines written without ``get_model_class()`` do.
    """
    get_model_class = getattr(store_class, "get_model_class", None)
    if get_model_class is not None:
        model: type[Model] = get_model_class()
        return model
    candidates = {
        value
        for value in vars(import_module(engine)).values()
        if isinstance(value, type)
        and issubclass(value, Model)
        and not value._meta.abstract
        and _has_session_fields(value)
    }
    if len(candidates) > 1:
        names = ", ".join(sorted(model._meta.label for model in candidates))
        raise UnsupportedEngine(
            f"Session engine '{engine}' uses several models that could hold its "
            f"sessions ({names}): name one with --model."
        )
    return candidates.pop() if candidates else None


def named_model(label: str) -> type[Model]:
    """Return the model ``app_label.ModelName``, if it can hold sessions."""
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError) as error:
        raise UnsupportedEngine(
            f"Cannot find the model '{label}': {str(error).rstrip('.')}."
        ) from error
    if not _has_session_fields(model):
        raise UnsupportedEngine(
            f"The model '{label}' cannot hold sessions: it needs the fields "
            f"{', '.join(SESSION_FIELDS)}."
        )
    return model


def _has_session_fields(model: type[Model]) -> bool:
    names = {field.name for field in model._meta.get_fields()}
    return names.issuperset(SESSION_FIELDS)


class DatabaseSource:
    """
    Read sessions from ``model`` in batches, never writing.

    Full scans page by primary key, or by rowid on SQLite (keyset
    pagination), so each query costs the same however far the scan has gone.
    ``sleep_time`` seconds pass between two queries, to keep load off a
    production database.
    """

    _fields = ("session_key", "session_data", "expire_date", "stored_size")
    # The pauses before each new try of a query whose connection was lost.
    retry_delays: tuple[float, ...] = (1.0, 3.0, 10.0)

    def __init__(
        self,
        model: type[Model],
        *,
        using: str,
        bigger_than: int | None = None,
        batch_size: int = 1000,
        sleep_time: float = 0.0,
        key_range: KeyRange = EVERY_KEY,
        max_size: int = DEFAULT_MAX_SESSION_SIZE,
    ) -> None:
        self.model = model
        self.using = using
        self.key_range = key_range
        self.bigger_than = bigger_than
        self.batch_size = batch_size
        self.sleep_time = sleep_time
        self.keys_listed = 0
        self.keys_not_found = 0
        self._queried = False
        self._worked = False
        self._rowid: bool | None = None
        self.max_size = max_size
        self.unreadable: Counter[str] = Counter()

    def total_sessions(self) -> int:
        """Count every session in the store, whatever the filters."""
        return self._run(self._all().count)

    def scan(self) -> Iterator[list[RawSession]]:
        """Yield every session that passes the size filter, a batch at a time."""
        page = self._rowid_page if self._has_rowid() else self._key_page
        last = None
        while True:
            batch = self._run(self._fetch, *page(last))
            if batch:
                last = batch[-1][0]
                aware = settings.USE_TZ
                yield [
                    RawSession(key, data, expiry(expires, aware), size)
                    for _, key, data, expires, size in batch
                ]
            if len(batch) < self.batch_size:
                return

    def _key_page(self, last: Any) -> tuple[str, Sequence[Any]]:
        # The sessions after ``last`` in primary-key order, which every
        # database can seek to through the key's index.
        rows = self._filtered().order_by("pk").values_list("pk", *self._fields)
        if last is not None:
            rows = rows.filter(pk__gt=last)
        return self._sql(rows[: self.batch_size])

    def _rowid_page(self, last: int | None) -> tuple[str, Sequence[Any]]:
        # The sessions after ``last`` in SQLite's storage order, the order of
        # its rowids. Paging by key instead walks the key's index and reads
        # the table in its order, a page here and a page there: two and a half
        # times the time, over a million sessions.
        quote = connections[self.using].ops.quote_name
        table = quote(self.model._meta.db_table)
        # Qualified, so that a name SQLite does not find is an error, not a
        # string it reads as such.
        key, data, expires = (f"{table}.{quote(self._column(name))}" for name in SESSION_FIELDS)
        where: list[str] = []
        params: list[Any] = []
        if last is not None:
            where.append("rowid > %s")
            params.append(last)
        # The unary + keeps SQLite from reading a range of keys through their
        # index, in key order, only to sort it again by rowid.
        low, high = self.key_range
        if low is not None:
            where.append(f"+{key} >= %s")
            params.append(low)
        if high is not None:
            where.append(f"+{key} < %s")
            params.append(high)
        if self.bigger_than is not None:
            where.append(f"LENGTH({data}) > %s")
            params.append(self.bigger_than)
        sql = (
            f"SELECT rowid, {key}, {data}, {expires}, LENGTH({data}) FROM {table} "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rowid LIMIT %s"
        )
        return sql, [*params, self.batch_size]

    def _has_rowid(self) -> bool:
        """
        Whether the sessions are in one SQLite table that has rowids, as
        Django's tables do: not a view, not a table WITHOUT ROWID, not
        fields spread over the tables of models inherited from.
        """
        if self._rowid is None:
            self._rowid = False
            connection = connections[self.using]
            table = self.model._meta.db_table
            if connection.vendor == "sqlite" and all(
                self.model._meta.get_field(name).model._meta.db_table == table
                for name in SESSION_FIELDS
            ):
                # Not a read of the sessions: whatever keeps this from
                # answering, the first page says more clearly.
                try:
                    found = self._fetch(
                        "SELECT sql, (SELECT COUNT(*) FROM pragma_table_info(%s) "
                        "WHERE LOWER(name) = 'rowid') FROM sqlite_master "
                        "WHERE type = 'table' AND name = %s",
                        [table, table],
                    )
                except DatabaseError:
                    found = []
                # A column named rowid would be read in its place.
                self._rowid = (
                    bool(found) and not found[0][1] and not _WITHOUT_ROWID.search(found[0][0])
                )
        return self._rowid

    def _column(self, name: str) -> str:
        field = self.model._meta.get_field(name)
        # A concrete field, as _has_session_fields() saw to it.
        assert isinstance(field, Field) and field.column is not None
        return field.column

    def lookup(self, keys: Iterable[str]) -> Iterator[list[RawSession]]:
        """
        Yield the sessions whose keys are in ``keys`` and pass the size filter.

        Keys are looked up in bounded batches. ``keys_listed`` and
        ``keys_not_found`` count the keys asked for and those not in the store.
        """
        wanted = sorted(key for key in set(keys) if in_range(key, self.key_range))
        self.keys_listed += len(wanted)
        # No store can hold a key with a NUL in it, and PostgreSQL refuses to
        # be asked for one.
        impossible = [key for key in wanted if "\x00" in key]
        if impossible:
            self.keys_not_found += len(impossible)
            wanted = [key for key in wanted if "\x00" not in key]
        size = self._keys_per_query()
        rows = self._filtered().values_list(*self._fields)
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            if self.bigger_than is not None:
                found = self._run(self._all().filter(session_key__in=chunk).count)
            found_rows = self._run(self._fetch, *self._sql(rows.filter(session_key__in=chunk)))
            aware = settings.USE_TZ
            batch = [
                RawSession(key, data, expiry(expires, aware), size)
                for key, data, expires, size in found_rows
            ]
            if self.bigger_than is None:
                found = len(batch)
            self.keys_not_found += len(chunk) - found
            if batch:
                yield batch

    def disk_usage(self) -> dict[str, Any] | None:
        """
        What the sessions table takes on disk, with and in its indexes,
        where the database says: None where it does not.
        """
        connection = connections[self.using]
        table = self.model._meta.db_table
        queries = {
            "postgresql": (
                "SELECT pg_total_relation_size(%s::regclass), pg_indexes_size(%s::regclass)",
                [connection.ops.quote_name(table)] * 2,
            ),
            "mysql": (
                "SELECT data_length + index_length, index_length FROM information_schema.tables "
                "WHERE table_schema = DATABASE() AND table_name = %s",
                [table],
            ),
            # dbstat is there only where SQLite was built with it.
            "sqlite": (
                "SELECT SUM(pgsize), SUM(CASE WHEN name = %s THEN 0 ELSE pgsize END) "
                "FROM dbstat WHERE name = %s OR name IN "
                "(SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = %s)",
                [table, table, table],
            ),
        }
        if connection.vendor not in queries:
            return None
        sql, params = queries[connection.vendor]
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                row = cursor.fetchone()
        except DatabaseError:
            return None
        if row is None or row[0] is None:
            return None
        return {"table": table, "total_bytes": int(row[0]), "index_bytes": int(row[1] or 0)}

    def _sql(self, rows: QuerySet[Any]) -> tuple[str, Sequence[Any]]:
        """The SQL the ORM writes for ``rows``, and its parameters."""
        sql, params = rows.query.get_compiler(using=self.using).as_sql()
        return sql, params

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """
        The rows ``sql`` selects, read without the ORM's conversions row by
        row, which cost more than the reading.
        """
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, params)
            found: list[tuple[Any, ...]] = cursor.fetchall()
            return found

    def _all(self) -> QuerySet[Model]:
        sessions: QuerySet[Model] = self.model._base_manager.using(self.using)
        low, high = self.key_range
        if low is not None:
            sessions = sessions.filter(session_key__gte=low)
        if high is not None:
            sessions = sessions.filter(session_key__lt=high)
        return sessions

    def _filtered(self) -> QuerySet[Model]:
        # The database measures the stored size, for the filter and the report
        # alike: Length() is LENGTH() or CHAR_LENGTH(), as each backend spells
        # it, and counts characters, which for Django's ASCII data are bytes.
        sessions: QuerySet[Model] = self._all().annotate(stored_size=Length("session_data"))
        if self.bigger_than is not None:
            sessions = sessions.filter(stored_size__gt=self.bigger_than)
        return sessions

    def _keys_per_query(self) -> int:
        limit = connections[self.using].features.max_query_params or MAX_KEYS_PER_QUERY
        # Leave room for the size filter's parameter.
        return max(1, min(self.batch_size, limit - 1, MAX_KEYS_PER_QUERY))

    def _run(self, query: Callable[..., T], *args: Any) -> T:
        """
        Run ``query``, after a pause if it is not the first.

        If the connection is lost (the server restarted, the backend was
        killed), reconnect and run it again, a bounded number of times after
        growing pauses: the scan resumes after the last key it finished.
        """
        if self._queried and self.sleep_time:
            time.sleep(self.sleep_time)
        self._queried = True
        for delay in (*self.retry_delays, None):
            try:
                result = self._read_only(query, *args)
                self._worked = True
                return result
            except DatabaseError as error:
                # A database away from the start is an error at once; one
                # lost during the run is given time to come back.
                if delay is None or not self._worked or not self._connection_lost(error):
                    raise SourceError(
                        f"Cannot read sessions from the '{self.using}' database: "
                        f"{first_line(error)}."
                    ) from error
            connections[self.using].close()
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _read_only(self, query: Callable[..., T], *args: Any) -> T:
        # PostgreSQL can refuse writes outright: each read runs in a
        # transaction declared read-only, which holds even through a pooler
        # (PgBouncer) that hands each transaction its own server connection.
        connection = connections[self.using]
        if connection.vendor != "postgresql" or not connection.get_autocommit():
            return query(*args)
        with transaction.atomic(using=self.using):
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION READ ONLY")
            return query(*args)

    def _connection_lost(self, error: DatabaseError) -> bool:
        # The errors a lost connection raises; a query the database refused
        # raises others, and would only fail again.
        return isinstance(error, (OperationalError, InterfaceError))
