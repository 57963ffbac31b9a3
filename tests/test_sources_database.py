from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.sessions.backends import cache, db, file
from django.contrib.sessions.models import Session
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analyze_sessions.sources import UnsupportedEngine, session_store_class
from analyze_sessions.sources.database import MAX_KEYS_PER_QUERY, DatabaseSource, session_model
from tests.engines import plain, user_sessions
from tests.helpers import corrupt_session, session_of_size, session_via_view, writes
from tests.models import ExtendedSession, KeyedSession, PlainSession, UserSession

pytestmark = pytest.mark.django_db


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
