from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.sessions.backends import cache, db, file
from django.contrib.sessions.models import Session
from django.db import DatabaseError, OperationalError, connection, models, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analyze_sessions.sources import (
    RawSession,
    UnsupportedEngine,
    driver_message,
    session_store_class,
)
from analyze_sessions.sources.database import MAX_KEYS_PER_QUERY, DatabaseSource, session_model
from tests.engines import plain, user_sessions
from tests.helpers import (
    corrupt_session,
    run_command,
    session_of_size,
    session_via_view,
    writes,
)
from tests.models import ExtendedSession, KeyedSession, NullableSession, PlainSession, UserSession

pytestmark = pytest.mark.django_db


class GeneratedRowidSession(models.Model):
    """Sessions in a table whose generated column is named rowid (made by a test)."""

    session_key = models.CharField(max_length=40, primary_key=True)
    session_data = models.TextField()
    expire_date = models.DateTimeField()

    class Meta:
        app_label = "tests"
        db_table = "generated_rowid"
        managed = False


def make_sessions(count: int) -> set[str]:
    return {session_via_view(n=str(n)) for n in range(count)}


def source(**options: object) -> DatabaseSource:
    return DatabaseSource(Session, using="default", **options)  # type: ignore[arg-type]


def test_session_model_of_the_db_engine() -> None:
    assert session_model("django.contrib.sessions.backends.db", db.SessionStore) is Session


def test_engines_that_keep_sessions_elsewhere_have_no_model() -> None:
    assert session_model("django.contrib.sessions.backends.cache", cache.SessionStore) is None
    assert session_model("django.contrib.sessions.backends.file", file.SessionStore) is None


def test_the_model_an_engine_module_uses() -> None:
    assert session_model("tests.engines.plain", plain.SessionStore) is PlainSession
    assert session_model("tests.engines.user_sessions", user_sessions.SessionStore) is UserSession


def test_an_engine_that_cannot_be_imported() -> None:
    with pytest.raises(UnsupportedEngine) as raised:
        session_store_class("myproject.no_such_engine")

    assert str(raised.value) == (
        "Cannot load session engine 'myproject.no_such_engine': No module named 'myproject'."
    )


@pytest.mark.parametrize("batch_size", [1, 7, 23, 1000])
def test_scan_visits_every_session_once_in_keyset_pages(batch_size: int) -> None:
    keys = make_sessions(23)

    with CaptureQueriesContext(connection) as queries:
        seen = [raw.key for batch in source(batch_size=batch_size).scan() for raw in batch]

    assert sorted(seen) == sorted(keys)
    # Full pages, then the short (or empty) page that ends the scan; before
    # them on SQLite, a look at how the table is kept, to page it by rowid.
    layout = 1 if connection.vendor == "sqlite" else 0
    assert len(queries) == layout + 23 // batch_size + 1
    assert writes(queries.captured_queries) == []
    assert not any("OFFSET" in query["sql"].upper() for query in queries)


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
def test_parts_of_a_sqlite_table_are_read_each_once(parts: int) -> None:
    if connection.vendor != "sqlite":
        pytest.skip("Only SQLite tables are split by rowid.")
    keys = make_sessions(20)
    Session.objects.filter(pk__in=sorted(keys)[:5]).delete()  # Gaps in the rowids.

    rowids = source().rowid_parts(parts)
    assert rowids is not None and len(rowids) == parts
    readers = []
    for part in rowids:
        reader = source(batch_size=4)
        reader.rowids = part
        readers.append(reader)
    seen = [[raw.key for batch in reader.scan() for raw in batch] for reader in readers]

    assert sorted(key for part in seen for key in part) == sorted(keys)[5:]
    assert [reader.total_sessions() for reader in readers] == [len(part) for part in seen]
    # In storage order, each part after the one before, from the least rowid
    # there can be to no end.
    assert [low for low, _ in rowids[1:]] == [high for _, high in rowids[:-1]]
    assert (rowids[0][0], rowids[-1][1]) == (-(2**63), None)


def test_the_largest_rowid_there_can_be_is_read() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("Only SQLite tables are split by rowid.")
    first, last = make_sessions(2)
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE django_session SET rowid = %s WHERE session_key = %s", [2**63 - 1, last]
        )

    rowids = source().rowid_parts(2)
    assert rowids is not None
    readers = []
    for part in rowids:
        reader = source()
        reader.rowids = part
        readers.append(reader)

    assert sorted(raw.key for reader in readers for batch in reader.scan() for raw in batch) == (
        sorted([first, last])
    )


def test_a_generated_column_named_rowid_is_not_paged_by() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("Only SQLite has rowids.")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE generated_rowid (session_key varchar(40) PRIMARY KEY, "
            "session_data text, expire_date datetime, "
            "rowid int GENERATED ALWAYS AS (length(session_data)) VIRTUAL)"
        )
    try:
        reader = DatabaseSource(GeneratedRowidSession, using="default")
        assert not reader._has_rowid()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE generated_rowid")


def test_scan_yields_what_the_store_holds() -> None:
    key = session_via_view(foo="bar")
    stored = Session.objects.get(pk=key)

    [[raw]] = source().scan()

    assert raw == (key, stored.session_data, stored.expire_date, len(stored.session_data))


def test_scan_of_an_empty_store() -> None:
    assert list(source().scan()) == []


def only_on_sqlite() -> None:
    if connection.vendor != "sqlite":
        pytest.skip("Only SQLite pages by rowid: run with the default ANALYZE_SESSIONS_DB=sqlite.")


def test_sqlite_pages_a_range_of_keys_in_storage_order() -> None:
    only_on_sqlite()
    created = [session_via_view(n=str(n)) for n in range(30)]
    low, high = "4", "p"

    with CaptureQueriesContext(connection) as queries:
        seen = [
            raw.key for batch in source(batch_size=4, key_range=(low, high)).scan() for raw in batch
        ]

    # In the order the rows were added, and only those in the range.
    assert seen == [key for key in created if low <= key < high]
    # Each page seeks to its first rowid and reads on from there: no index
    # read in key order, no sorting of the range again.
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN QUERY PLAN " + queries[-1]["sql"])
        plan = " ".join(str(step[-1]) for step in cursor.fetchall())
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan
    assert "B-TREE" not in plan and "INDEX" not in plan


KEYED_COLUMNS = (
    "session_key varchar(40) NOT NULL PRIMARY KEY, data text NOT NULL, "
    "expire_date datetime NOT NULL"
)


@pytest.fixture(
    params=[
        ("rowid", f"({KEYED_COLUMNS})"),
        ("key", f"({KEYED_COLUMNS}) WITHOUT ROWID"),
        ("key", f"({KEYED_COLUMNS}) without\n  rowid"),
        # A column the model does not know, which SQLite would read for rowid.
        ("key", f"({KEYED_COLUMNS}, rowid integer NOT NULL DEFAULT 1)"),
    ],
    ids=["rowids", "without-rowid", "without-rowid-spaced", "a-column-named-rowid"],
)
def keyed_table(request: pytest.FixtureRequest) -> Iterator[str]:
    """A table of the site's own for KeyedSession; what its scan pages by."""
    only_on_sqlite()
    pages_by, definition = request.param
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE tests_keyed_session {definition}")
    yield pages_by
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE tests_keyed_session")


def test_a_table_of_the_sites_own_is_paged_by_rowid_only_where_it_has_them(
    keyed_table: str,
) -> None:
    expires = timezone.now() + timedelta(days=1)
    # Added out of key order, so that the two orders differ.
    keys = [f"{n:032d}" for n in (5, 1, 8, 0, 3, 9, 2, 7, 4, 6)]
    for n, key in enumerate(keys):
        KeyedSession.objects.create(
            session_key=key, session_data=db.SessionStore().encode({"n": n}), expire_date=expires
        )
    keyed = DatabaseSource(KeyedSession, using="default", batch_size=3, bigger_than=10)

    with CaptureQueriesContext(connection) as queries:
        found = [raw for batch in keyed.scan() for raw in batch]

    stored = dict(KeyedSession.objects.values_list("session_key", "session_data"))
    assert [raw.key for raw in found] == (keys if keyed_table == "rowid" else sorted(keys))
    # The data, from the column named apart from its field.
    assert {raw.key: raw.data for raw in found} == stored
    pages = [query["sql"] for query in queries if "LIMIT" in query["sql"]]
    assert all(("rowid >" in sql) == (keyed_table == "rowid") for sql in pages[1:])


def test_a_model_inheriting_sessions_is_paged_by_key() -> None:
    expires = timezone.now() + timedelta(days=1)
    for n in range(5):
        ExtendedSession.objects.create(
            session_key=f"{n:032d}",
            session_data=db.SessionStore().encode({"n": n}),
            expire_date=expires,
            note=str(n),
        )
    extended = DatabaseSource(ExtendedSession, using="default", batch_size=2)

    found = [raw for batch in extended.scan() for raw in batch]

    assert [(raw.key, raw.data) for raw in found] == list(
        ExtendedSession.objects.order_by("pk").values_list("session_key", "session_data")
    )
    assert [raw.expires_at for raw in found] == [expires] * 5


def test_bigger_than_is_strict_and_filters_in_the_database() -> None:
    # Real sessions of these sizes cannot be 1 more than a multiple of 4 bytes
    # long (see session_of_size), so rows of junk stand in at 15001 and 15361.
    by_size = {size: session_of_size(size) for size in (14_999, 15_000, 15_002, 15_360, 15_362)}
    by_size[15_001] = corrupt_session("x" * 15_001)
    by_size[15_361] = corrupt_session("x" * 15_361)

    with CaptureQueriesContext(connection) as queries:
        over_15kb = {raw.key for batch in source(bigger_than=15_000).scan() for raw in batch}
    over_15kib = {raw.key for batch in source(bigger_than=15_360).scan() for raw in batch}

    assert over_15kb == {by_size[size] for size in (15_001, 15_002, 15_360, 15_361, 15_362)}
    assert over_15kib == {by_size[15_361], by_size[15_362]}
    assert "LENGTH(" in queries[-1]["sql"].upper()


def test_total_sessions_ignores_filters() -> None:
    make_sessions(3)
    corrupt_session("junk")

    assert source(bigger_than=10**9).total_sessions() == 4


def test_lookup_finds_listed_keys_in_bounded_batches() -> None:
    keys = sorted(make_sessions(5))
    wanted = keys[:3] + ["missing1", "missing2", keys[0]]
    lookup = source(batch_size=2)

    with CaptureQueriesContext(connection) as queries:
        found = [raw.key for batch in lookup.lookup(wanted) for raw in batch]

    assert sorted(found) == keys[:3]
    assert (lookup.keys_listed, lookup.keys_not_found) == (5, 2)
    assert len(queries) == 3  # Five distinct keys, two per query.


def test_lookup_with_bigger_than_tells_missing_keys_from_small_sessions() -> None:
    small, big = session_via_view(foo="bar"), session_of_size(2000)
    lookup = source(bigger_than=1000)

    found = [raw.key for batch in lookup.lookup([small, big, "missing"]) for raw in batch]

    assert found == [big]
    assert (lookup.keys_listed, lookup.keys_not_found) == (3, 1)


def test_lookup_keeps_under_the_backends_parameter_limit() -> None:
    keys = make_sessions(3)
    wanted = list(keys) + [f"missing{n}" for n in range(2997)]
    limit = connection.features.max_query_params
    lookup = source(batch_size=100_000)

    with CaptureQueriesContext(connection) as queries:
        found = {raw.key for batch in lookup.lookup(wanted) for raw in batch}

    assert found == keys
    assert lookup.keys_not_found == 2997
    per_query = min(MAX_KEYS_PER_QUERY, limit - 1 if limit else MAX_KEYS_PER_QUERY)
    assert len(queries) == -(-3000 // per_query)


def test_sleep_time_pauses_between_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    make_sessions(10)
    pauses: list[float] = []
    monkeypatch.setattr("analyze_sessions.sources.database.time.sleep", pauses.append)
    scan = source(batch_size=4, sleep_time=0.25)

    scan.total_sessions()
    batches = list(scan.scan())

    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert pauses == [0.25] * 3  # Four queries: a count and three pages.


def test_stored_size_counts_characters_as_the_filter_does() -> None:
    # Django writes session data in ASCII, where characters are bytes. Junk
    # that is not ASCII is measured in characters, the filter's unit too.
    key = corrupt_session("é" * 10)

    [[raw]] = source().scan()

    assert (raw.key, raw.stored_size) == (key, 10)
    assert [raw.key for batch in source(bigger_than=9).scan() for raw in batch] == [key]
    assert list(source(bigger_than=10).scan()) == []


def test_a_listed_key_with_a_nul_is_not_found_without_asking() -> None:
    key = session_via_view(foo="bar")
    lookup = source()

    with CaptureQueriesContext(connection) as queries:
        found = [raw.key for batch in lookup.lookup([key, "bad\x00key"]) for raw in batch]

    assert found == [key]
    assert (lookup.keys_listed, lookup.keys_not_found) == (2, 1)
    assert len(queries) == 1


def test_the_database_filter_selects_what_counting_in_python_selects() -> None:
    for size in (14_998, 14_999, 15_000, 15_002, 15_003, 15_359, 15_360, 15_362):
        session_of_size(size)
    for size in (15_001, 15_361):  # Sizes no real session can have.
        corrupt_session("j" * size)
    stored = dict(Session.objects.values_list("session_key", "session_data"))

    for threshold in range(14_997, 15_004):
        for threshold_ in (threshold, threshold + 360):
            selected = {raw.key for batch in source(bigger_than=threshold_).scan() for raw in batch}
            by_python = {key for key, data in stored.items() if len(data) > threshold_}
            assert selected == by_python, threshold_


def test_lookup_of_a_hundred_thousand_keys() -> None:
    keys = make_sessions(3)
    wanted = [*keys, *(f"absent{n:026d}" for n in range(99_997))]
    lookup = source()

    with CaptureQueriesContext(connection) as queries:
        found = {raw.key for batch in lookup.lookup(wanted) for raw in batch}

    assert found == keys
    assert (lookup.keys_listed, lookup.keys_not_found) == (100_000, 99_997)
    # At most --batch-size keys a query, and fewer than the backend allows.
    per_query = min(1000, (connection.features.max_query_params or 1001) - 1)
    assert len(queries) == -(-100_000 // per_query)


def raw_sql(sql: str, params: Sequence[Any] = ()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def no_retries(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses a source takes: none, unless it took a row for a lost connection."""
    pauses: list[float] = []
    monkeypatch.setattr("analyze_sessions.sources.database.time.sleep", pauses.append)
    return pauses


# Rows of the wrong type, as SQLite keeps whatever it is given. The key of
# each, what its key reads as, and whether its expire_date is readable.
NOT_UTF8 = "CAST(X'{}' AS TEXT)"
WRONG_ROWS = [
    # (key SQL, data SQL, expire_date SQL, key as read, data as read, expiry readable)
    ("'a0000000000000000000000000000000'", "'good'", "'2099-01-01 00:00:00'", None, "good", True),
    ("'a1000000000000000000000000000000'", "'x'", "'2024-13-45 00:00:00'", None, "x", False),
    ("'a2000000000000000000000000000000'", "'x'", NOT_UTF8.format("ff32303234"), None, "x", False),
    ("'a3000000000000000000000000000000'", "'x'", "1700000000", None, "x", False),
    ("X'61340000ff'", "'x'", "'2099-01-01'", "a4\x00\x00\ufffd", "x", True),
    (
        NOT_UTF8.format("6135ff" + "30" * 29),
        NOT_UTF8.format("5345435245542dff"),  # SECRET-, then a byte that is not UTF-8.
        "'2099-01-01 00:00:00'",
        "a5\ufffd" + "0" * 29,
        "SECRET-\ufffd",
        True,
    ),
    ("'a6000000000000000000000000000000'", "'after'", "'2099-01-01 00:00:00'", None, "after", True),
]


def insert_wrong_rows(table: str = "django_session", data_column: str = "session_data") -> None:
    for key, data, expires, *_ in WRONG_ROWS:
        raw_sql(
            f"INSERT INTO {table} (session_key, {data_column}, expire_date) "
            f"VALUES ({key}, {data}, {expires})"
        )


@pytest.mark.parametrize("batch_size", [1, 1000])
def test_rows_of_the_wrong_type_are_read_and_so_are_the_rows_after(
    batch_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_on_sqlite()
    insert_wrong_rows()
    pauses = no_retries(monkeypatch)
    scan = source(batch_size=batch_size)

    found = [raw for batch in scan.scan() for raw in batch]

    assert [(raw.key, raw.data) for raw in found] == [
        (read_key or key.strip("'"), data) for key, _, _, read_key, data, _ in WRONG_ROWS
    ]
    assert [raw.expires_at is not None for raw in found] == [row[-1] for row in WRONG_ROWS]
    assert all(type(raw.key) is str and type(raw.stored_size) is int for raw in found)
    assert found[0].expires_at == datetime(2099, 1, 1, tzinfo=dt_timezone.utc)
    assert scan.unreadable_expiry == 3
    assert scan.total_sessions() == len(WRONG_ROWS)
    assert pauses == []  # Never taken for a lost connection.


def test_rows_of_the_wrong_type_are_found_by_key() -> None:
    only_on_sqlite()
    insert_wrong_rows()
    lookup = source()
    keys = [key.strip("'") for key, *_ in WRONG_ROWS if key.startswith("'")]

    found = {raw.key: raw for batch in lookup.lookup([*keys, "missing"]) for raw in batch}

    assert sorted(found) == keys
    assert (lookup.keys_listed, lookup.keys_not_found, lookup.unreadable_expiry) == (6, 1, 3)


def test_rows_of_the_wrong_type_leave_the_run_whole_and_nothing_shown() -> None:
    only_on_sqlite()
    insert_wrong_rows()

    out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 7 sessions out of 7 total sessions\n")
    assert "SECRET" not in out and "a0000000000000000000000000000000" not in out


def test_a_table_without_rowids_is_paged_past_keys_of_the_wrong_type(keyed_table: str) -> None:
    insert_wrong_rows("tests_keyed_session", "data")
    keyed = DatabaseSource(KeyedSession, using="default", batch_size=1)

    # At most twice the pages there can be, so that a page that comes back
    # again and again fails the test rather than hangs it.
    found = [
        raw.key for batch in itertools.islice(keyed.scan(), 2 * len(WRONG_ROWS)) for raw in batch
    ]

    assert sorted(found) == sorted(
        read_key or key.strip("'") for key, _, _, read_key, *_ in WRONG_ROWS
    )


def test_nulls_in_a_table_that_allows_them() -> None:
    expires = timezone.now() + timedelta(days=1)
    data = db.SessionStore().encode({"foo": "bar"})
    rows = [
        NullableSession.objects.create(session_key=key, session_data=value, expire_date=when)
        for key, value, when in [
            ("k" * 32, data, expires),
            (None, data, expires),
            ("n" * 32, None, expires),
            ("e" * 32, data, None),
            ("z" * 32, data, expires),
        ]
    ]
    nullable = DatabaseSource(NullableSession, using="default", batch_size=2)

    found = [raw for batch in nullable.scan() for raw in batch]
    listed = [raw for batch in nullable.lookup(["n" * 32, "e" * 32]) for raw in batch]

    assert found == [
        RawSession(
            row.session_key or "",
            row.session_data or "",
            row.expire_date,
            len(row.session_data or ""),
        )
        for row in rows
    ]
    assert sorted(listed) == sorted(found[2:4])
    assert (nullable.unreadable_expiry, nullable.total_sessions()) == (0, 5)
    out, err, returncode = run_command("--model=tests.NullableSession")
    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 5 sessions out of 5 total sessions\n")


@pytest.mark.parametrize("engine", ["db", "cached_db"])
def test_expiry_is_an_aware_moment_without_use_tz(engine: str) -> None:
    cache = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    with override_settings(
        USE_TZ=False,
        TIME_ZONE="Europe/Paris",
        SESSION_ENGINE=f"django.contrib.sessions.backends.{engine}",
        CACHES=cache,
    ):
        store_class = session_store_class(f"django.contrib.sessions.backends.{engine}")
        expiries: dict[str, datetime] = {}
        # An hour ago, in a minute, a day ago, in two weeks (local times).
        for seconds in (-3600, 60, -86400, 14 * 86400):
            store = store_class()
            store["n"] = str(seconds)
            store.set_expiry(seconds)
            store.save()
            # As written: a naive local time, made aware by hand.
            stored = Session.objects.get(pk=store.session_key).expire_date
            assert timezone.is_naive(stored)
            expiries[str(store.session_key)] = stored.replace(tzinfo=ZoneInfo("Europe/Paris"))

        found = [raw for batch in source().scan() for raw in batch]
        now = timezone.make_aware(timezone.now())

    assert {raw.key: raw.expires_at for raw in found} == expiries
    assert all(
        raw.expires_at is not None and raw.expires_at.utcoffset() == timedelta(0) for raw in found
    )
    # Counted by hand: the two set in the past.
    assert sum(raw.expires_at is not None and raw.expires_at < now for raw in found) == 2


# The most --bigger-than allows, and numbers past it no source is given by
# the command but must take all the same.
CAP = 2**31 - 1


@pytest.mark.parametrize("bigger_than", [0, CAP, CAP + 1, 2**63 - 1, 2**63, 10**30])
def test_any_size_filter_up_to_the_cap_and_past_it(bigger_than: int) -> None:
    keys = {session_via_view(foo="bar"), session_of_size(3000)}
    expected = keys if bigger_than == 0 else set()

    scanned = {raw.key for batch in source(bigger_than=bigger_than).scan() for raw in batch}
    lookup = source(bigger_than=bigger_than)
    listed = {raw.key for batch in lookup.lookup([*keys, "missing"]) for raw in batch}

    assert scanned == listed == expected
    assert (lookup.keys_listed, lookup.keys_not_found) == (3, 1)


def test_the_cap_through_the_command(tmp_path: Path) -> None:
    keys = [session_via_view(foo="bar"), session_of_size(3000)]
    ids = tmp_path / "ids"
    ids.write_text("\n".join(keys))

    for args in ([], [f"--ids-from={ids}"]):
        out, err, returncode = run_command(f"--bigger-than={CAP}", *args)

        assert (err, returncode) == ("", 0)
        assert out.startswith("Processed 0 sessions out of 2 total sessions\n")


def test_data_over_the_bound_is_not_fetched() -> None:
    small, big = session_of_size(2000), session_of_size(3000)
    expected = {small: 2000, big: 3000}

    with CaptureQueriesContext(connection) as queries:
        scanned = [raw for batch in source(max_size=2500).scan() for raw in batch]
    listed = [raw for batch in source(max_size=2500).lookup([small, big]) for raw in batch]

    for found in (scanned, listed):
        assert {raw.key: raw.stored_size for raw in found} == expected
        assert {raw.key: raw.data is None for raw in found} == {small: False, big: True}
    assert "CASE WHEN" in queries[-1]["sql"].upper()
    # A bound of the stored size itself keeps the session.
    assert all(raw.data is not None for batch in source(max_size=3000).scan() for raw in batch)


def test_data_over_the_bound_is_not_fetched_when_paging_by_key() -> None:
    expires = timezone.now() + timedelta(days=1)
    for size in (100, 400):
        ExtendedSession.objects.create(
            session_key=f"{size:032d}", session_data="x" * size, expire_date=expires
        )

    found = [
        raw
        for batch in DatabaseSource(ExtendedSession, using="default", max_size=200).scan()
        for raw in batch
    ]

    assert [(raw.data, raw.stored_size) for raw in found] == [("x" * 100, 100), (None, 400)]


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        # A value quoted, and names the source gave.
        (
            'invalid input syntax for type integer: "abcdefgh"',
            "invalid input syntax for type integer: (hidden)",
        ),
        (
            'relation "unmigrated_session" does not exist',
            'relation "unmigrated_session" does not exist',
        ),
        (
            "Table 'shop.unmigrated_session' doesn't exist",
            "Table 'shop.unmigrated_session' doesn't exist",
        ),
        ("Table 'shop.other' doesn't exist", "Table (hidden) doesn't exist"),
        # A quote inside the value does not end it early; one never closed hides the rest.
        (
            "Duplicate entry 'it's a key' for key 'PRIMARY'",
            "Duplicate entry (hidden) for key (hidden)",
        ),
        ("Incorrect string value: '\\xF0\\x9F for column", "Incorrect string value: (hidden)"),
        # Backquoted names, known or not.
        (
            "for column `shop`.`unmigrated_session`.`x`",
            "for column `shop`.`unmigrated_session`.(hidden)",
        ),
        # Unquoted, but as long as a key; a known name that long is kept.
        (
            "no such row: 0123456789abcdefXYZ near unmigrated_session",
            "no such row: (hidden) near unmigrated_session",
        ),
        ("no such table: analyzesessionsunmigrated", "no such table: analyzesessionsunmigrated"),
        (
            "server closed the connection unexpectedly\nThis probably means",
            "server closed the connection unexpectedly",
        ),
        ("", "OperationalError"),
    ],
)
def test_driver_messages_keep_nothing_that_could_be_data(message: str, shown: str) -> None:
    names = {"shop", "unmigrated_session", "analyzesessionsunmigrated"}

    assert driver_message(OperationalError(message), names) == shown


def test_a_mysql_error_is_its_message() -> None:
    error = OperationalError(1146, "Table 'shop.unmigrated_session' doesn't exist")

    assert driver_message(error, {"shop", "unmigrated_session"}) == (
        "Table 'shop.unmigrated_session' doesn't exist"
    )


SECRET_KEY = "secretkey0123456789abcdefghijklm"


def real_driver_error(tmp_path: Path) -> tuple[Exception, str]:
    """
    An error this run's database driver raises with a session key in its
    message, and what is shown of it.
    """
    if connection.vendor == "sqlite":
        # As the source read SQLite before it read text leniently.
        database = sqlite3.connect(tmp_path / "plain.sqlite3")
        database.execute("CREATE TABLE s (session_data text)")
        data = (SECRET_KEY.encode() + b"\xff").hex()
        database.execute(f"INSERT INTO s VALUES (CAST(X'{data}' AS TEXT))")
        try:
            database.execute("SELECT * FROM s").fetchall()
        except sqlite3.OperationalError as error:
            return error, "Could not decode to UTF-8 column 'session_data' with text (hidden)"
        finally:
            database.close()
    if connection.vendor == "postgresql":
        try:
            with transaction.atomic():
                raw_sql("SELECT %s::integer", [SECRET_KEY])
        except DatabaseError as error:
            return error, "invalid input syntax for type integer: (hidden)"
    try:
        raw_sql("CREATE TEMPORARY TABLE s (k varchar(40) PRIMARY KEY)")
        raw_sql("INSERT INTO s VALUES (%s), (%s)", [SECRET_KEY, SECRET_KEY])
    except DatabaseError as error:
        return error, "Duplicate entry (hidden) for key (hidden)"
    raise AssertionError("No error.")


def test_a_real_driver_error_loses_the_key_it_quoted(tmp_path: Path) -> None:
    error, shown = real_driver_error(tmp_path)

    assert SECRET_KEY in str(error)
    assert driver_message(error, DatabaseSource(Session, using="default")._names()) == shown
