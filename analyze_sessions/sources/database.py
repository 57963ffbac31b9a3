"""Sessions kept in a database model: ``db``, ``cached_db`` and custom stores."""

from __future__ import annotations

import os
import re
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone, tzinfo
from importlib import import_module
from operator import methodcaller
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

from django.apps import apps
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    F,
    Field,
    Model,
    QuerySet,
    TextField,
    Value,
    When,
)
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Length
from django.utils.dateparse import parse_datetime

from analyze_sessions.shards import EVERY_KEY, KeyRange, in_range
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    RawSession,
    SourceError,
    SourceOptions,
    UnsupportedEngine,
    aware,
    driver_message,
)

T = TypeVar("T")

# Keeps an IN list under every backend's limit on query parameters, including
# PostgreSQL's 65,535 when a large --batch-size is asked for.
MAX_KEYS_PER_QUERY = 10_000

_WITHOUT_ROWID = re.compile(r"\bWITHOUT\s+ROWID\b", re.IGNORECASE)
# The least rowid SQLite has.
SQLITE_LEAST_ROWID = -(2**63)


SESSION_FIELDS = ("session_key", "session_data", "expire_date")

# No stored size can pass it, and every backend takes it as a parameter (a
# 64-bit integer): a size filter or bound past it is the same as it.
LONGEST = 2**63 - 1

# SQLite is dynamically typed: a row may hold text that is not UTF-8 where
# the driver would raise, with the text in its message. Decoded with
# surrogateescape, the text keeps its exact bytes, so that a page can seek
# past a key that holds it (see _after); _text() makes it plain text. A
# methodcaller, which the driver calls at a third of a partial(str)'s cost.
_LENIENT_TEXT = methodcaller("decode", "utf-8", "surrogateescape")


def read_only_sqlite(settings_dict: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """
    The settings of a connection that can only read the SQLite database of
    ``settings_dict``, and the path of the database's file.

    Opened with ``mode=ro``, SQLite never writes to the database, never
    checkpoints a write-ahead log a crashed writer left, and never creates a
    file that is not there. Its values come as they are stored (no
    ``detect_types``), so that no converter of Django's raises on a value that
    is not what the column says.
    """
    name = os.fspath(settings_dict["NAME"])
    if name.startswith("file:"):
        base, _, query = name.partition("?")
        parameters = parse_qsl(query.partition("#")[0], keep_blank_values=True)
        path = unquote(urlsplit(base).path)
        kept = [(key, value) for key, value in parameters if key != "mode"]
        name = f"{base}?{urlencode([*kept, ('mode', 'ro')])}"
    else:
        path = os.path.abspath(name)
        name = f"file:{quote(path)}?mode=ro"
    options = {**settings_dict.get("OPTIONS", {}), "detect_types": 0}
    return {**settings_dict, "NAME": name, "OPTIONS": options}, path


def _text(value: Any) -> str:
    """A key or data as text, whatever SQLite kept it as: NULL is ""."""
    if isinstance(value, str):
        if value.isascii():
            return value
        # Text that was not UTF-8 comes with its bytes escaped (see
        # _LENIENT_TEXT): each bad byte becomes U+FFFD, so that no later
        # stage meets a lone surrogate.
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _parsed(value: Any) -> datetime | None:
    """The date and time that SQLite's text ``value`` writes, if it is one."""
    if not isinstance(value, (str, bytes)):
        return None  # A number, say.
    text = value if isinstance(value, str) else _text(value)
    try:
        return datetime.fromisoformat(text)  # As Django writes them: the short way.
    except ValueError:
        pass
    try:
        return parse_datetime(text)
    except ValueError:  # Well formed, but no such day: 2024-13-45.
        return None


# Stands for the last key of a page while the query of the next is written.
_LAST = "\x00last session key\x00"


def _after(last: Any) -> Any:
    """``last``, the key a page ended on, as the database must be given it to seek past it."""
    if isinstance(last, bytes):
        # As is: the field would make it the text "b'...'", and every BLOB
        # sorts after every text, so the same page would come back forever.
        return Value(last)
    if isinstance(last, str) and not last.isascii():
        try:
            last.encode("utf-8")
        except UnicodeEncodeError:
            # Text that was not UTF-8 (see _LENIENT_TEXT), given back in its
            # own bytes, compared as text.
            return Cast(Value(last.encode("utf-8", "surrogateescape")), TextField())
    return last


def _close(connection: BaseDatabaseWrapper) -> None:
    # Whichever thread collects the source: a connection that only reads is
    # safe to close anywhere.
    connection.inc_thread_sharing()
    connection.close()


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

    A SQLite database is read through a connection of the source's own that
    can only read it (see :func:`read_only_sqlite`), except one in memory,
    which no second connection can open. :meth:`close` closes it; so does
    collecting the source.

    Whatever a row holds, it is read: a key or data that is not text is made
    text (NULL is ""), and data whose stored size is over ``max_size`` is
    not fetched (its ``data`` is None). An expire_date that cannot be read as
    a date and time gives ``expires_at`` None and is counted in
    ``unreadable_expiry``; a NULL one gives None too, and is not counted.
    """

    # Reads what it finds when it finds it: nothing is listed first, to be gone after.
    sessions_gone = 0
    # On SQLite, the part of the table's rowids [low, high) this source reads
    # (high None: to the end), where --jobs splits a table by its storage
    # order: see rowid_parts().
    rowids: tuple[int, int | None] | None = None

    _fields = ("session_key", "readable_data", "readable_expiry", "stored_size")
    # The pauses before each new try of a query whose connection was lost.
    retry_delays: tuple[float, ...] = (1.0, 3.0, 10.0)

    @classmethod
    def open(
        cls, engine: str, store_class: type[SessionBase], options: SourceOptions
    ) -> DatabaseSource:
        """The source of the model ``--model`` names, else of the engine's own model."""
        if options.model_label:
            model = named_model(options.model_label)
        else:
            found = session_model(engine, store_class)
            if found is None:
                raise UnsupportedEngine(
                    f"Session engine '{engine}' keeps no sessions in a model: name the model "
                    f"that holds them with --model app_label.ModelName."
                )
            model = found
        return cls(model, using=options.using, **options.reading())

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
        self._next_page: tuple[str, list[Any], int] | None = None
        self.max_size = max_size
        self.unreadable: Counter[str] = Counter()
        self.unreadable_expiry = 0
        self._read_only: BaseDatabaseWrapper | None = None
        self._read_only_pid = 0
        self._read_only_settings: dict[str, Any] | None = None
        own = connections[using]
        if isinstance(own, SQLiteWrapper) and not own.is_in_memory_db():
            self._read_only_settings, path = read_only_sqlite(own.settings_dict)
            # Checked here, before any read: opening a file that is not there
            # would only say "unable to open database file".
            if not os.path.exists(path):
                raise UnsupportedEngine(
                    f"The SQLite database file '{path}' of the '{using}' database does not exist."
                )

    def total_sessions(self) -> int:
        """Count every session in the store, whatever the filters."""
        return self._run(self._count, self._all())

    def close(self) -> None:
        """Close the connection of the source's own, if it opened one (a read opens it again)."""
        if self._read_only is not None and self._read_only_pid == os.getpid():
            self._read_only.close()

    def scan(self) -> Iterator[list[RawSession]]:
        """Yield every session that passes the size filter, a batch at a time."""
        page = self._rowid_page if self._has_rowid() else self._key_page
        last = None
        while True:
            batch = self._run(self._fetch, *page(last))
            if batch:
                last = batch[-1][0]
                yield self._sessions(batch)
            if len(batch) < self.batch_size:
                return

    def _sessions(self, rows: Iterable[Sequence[Any]]) -> list[RawSession]:
        """
        Sessions of rows of (primary key, key, data, expire_date, stored
        size), whatever they hold.
        """
        # With USE_TZ, Django writes UTC, or the database's TIME_ZONE if set;
        # without, local time (see aware()).
        zone = connections[self.using].timezone if settings.USE_TZ else None
        max_size, expiry = self.max_size, self._expiry
        sessions = []
        # Django's own rows (ASCII text, UTC) take the short ways.
        for _, key, data, expires, size in rows:
            stored_size = int(size or 0)  # LENGTH(NULL) is NULL.
            if type(key) is not str or not key.isascii():
                key = _text(key)
            if stored_size > max_size:
                data = None  # Selected as NULL: see _readable().
            elif type(data) is not str or not data.isascii():
                data = _text(data)
            sessions.append(RawSession(key, data, expiry(expires, zone), stored_size))
        return sessions

    def _expiry(self, value: Any, zone: tzinfo | None) -> datetime | None:
        """
        An expire_date as the database gives it, aware and in UTC: None if it
        is NULL, or cannot be read as a date and time (then counted).
        """
        if isinstance(value, datetime):
            moment: datetime | None = value
        elif value is None:
            return None
        else:
            moment = _parsed(value)
        if moment is not None:
            if moment.tzinfo is timezone.utc:  # As PostgreSQL's rows come.
                return moment
            if moment.tzinfo is None and zone is not None:
                moment = moment.replace(tzinfo=zone)
                if zone is timezone.utc:
                    return moment
            try:
                return cast(datetime, aware(moment)).astimezone(timezone.utc)
            except (OverflowError, ValueError):  # Past the calendar, once in UTC.
                pass
        self.unreadable_expiry += 1
        return None

    def _key_page(self, last: Any) -> tuple[str, Sequence[Any]]:
        # The sessions after ``last`` in primary-key order, which every
        # database can seek to through the key's index.
        if type(last) is str and self._next_page is not None and _after(last) is last:
            # The query of every page but the first, written once: the ORM
            # takes 2 ms to write it, a tenth of the page's reading.
            next_sql, next_params, where = self._next_page
            return next_sql, [*next_params[:where], last, *next_params[where + 1 :]]
        rows = self._readable(self._filtered()).order_by("pk").values_list("pk", *self._fields)
        if last is None:
            if self._next_page is None:
                try:
                    written, params = self._sql(rows.filter(pk__gt=_LAST)[: self.batch_size])
                except (TypeError, ValueError):  # A primary key that is no text.
                    params = []
                # Where the last key goes, if it goes in as given.
                if list(params).count(_LAST) == 1:
                    self._next_page = written, list(params), list(params).index(_LAST)
        else:
            rows = rows.filter(pk__gt=_after(last))
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
        if self.rowids is not None:
            # A seek in the table's own B-tree: each job reads its part only.
            low_rowid, high_rowid = self.rowids
            where.append("rowid >= %s")
            params.append(low_rowid)
            if high_rowid is not None:
                where.append("rowid < %s")
                params.append(high_rowid)
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
            params.append(min(self.bigger_than, LONGEST))
        # Data over the bound is never fetched: see _readable().
        sql = (
            f"SELECT rowid, {key}, CASE WHEN LENGTH({data}) > %s THEN NULL ELSE {data} END, "
            f"{expires}, LENGTH({data}) FROM {table} "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY rowid LIMIT %s"
        )
        return sql, [min(self.max_size, LONGEST), *params, self.batch_size]

    def _has_rowid(self) -> bool:
        """
        Whether the sessions are in one SQLite table that has rowids, as
        Django's tables do: not a view, not a table WITHOUT ROWID, not
        fields spread over the tables of models inherited from.
        """
        if self._rowid is None:
            self._rowid = False
            connection = connections[self.using]  # Its vendor: no connection is made.
            table = self.model._meta.db_table
            if connection.vendor == "sqlite" and all(
                self.model._meta.get_field(name).model._meta.db_table == table
                for name in SESSION_FIELDS
            ):
                # Not a read of the sessions: whatever keeps this from
                # answering, the first page says more clearly.
                try:
                    found = self._select(
                        "SELECT sql, (SELECT COUNT(*) FROM pragma_table_xinfo(%s) "
                        "WHERE LOWER(name) = 'rowid') FROM sqlite_master "
                        "WHERE type = 'table' AND name = %s",
                        [table, table],
                    )
                except DatabaseError:
                    found = []
                # A column named rowid, generated ones included (which only
                # table_xinfo lists), would be read in its place.
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
        rows = self._readable(self._filtered()).values_list("pk", *self._fields)
        for start in range(0, len(wanted), size):
            chunk = wanted[start : start + size]
            if self.bigger_than is not None:
                found = self._run(self._count, self._all().filter(session_key__in=chunk))
            found_rows = self._run(self._fetch, *self._sql(rows.filter(session_key__in=chunk)))
            batch = self._sessions(found_rows)
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
        connection = connections[self.using]  # Its vendor: no connection is made.
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
            rows = self._select(sql, params)
        except DatabaseError:  # No dbstat, say.
            return None
        row = rows[0] if rows else None
        if row is None or row[0] is None:
            return None
        return {"table": table, "total_bytes": int(row[0]), "index_bytes": int(row[1] or 0)}

    def _sql(self, rows: QuerySet[Any]) -> tuple[str, Sequence[Any]]:
        """The SQL the ORM writes for ``rows``, and its parameters."""
        sql, params = rows.query.get_compiler(using=self.using).as_sql()
        return sql, params

    def _fetch(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A page of sessions, or the sessions of listed keys: the rows ``sql`` selects."""
        return self._select(sql, params)

    def _select(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """
        The rows ``sql`` selects, read without the ORM's conversions row by
        row, which cost more than the reading.
        """
        with self._reader().cursor() as cursor:
            cursor.execute(sql, params)
            found: list[tuple[Any, ...]] = cursor.fetchall()
            return found

    def _count(self, sessions: QuerySet[Model]) -> int:
        """How many sessions ``sessions`` holds, counted by the database."""
        # Counted through the reader, which the ORM's count() would not use.
        sql, params = self._sql(sessions.order_by().values_list("pk"))
        [(count,)] = self._select(f"SELECT COUNT(*) FROM ({sql}) counted", params)
        return int(count)

    def _reader(self) -> BaseDatabaseWrapper:
        """
        The connection that sessions are read through: on SQLite, one of the
        source's own that can only read (see :func:`read_only_sqlite`), made
        in the process that reads, so that forked jobs each have their own.
        """
        own = connections[self.using]
        if self._read_only_settings is None:
            return own
        if self._read_only is None or self._read_only_pid != os.getpid():
            # One inherited through a fork is left alone: the parent's.
            self._read_only = type(own)(self._read_only_settings, self.using)
            self._read_only_pid = os.getpid()
            weakref.finalize(self, _close, self._read_only)
        reader = self._read_only
        # Its queries are the alias's: whoever watches those (Django's debug
        # log, a test's CaptureQueriesContext) sees the reads made for it.
        reader.queries_log = own.queries_log
        reader.force_debug_cursor = own.force_debug_cursor
        reader.ensure_connection()
        if reader.connection.text_factory is not _LENIENT_TEXT:
            reader.connection.text_factory = _LENIENT_TEXT
        return reader

    def rowid_parts(self, count: int) -> list[tuple[int, int | None]] | None:
        """
        The table's rowids in ``count`` parts of equal spans, for as many
        jobs to read a SQLite table each a part, rather than each the whole
        of it for its range of keys; None where the sessions have no rowids.
        The first part starts at the least rowid there can be, and the last
        has no end, so that rows written meanwhile are read as one job reads.
        """
        if not self._has_rowid():
            return None
        quote = connections[self.using].ops.quote_name
        [(low, high)] = self._run(
            self._select,
            f"SELECT MIN(rowid), MAX(rowid) FROM {quote(self.model._meta.db_table)}",
            (),
        )
        if low is None:
            low = high = 0
        span = high - low + 1
        bounds = [low + span * part // count for part in range(1, count)]
        ends: list[int | None] = [*bounds, None]
        return list(zip([SQLITE_LEAST_ROWID, *bounds], ends, strict=True))

    def _all(self) -> QuerySet[Model]:
        sessions: QuerySet[Model] = self.model._base_manager.using(self.using)
        if self.rowids is not None:
            low_rowid, high_rowid = self.rowids
            sessions = sessions.alias(
                storage_rowid=RawSQL("rowid", (), output_field=BigIntegerField())
            ).filter(storage_rowid__gte=low_rowid)
            if high_rowid is not None:
                sessions = sessions.filter(storage_rowid__lt=high_rowid)
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
        # A 64-bit integer, so that the filter takes any size up to LONGEST on
        # every backend (the ORM refuses an IntegerField a number over 2**31).
        sessions: QuerySet[Model] = self._all().annotate(
            stored_size=Length("session_data", output_field=BigIntegerField())
        )
        if self.bigger_than is not None:
            sessions = sessions.filter(stored_size__gt=min(self.bigger_than, LONGEST))
        return sessions

    def _readable(self, sessions: QuerySet[Model]) -> QuerySet[Model]:
        # Data over the bound is selected as NULL, so that one huge row is
        # never fetched whole: the database measured it, and that is enough.
        # mysqlclient makes a DATETIME a datetime in Python, a row at a
        # time, in a fifth of the time a session takes to decode: as text,
        # it is read in C (see _expiry()).
        mysql = connections[self.using].vendor == "mysql"
        readable: QuerySet[Model] = sessions.annotate(
            readable_data=Case(
                When(stored_size__gt=min(self.max_size, LONGEST), then=Value(None)),
                default=F("session_data"),
            ),
            readable_expiry=Cast("expire_date", CharField()) if mysql else F("expire_date"),
        )
        return readable

    def _keys_per_query(self) -> int:
        try:
            limit = self._reader().features.max_query_params or MAX_KEYS_PER_QUERY
        except DatabaseError:  # The first query will say why.
            limit = MAX_KEYS_PER_QUERY
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
                result = self._in_read_only_transaction(query, *args)
                self._worked = True
                return result
            except DatabaseError as error:
                # A database away from the start is an error at once; one
                # lost during the run is given time to come back.
                if delay is None or not self._worked or not self._connection_lost(error):
                    raise SourceError(
                        f"Cannot read sessions from the '{self.using}' database: "
                        f"{driver_message(error, self._names())}."
                    ) from error
            if self._read_only_settings is not None:
                self.close()
            else:
                connections[self.using].close()
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _names(self) -> set[str]:
        """The names a driver's message may quote that are not data: tables, columns, database."""
        names = {str(connections[self.using].settings_dict["NAME"])}
        for name in (*SESSION_FIELDS, "pk"):
            field = self.model._meta.get_field(name) if name != "pk" else self.model._meta.pk
            assert field is not None
            names.add(field.model._meta.db_table)
            if isinstance(field, Field) and field.column is not None:
                names.add(field.column)
        return names

    def _in_read_only_transaction(self, query: Callable[..., T], *args: Any) -> T:
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
