"""When sessions were written, and when they expire: against dates worked out by hand."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from datetime import timezone as dt_timezone
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db.models import F
from django.utils import timezone as django_timezone

from analyze_sessions.decoding import DecodedSession
from analyze_sessions.stats import Stats, from_state, to_state
from analyze_sessions.timeline import written
from tests.helpers import run_command, section, session_via_view

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)
AGE = 14 * 86400


def at(moment: datetime, size: int, age: int | None = AGE) -> DecodedSession:
    """A session last written at ``moment``, of the cookie's age unless said."""
    expires = None if moment is None else moment + timedelta(seconds=age or 0)
    return DecodedSession(size, 2, {"a": 1}, expires_at=expires, age=age)


def sessions() -> list[DecodedSession]:
    found = [at(NOW - timedelta(hours=2), 1)]  # Today, 10:00.
    found += [at(datetime(2026, 11, 20, 9, tzinfo=timezone.utc), 10) for _ in range(5)]
    for day in (18, 19, 21, 22):
        found.append(at(datetime(2026, 11, day, 23, 59, tzinfo=timezone.utc), 2))
    found.append(at(datetime(2026, 10, 5, tzinfo=timezone.utc), 100))  # Before the 30 days.
    found.append(at(datetime(2016, 1, 1, tzinfo=timezone.utc), 1000))  # Before ten years.
    # Expires in ten days, but lives a day: written after the run started.
    found.append(DecodedSession(7, 2, {"a": 1}, expires_at=NOW + 10 * DAY, age=86400))
    # An expiry set as a date, and none: they cannot be placed.
    found.append(DecodedSession(20, 2, {"a": 1}, expires_at=NOW + 3 * DAY, age=None))
    found.append(DecodedSession(30, 2, {"a": 1}, expires_at=None, age=AGE))
    return found


def test_sessions_are_placed_where_their_last_write_was() -> None:
    stats = Stats(now=NOW)
    for session in sessions():
        stats.add(session)

    found = written(stats.timeline)

    assert found is not None
    assert [day[0] for day in found.by_day] == [
        (NOW - n * DAY).date().isoformat() for n in range(29, -1, -1)
    ]
    assert {name: (count, size) for name, count, size in found.by_day if count} == {
        "2026-11-18": (1, 2),
        "2026-11-19": (1, 2),
        "2026-11-20": (5, 50),
        "2026-11-21": (1, 2),
        "2026-11-22": (1, 2),
        "2026-11-26": (1, 1),
    }
    assert found.by_month == (("2026-10", 1, 100),)
    assert found.earlier == ("2016-11", 1, 1000)
    assert found.later == (1, 7)
    assert found.unplaced == (2, 50)
    # From the first day written, the 18th, to today: 1 1 5 1 1 0 0 0 1, median 1.
    assert found.median_day == 1
    assert found.stand_out == ("2026-11-20",)
    # Expiring, two weeks after each write: within the week, the 18th's
    # (12-02 23:59, 6.5 days) and the dated one (3 days); within the month,
    # also the 19th's (7.5 days), the 20th's five (7.9 days), the 21st's,
    # the 22nd's, today's (13.9 days) and the one written after the run
    # (10 days). None within the day.
    assert found.expiring == (
        ("day", 0, 0),
        ("week", 2, 2 + 20),
        ("month", 12, 2 + 20 + 2 + 50 + 2 + 2 + 1 + 7),
    )


def test_the_timeline_of_shards_merged_is_that_of_the_whole() -> None:
    whole = Stats(now=NOW)
    parts = [Stats(now=NOW), Stats(now=NOW + timedelta(minutes=3))]
    for index, session in enumerate(sessions()):
        whole.add(session)
        parts[index % 2].add(session)
    merged = from_state(json.loads(json.dumps(to_state(parts[0]))))
    merged.merge(from_state(json.loads(json.dumps(to_state(parts[1])))))

    assert written(merged.timeline) == written(whole.timeline)


@pytest.mark.django_db
def test_a_day_of_bots_stands_out_of_a_real_store() -> None:
    # Sessions made through the site's own views, then dated as if written
    # on each of the last ten days: three a day, and thirty on one day.
    written_on: dict[str, int] = {}
    today = django_timezone.now()
    for days_ago in range(10):
        for n in range(30 if days_ago == 3 else 3):
            key = session_via_view(visit=str(n))
            Session.objects.filter(session_key=key).update(
                expire_date=F("expire_date") - timedelta(days=days_ago)
            )
            day = (today - timedelta(days=days_ago)).astimezone(dt_timezone.utc).date()
            written_on[day.isoformat()] = written_on.get(day.isoformat(), 0) + 1

    out, err, returncode = run_command()
    document = json.loads(run_command("--format=json")[0])

    assert (err, returncode) == ("", 0)
    by_day = {row["date"]: row["sessions"] for row in document["written"]["by_day"]}
    assert {day: count for day, count in by_day.items() if count} == written_on
    spike = (today - timedelta(days=3)).astimezone(dt_timezone.utc).date().isoformat()
    assert document["written"]["median_day_sessions"] == 3
    assert document["written"]["stand_out"] == [spike]
    lines = section(out, "Written")
    assert f"    {spike}: 30 sessions, " in "\n".join(lines)
    assert [line for line in lines if line.endswith("(stands out)")] == [
        f"    {spike}: 30 sessions, {stored(spike, document)} bytes (stands out)"
    ]
    assert lines[-2].startswith(
        "Standing out: 1 of them, with more than 3 times the median day's 3 sessions"
    )


def stored(day: str, document: dict[str, Any]) -> int:
    """The stored bytes of the sessions written on ``day``, as the JSON report says."""
    return int(
        next(row["stored_bytes"] for row in document["written"]["by_day"] if row["date"] == day)
    )


def test_shards_that_start_on_different_days_show_every_day() -> None:
    # One shard's run starts before midnight, the other's after.
    first, second = Stats(now=NOW.replace(hour=23, minute=59)), Stats(now=NOW + timedelta(hours=13))
    first.add(at(NOW - DAY, 5))
    second.add(at(NOW + timedelta(hours=12, minutes=30), 7))  # The second day, 00:30.
    merged = from_state(json.loads(json.dumps(to_state(first))))
    merged.merge(from_state(json.loads(json.dumps(to_state(second)))))
    found = written(merged.timeline)

    assert found is not None
    assert {day: count for day, count, _ in found.by_day if count} == {
        "2026-11-25": 1,
        "2026-11-27": 1,
    }
    assert found.by_day[-1][0] == "2026-11-27"


@pytest.mark.django_db
def test_an_age_no_calendar_spans_is_not_placed() -> None:
    # Django refuses to save these; a forged row holds them all the same.
    for index, expiry in enumerate((10**400, -(10**30))):
        data = SessionStore().encode({"_session_expiry": expiry, "a": 1})
        expires = django_timezone.now()
        Session.objects.create(session_key=f"{index:032d}", session_data=data, expire_date=expires)
    data = SessionStore().encode({"_session_expiry": True, "a": 1})  # One second, to Django.
    Session.objects.create(
        session_key="t" * 32, session_data=data, expire_date=django_timezone.now() + DAY
    )

    document = json.loads(run_command("--format=json")[0])

    assert document["written"]["not_placed"]["sessions"] == 2
    assert document["written"]["after_run_started"]["sessions"] == 1
