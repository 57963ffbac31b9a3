from __future__ import annotations

import math
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from analyze_sessions.decoding import BAD_PAYLOAD, BAD_SIGNATURE, DecodedSession
from analyze_sessions.owners import Owner, Owners
from analyze_sessions.report import OwnerLine, Report
from analyze_sessions.sketches import UserStats
from analyze_sessions.stats import (
    OTHER_KEYS,
    KeyStats,
    LargeSession,
    SizeDistribution,
    Stats,
    TopSessions,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
PAST, FUTURE = NOW - timedelta(days=1), NOW + timedelta(days=1)

SESSIONS = [
    DecodedSession(
        100, 40, {"a": 10, "b": 25}, expires_at=PAST, key="k1", user_id="7", nested={"a[]": 4}
    ),
    DecodedSession(300, 70, {"a": 68, "cart_12": 1}, expires_at=FUTURE, key="k2", user_id="7"),
    DecodedSession(50, failure=BAD_SIGNATURE, expires_at=PAST, key="k3", unknown_key=True),
    DecodedSession(7, failure=BAD_PAYLOAD, key="k4"),
    DecodedSession(5000, 2, {"cart_3": 1, "cart_4": 2}, key="k5", user_id="8"),
    DecodedSession(60, failure=BAD_SIGNATURE, expires_at=FUTURE, key="k6"),
]


def stats_of(sessions: list[DecodedSession], top: int = 3, **options: Any) -> Stats:
    stats = Stats(now=NOW, top=top, **options)
    for session in sessions:
        stats.add(session)
    return stats


def test_add_counts_every_session_key_and_user() -> None:
    stats = stats_of(SESSIONS)

    assert (stats.processed, stats.stored_bytes, stats.payload_bytes) == (6, 5517, 112)
    # Keys of one pattern are one line: a session counts once for it, with
    # the bytes of all its keys that match (k5's cart_3 and cart_4: 3).
    assert stats.keys.lines == {
        "a": KeyStats(sessions=2, total_bytes=78, max_bytes=68, key="a"),
        "b": KeyStats(sessions=1, total_bytes=25, max_bytes=25, key="b"),
        "cart_*": KeyStats(sessions=2, total_bytes=1 + 1 + 2, max_bytes=3, key=None),
    }
    assert stats.nested.lines == {"a[]": KeyStats(1, 4, 4, key="a[]")}
    # Sessions k1, k2 and k5 have keys of apps not known.
    assert stats.owners == {None: 3}
    assert stats.undecodable == Counter({BAD_SIGNATURE: 2, BAD_PAYLOAD: 1})
    assert (stats.undecodable_bytes, stats.unknown_key_sessions, stats.unknown_key_bytes) == (
        117,
        1,
        50,
    )
    # Expired: past expiry, decodable or not; no expiry is never expired.
    assert (stats.expired_sessions, stats.expired_bytes) == (2, 150)
    assert stats.users.exact == {"7": UserStats(2, 400), "8": UserStats(1, 5000)}
    assert (stats.authenticated_sessions, stats.decodable) == (3, 3)
    assert (stats.over_cookie_limit, stats.over_memcached_limit) == (1, 0)
    assert stats.largest.largest_first() == [
        LargeSession(5000, "k5", None, "8", "cart_4"),
        LargeSession(300, "k2", FUTURE, "7", "a"),
        LargeSession(100, "k1", PAST, "7", "b"),
    ]


@pytest.mark.parametrize("split", range(len(SESSIONS) + 1))
def test_merged_parts_equal_the_whole(split: int) -> None:
    merged = stats_of(SESSIONS[:split])
    merged.merge(stats_of(SESSIONS[split:]))

    assert merged == stats_of(SESSIONS)


def test_merge_leaves_the_other_unchanged() -> None:
    first, second = stats_of(SESSIONS[:1]), stats_of(SESSIONS[1:2])

    first.merge(second)
    first.merge(second)

    assert second == stats_of(SESSIONS[1:2])
    assert first.keys.lines["a"] == KeyStats(sessions=3, total_bytes=146, max_bytes=68, key="a")


def test_a_pattern_of_one_key_shows_the_key_until_a_second_is_seen() -> None:
    one = stats_of([DecodedSession(10, 5, {"cart_12": 5})])
    other = stats_of([DecodedSession(10, 5, {"cart_13": 5})])

    assert one.keys.shown("cart_*") == "cart_12"
    one.merge(other)
    assert one.keys.shown("cart_*") == "cart_*"


def test_keys_with_a_token_are_never_kept_by_name() -> None:
    tokens = [f"github_oauth2_state_{n}Xq7ZkLmP2vRtY9wBcD4hJ" for n in range(3)]
    stats = stats_of([DecodedSession(100, 60, {token: 20}) for token in tokens[:1]])
    assert stats.keys.lines == {
        "github_oauth2_state_*": KeyStats(1, 20, 20, key=None),
    }
    assert stats.keys.shown("github_oauth2_state_*") == "github_oauth2_state_*"
    assert stats.largest.largest_first()[0].largest_key == "github_oauth2_state_*"

    ungrouped = stats_of([DecodedSession(100, 60, {t: 20}) for t in tokens], show_keys=True)
    assert set(ungrouped.keys.lines) == set(tokens)


def test_owners_count_sessions_once_with_the_bytes_of_their_keys() -> None:
    owners = Owners(
        [
            ("_auth_user_id", Owner("django.contrib.auth", "auth.py:1")),
            ("_auth_user_hash", Owner("django.contrib.auth", "auth.py:2")),
            ("*_state_*", Owner("social_django")),
        ]
    )
    stats = stats_of(
        [
            DecodedSession(
                100,
                60,
                {"_auth_user_id": 10, "_auth_user_hash": 4, "a_state_1": 5, "a_state_2": 6},
            ),
            DecodedSession(100, 60, {"a_state_3": 7, "other": 9}),
        ],
        owner_of=owners,
    )

    assert stats.owners == {"django.contrib.auth": 1, "social_django": 2, None: 1}
    report = Report.from_stats(stats, total_sessions=2)
    assert report.owners == (
        OwnerLine("social_django", 2, 5 + 6 + 7),
        OwnerLine("django.contrib.auth", 1, 10 + 4),
        OwnerLine(None, 1, 9),
    )
    assert stats.keys.lines["a_state_*"].owner == Owner("social_django")


def nearest_rank(sizes: list[int], percent: float) -> int:
    return sorted(sizes)[max(1, math.ceil(percent / 100 * len(sizes))) - 1]


def test_percentiles_are_exact_by_nearest_rank() -> None:
    distribution = SizeDistribution()
    for size in [69, 83, 1, 500, 70, 70, 3000, 12, 64, 65]:
        distribution.add(size)

    # Sorted: 1 12 64 65 69 70 70 83 500 3000; ranks 5, 9 and 10.
    assert [distribution.percentile(p) for p in (50, 90, 99)] == [69, 500, 3000]
    assert (distribution.maximum, distribution.count) == (3000, 10)


def test_percentiles_stay_within_one_percent_past_the_exact_limit() -> None:
    sizes = [int(random.Random(n).lognormvariate(7, 1.5)) + 1 for n in range(25_000)]
    distribution = SizeDistribution()
    for size in sizes:
        distribution.add(size)

    assert distribution.exact is None  # Sketched: memory no longer grows.
    for percent in (50, 90, 99):
        exact = nearest_rank(sizes, percent)
        assert abs(distribution.percentile(percent) - exact) <= 0.01 * exact
    assert distribution.maximum == max(sizes)


def test_a_merged_distribution_equals_one_of_every_size() -> None:
    sizes = [random.Random(n).randrange(1, 100_000) for n in range(12_000)]
    whole, first, second = SizeDistribution(), SizeDistribution(), SizeDistribution()
    for size in sizes:
        whole.add(size)
    for size in sizes[:7000]:
        first.add(size)
    for size in sizes[7000:]:
        second.add(size)

    first.merge(second)

    assert first == whole
    assert [first.percentile(p) for p in (50, 90, 99)] == [
        whole.percentile(p) for p in (50, 90, 99)
    ]


def test_histogram_in_powers_of_two() -> None:
    distribution = SizeDistribution()
    for size in [0, 1, 2, 3, 4, 69, 83, 127, 128]:
        distribution.add(size)

    assert distribution.histogram() == [
        (0, 0, 1),
        (1, 1, 1),
        (2, 3, 2),
        (4, 7, 1),
        (8, 15, 0),
        (16, 31, 0),
        (32, 63, 0),
        (64, 127, 3),
        (128, 255, 1),
    ]


def test_top_sessions_keeps_the_largest_by_size_then_key() -> None:
    top = TopSessions(2)
    for size, key in [(5, "a"), (9, "b"), (9, "a"), (1, "c"), (7, "d")]:
        top.add(LargeSession(size, key))

    assert [(s.stored_size, s.key) for s in top.largest_first()] == [(9, "b"), (9, "a")]
    assert TopSessions(0).largest_first() == []


@pytest.mark.parametrize("top", [0, 1, 2, 3])
def test_the_largest_sessions_tie_on_size_by_key(top: int) -> None:
    sizes_and_keys = [(5, "a"), (5, "c"), (9, "x"), (5, "b"), (5, "d"), (1, "z")]
    random.Random(top).shuffle(sizes_and_keys)

    stats = stats_of([DecodedSession(size, key=key) for size, key in sizes_and_keys], top=top)

    expected = sorted(sizes_and_keys, reverse=True)[:top]
    assert [(s.stored_size, s.key) for s in stats.largest.largest_first()] == expected


def test_the_lines_kept_are_bounded_and_the_rest_summed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analyze_sessions.stats.MAX_LINES", 3)
    sessions = [
        DecodedSession(100, 60, {"alpha": 1, "beta": 2}),
        DecodedSession(100, 60, {"gamma": 3, "delta": 4, "epsilon": 5}),
        DecodedSession(100, 60, {"alpha": 6, "zeta": 7}),
    ]

    stats = stats_of(sessions)

    assert stats.keys.lines == {
        "alpha": KeyStats(2, 1 + 6, 6, key="alpha"),
        "beta": KeyStats(1, 2, 2, key="beta"),
        "gamma": KeyStats(1, 3, 3, key="gamma"),
        # One session counts once for all its keys past the three lines.
        OTHER_KEYS: KeyStats(2, 4 + 5 + 7, 4 + 5, key=None),
    }
    # Merged, parts keep as many lines, and every byte.
    merged = stats_of(sessions[:1])
    merged.merge(stats_of(sessions[1:]))
    assert set(merged.keys.lines) == {"alpha", "beta", "gamma", OTHER_KEYS}
    assert sum(line.total_bytes for line in merged.keys.lines.values()) == 1 + 2 + 3 + 4 + 5 + 6 + 7


def test_long_names_are_cut_and_never_shown_whole() -> None:
    long_key = "report_" + "x" * 1000
    other_long_key = "report_" + "x" * 999 + "y"

    stats = stats_of([DecodedSession(5000, 4000, {long_key: 10, other_long_key: 20})])

    cut = f"report_{'x' * 193}\u2026"
    assert stats.keys.lines == {cut: KeyStats(1, 30, 30, key=None)}
    assert stats.keys.shown(cut) == cut
    assert stats.largest.largest_first()[0].largest_key == cut
