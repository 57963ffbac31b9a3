from __future__ import annotations

from collections import Counter

from analyze_sessions.decoding import BAD_PAYLOAD, BAD_SIGNATURE, DecodedSession
from analyze_sessions.stats import KeyStats, Stats

SESSIONS = [
    DecodedSession(stored_size=100, payload_size=40, entries={"a": 10, "b": 25}),
    DecodedSession(stored_size=300, payload_size=70, entries={"a": 68}),
    DecodedSession(stored_size=50, failure=BAD_SIGNATURE),
    DecodedSession(stored_size=7, failure=BAD_PAYLOAD),
    DecodedSession(stored_size=20, payload_size=2),
    DecodedSession(stored_size=60, failure=BAD_SIGNATURE),
]


def stats_of(sessions: list[DecodedSession]) -> Stats:
    stats = Stats()
    for session in sessions:
        stats.add(session)
    return stats


def test_add_counts_every_session_and_key() -> None:
    assert stats_of(SESSIONS) == Stats(
        processed=6,
        stored_bytes=100 + 300 + 50 + 7 + 20 + 60,
        payload_bytes=40 + 70 + 2,
        keys={
            "a": KeyStats(sessions=2, total_bytes=78, max_bytes=68),
            "b": KeyStats(sessions=1, total_bytes=25, max_bytes=25),
        },
        undecodable=Counter({BAD_SIGNATURE: 2, BAD_PAYLOAD: 1}),
        undecodable_bytes=50 + 7 + 60,
    )


def test_merged_parts_equal_the_whole() -> None:
    for split in range(len(SESSIONS) + 1):
        merged = stats_of(SESSIONS[:split])
        merged.merge(stats_of(SESSIONS[split:]))
        assert merged == stats_of(SESSIONS)


def test_merge_leaves_the_other_unchanged() -> None:
    first, second = stats_of(SESSIONS[:1]), stats_of(SESSIONS[1:2])

    first.merge(second)
    first.merge(second)

    assert second == stats_of(SESSIONS[1:2])
    assert first.keys["a"] == KeyStats(sessions=3, total_bytes=146, max_bytes=68)
