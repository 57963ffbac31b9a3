from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema

from analyze_sessions.decoding import BAD_PAYLOAD, BAD_SIGNATURE, DecodedSession
from analyze_sessions.owners import Owner, Owners
from analyze_sessions.report import (
    MAX_KEY_LINES,
    KeyLine,
    OwnerLine,
    Report,
    mean,
    render_csv,
    render_json,
    render_text,
)
from analyze_sessions.stats import Stats
from tests.helpers import section

SCHEMA = Path(__file__).parent.parent / "analyze_sessions" / "report.schema.json"


def text(report: Report) -> str:
    return "".join(line + "\n" for line in render_text(report))


def test_mean_rounds_half_up_to_two_decimals() -> None:
    assert mean(1, 8) == Decimal("0.13")  # 0.125
    assert mean(5, 3) == Decimal("1.67")
    assert mean(33771, 2) == Decimal("16885.50")
    assert str(mean(0, 0)) == "0.00"


def test_from_stats_sorts_keys_by_total_bytes_then_name() -> None:
    stats = Stats()
    stats.add(DecodedSession(stored_size=10, entries={"b": 5, "a": 5, "c": 9, "d": 1}))
    stats.add(DecodedSession(stored_size=10, entries={"d": 3}))
    stats.add(DecodedSession(stored_size=4, failure=BAD_PAYLOAD))
    stats.add(DecodedSession(stored_size=6, failure=BAD_SIGNATURE))

    report = Report.from_stats(stats, total_sessions=9)

    assert report.keys == (
        KeyLine("c", 1, 9, 9),
        KeyLine("a", 1, 5, 5),
        KeyLine("b", 1, 5, 5),
        KeyLine("d", 2, 4, 3),
    )
    assert report.owners == (OwnerLine(None, 2, 5 + 5 + 9 + 1 + 3),)
    # Reasons in a fixed order, whatever order they were met in.
    assert report.undecodable == ((BAD_SIGNATURE, 1), (BAD_PAYLOAD, 1))
    assert report.undecodable_sessions == 2
    assert report.mean_stored_size == Decimal("7.50")


def test_text_report_of_the_2013_readme_example() -> None:
    report = Report(
        total_sessions=5125,
        processed=2,
        stored_bytes=33771,
        keys=(
            KeyLine("foo", 2, 31446, 16000),
            KeyLine("bar", 2, 1237, 700),
            KeyLine("baz", 2, 423, 212),
        ),
        undecodable=(),
        undecodable_bytes=0,
    )

    assert text(report).split("\n\n")[0] == (
        "Processed 2 sessions out of 5125 total sessions\n"
        "Average size was 16885.50 bytes\n"
        "Saw the following keys:\n"
        "    foo (2 times, avg. size 15723.00 bytes), max 16000 bytes, total 31446 bytes, "
        "app unknown\n"
        "    bar (2 times, avg. size 618.50 bytes), max 700 bytes, total 1237 bytes, "
        "app unknown\n"
        "    baz (2 times, avg. size 211.50 bytes), max 212 bytes, total 423 bytes, "
        "app unknown\n"
        "Key sizes are payload bytes, before compression; session sizes are stored bytes, "
        "so a key's max can exceed the largest session."
    )


NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
SESSIONS = [
    DecodedSession(
        100,
        40,
        {"a": 10, "b": 25},
        expires_at=NOW - timedelta(days=1),
        key="abcdefghij1",
        user_id="7",
        age=14 * 86400,
    ),
    DecodedSession(
        300,
        70,
        {"a": 68, "cart_12": 1},
        expires_at=NOW + timedelta(days=1),
        key="zyxwvu98765",
        user_id="7",
        age=14 * 86400,
    ),
    DecodedSession(
        50,
        failure=BAD_SIGNATURE,
        expires_at=NOW - timedelta(days=1),
        key="qqqqqqqqq",
        unknown_key=True,
    ),
    DecodedSession(5000, 2, {"cart_3": 1, "cart_4": 2}, key="short", user_id="8"),
]


OWNERS = Owners([("a", Owner("shop", "shop/views.py:12")), ("cart_*", Owner("shop.cart"))])


def full_report(**context: Any) -> Report:
    stats = Stats(now=NOW, top=3, owner_of=OWNERS)
    for session in SESSIONS:
        stats.add(session)
    return Report.from_stats(
        stats,
        total_sessions=10,
        engine="django.contrib.sessions.backends.db",
        filters={"bigger_than": None, "sample": None, "limit": None},
        disk={"table": "django_session", "total_bytes": 65536, "index_bytes": 16384},
        **context,
    )


# Worked by hand: stored 100 + 300 + 50 + 5000 = 5450, payload 40 + 70 + 2
# = 112, decodable stored 5400 = 4821.4% of it. Sorted sizes 50 100 300 5000:
# nearest ranks 2, 4, 4. Expired: 100 + 50 of 5450 bytes, 2.8%. Written:
# expiry less two weeks, 2026-11-11 and 2026-11-13; the undecodable one and
# the one with no expiry cannot be placed. Expiring: the one a day ahead.
FULL_TEXT = """\
Processed 4 sessions out of 10 total sessions
Average size was 1362.50 bytes
Saw the following keys:
    a (2 times, avg. size 39.00 bytes), max 68 bytes, total 78 bytes, by shop (shop/views.py:12)
    b (1 times, avg. size 25.00 bytes), max 25 bytes, total 25 bytes, app unknown
    cart_* (2 times, avg. size 2.00 bytes), max 3 bytes, total 4 bytes, by shop.cart
Key sizes are payload bytes, before compression; session sizes are stored bytes, so a key's \
max can exceed the largest session.

Totals:
    Stored: 5450 bytes in all, 1362.50 bytes a session
    Payload: 112 bytes serialized, before compression and signing
    Compression: decodable sessions are stored in 4821.4% of their payload's size

By app:
    shop: 2 sessions, 78 bytes, 69.6% of the payload
    unknown apps: 1 session, 25 bytes, 22.3% of the payload
    shop.cart: 2 sessions, 4 bytes, 3.6% of the payload
    Apps known for 73.2% of the payload

Distribution of stored sizes:
    p50 100 bytes, p90 5000 bytes, p99 5000 bytes, max 5000 bytes
        32-63 bytes        1 ##############################
       64-127 bytes        1 ##############################
      128-255 bytes        0
      256-511 bytes        1 ##############################
     512-1023 bytes        0
    1024-2047 bytes        0
    2048-4095 bytes        0
    4096-8191 bytes        1 ##############################

Largest sessions:
    5000 bytes: short, no expiry, user 8, largest key cart_4
     300 bytes: zyxwvu\u2026, expires 2026-11-27 12:00 UTC, user 7, largest key a
     100 bytes: abcdef\u2026, expired 2026-11-25 12:00 UTC, user 7, largest key b

Expired:
    2 sessions (50.0%), 150 bytes (2.8% of stored): past their expiry, still stored; \
clearsessions would delete them

Written:
    By day, the last 30 days (UTC), for each day that has any:
        2026-11-11: 1 session, 100 bytes
        2026-11-13: 1 session, 300 bytes
    Not placed: 2 sessions, 5050 bytes: no expiry, an expiry set as a date, or data that \
cannot be read
    Expiring: 1 session, 300 bytes in the next day; 1 session, 300 bytes in the next week; \
1 session, 300 bytes in the next month

Undecodable:
    1 session, 50 bytes (bad signature: 1): no request can read them, and Django reads each \
as empty
    1 of them, 50 bytes, is signed with a key no longer configured: dead weight until it \
expires

Users:
    3 sessions logged in (100.0%), 0 anonymous; 2 distinct users
    Top users by stored size:
        user 8: 1 session, 5000 bytes
        user 7: 2 sessions, 400 bytes

On disk:
    Table django_session: 65536 bytes with its indexes, of which indexes 16384 bytes; stored \
sizes add up to 5450 bytes

Limits:
    1 session over 4 KiB, the most a browser keeps in a cookie: too big for signed-cookie \
sessions
"""


def test_whole_text_report() -> None:
    assert text(full_report()) == FULL_TEXT


def test_human_sizes_and_whole_keys() -> None:
    report = full_report()
    lines = "".join(f"{line}\n" for line in render_text(report, human=True, show_keys=True))

    # The classic lines keep bytes.
    assert lines.split("\n\n")[0] == FULL_TEXT.split("\n\n")[0]
    assert section(lines, "Totals")[0] == "Stored: 5.3 KiB in all, 1.3 KiB a session"
    assert section(lines, "Largest sessions")[1] == (
        "300 bytes: zyxwvu98765, expires 2026-11-27 12:00 UTC, user 7, largest key a"
    )
    # Every size after them, the distribution's ranges and percentiles too.
    assert section(lines, "Distribution of stored sizes") == [
        "p50 100 bytes, p90 4.9 KiB, p99 4.9 KiB, max 4.9 KiB",
        "   32 bytes-63 bytes        1 ##############################",
        "  64 bytes-127 bytes        1 ##############################",
        " 128 bytes-255 bytes        0",
        " 256 bytes-511 bytes        1 ##############################",
        "512 bytes-1023 bytes        0",
        "     1.0 KiB-2.0 KiB        0",
        "     2.0 KiB-4.0 KiB        0",
        "     4.0 KiB-8.0 KiB        1 ##############################",
    ]


def test_scope_of_a_sample_a_limit_and_an_interruption() -> None:
    report = full_report(partial=True)
    report = replace(report, filters={"sample": 0.25, "limit": 4})

    assert section(text(report), "Scope") == [
        "Only the sessions chosen by --sample 0.25 (by key: the numbers describe the sample), "
        "--limit 4 (at most 4 sessions processed)",
        "Partial: interrupted after 4 sessions",
    ]


def test_scope_names_every_option_that_narrowed_the_sessions() -> None:
    filters = {
        "bigger_than": 15360,
        "ids_from": "keys\n.txt",
        "sample": 1.0,  # All of them: no narrowing.
        "limit": None,
        "shard": "1/3",
        "database": "replica",
        "model": "shop.Session",
        "depth": 2,  # Not a narrowing.
    }
    report = replace(full_report(), filters=filters)

    assert section(text(report), "Scope") == [
        "Only the sessions chosen by --bigger-than 15360 bytes (15.0 KiB), "
        "--ids-from keys\\n.txt, --shard 1/3 (the total is the shard's), "
        "--database replica, --model shop.Session"
    ]
    # Bytes alone where they say it all; the default database is no narrowing.
    small = replace(full_report(), filters={"bigger_than": 512, "database": "default"})
    assert section(text(small), "Scope") == ["Only the sessions chosen by --bigger-than 512 bytes"]
    assert "Scope:" not in text(replace(full_report(), filters={"database": "default"}))


def test_nested_and_memcached_sections() -> None:
    stats = Stats(now=NOW)
    stats.add(DecodedSession(2_000_000, 10, {"cart": 9}, nested={"cart[]": 7}))
    report = Report.from_stats(stats, total_sessions=1, depth=1, memcached=True)

    assert section(text(report), "Nested (depth 1)") == [
        "cart[] (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown"
    ]
    assert section(text(report), "Limits") == [
        "1 session over 1 MiB, memcached's default largest item: the cache will not keep them",
        "1 session over 4 KiB, the most a browser keeps in a cookie: too big for signed-cookie "
        "sessions",
    ]


def test_json_report_matches_its_schema() -> None:
    document = json.loads("".join(render_json(full_report())))

    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert document["sessions"] == {
        "total": 10,
        "processed": 4,
        "undecodable": 1,
        "not_found": None,
        "unreadable": {},
        "gone": 0,
    }
    assert document["stored_bytes"] == {
        "total": 5450,
        "mean": 1362.5,
        "p50": 100,
        "p90": 5000,
        "p99": 5000,
        "max": 5000,
    }
    assert document["expired"] == {"sessions": 2, "stored_bytes": 150, "unreadable_expiry": 0}
    assert document["undecodable"]["reasons"] == {"bad signature": 1}
    assert document["users"]["top"] == [
        {"user_id": "8", "sessions": 1, "stored_bytes": 5000},
        {"user_id": "7", "sessions": 2, "stored_bytes": 400},
    ]
    assert document["keys"][0] == {
        "key": "a",
        "sessions": 2,
        "total_bytes": 78,
        "mean_bytes": 39.0,
        "max_bytes": 68,
        "share": 0.6964,  # 78 / 112
        "grouped": False,
        "owner": "shop",
        "where": "shop/views.py:12",
    }
    assert document["keys"][2] == {
        "key": "cart_*",
        "sessions": 2,
        "total_bytes": 4,
        "mean_bytes": 2.0,
        "max_bytes": 3,
        "share": 0.0357,
        "grouped": True,
        "owner": "shop.cart",
        "where": None,
    }
    assert document["owners"] == [
        {"owner": "shop", "sessions": 2, "total_bytes": 78, "share": 0.6964},
        {"owner": None, "sessions": 1, "total_bytes": 25, "share": 0.2232},
        {"owner": "shop.cart", "sessions": 2, "total_bytes": 4, "share": 0.0357},
    ]
    assert [s["expired"] for s in document["largest_sessions"]] == [False, False, True]
    assert [s["key_prefix"] for s in document["largest_sessions"]] == ["short", "zyxwvu", "abcdef"]
    assert document["largest_sessions"][1]["expire_date"] == "2026-11-27T12:00:00+00:00"
    assert document["disk"] == {
        "table": "django_session",
        "total_bytes": 65536,
        "index_bytes": 16384,
    }


def test_csv_report_has_a_row_per_key() -> None:
    assert list(render_csv(full_report())) == [
        "key,sessions,total_bytes,mean_bytes,max_bytes,share,owner,where",
        "a,2,78,39.00,68,0.6964,shop,shop/views.py:12",
        "b,1,25,25.00,25,0.2232,,",
        "cart_*,2,4,2.00,3,0.0357,shop.cart,",
    ]


def test_the_key_list_is_bounded_and_sums_the_rest() -> None:
    stats = Stats(now=NOW)
    stats.add(
        DecodedSession(
            5000,
            4000,
            {f"key_{chr(97 + n // 26)}{chr(97 + n % 26)}": n + 1 for n in range(MAX_KEY_LINES + 5)},
        )
    )
    report = Report.from_stats(stats, total_sessions=1)
    lines = text(report).split("\n")

    key_lines = [line for line in lines if line.startswith("    key_")]
    assert len(key_lines) == MAX_KEY_LINES
    # The five smallest keys (1 to 5 bytes) are summed in one line.
    assert "    (5 more keys and patterns, 15 bytes in all: --format json lists them all)" in lines
    assert len(json.loads("".join(render_json(report)))["keys"]) == MAX_KEY_LINES + 5


def test_no_key_heading_when_no_session_could_be_decoded() -> None:
    stats = Stats(now=NOW)
    stats.add(DecodedSession(50, failure=BAD_SIGNATURE))
    lines = text(Report.from_stats(stats, total_sessions=1)).split("\n")

    assert lines[:3] == [
        "Processed 1 sessions out of 1 total sessions",
        "Average size was 50.00 bytes",
        "",
    ]
    assert "Saw the following keys:" not in lines
