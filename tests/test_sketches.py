"""Users past the exact bound: the sketches' error bounds, checked against exact counts."""

from __future__ import annotations

import random
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from analyze_sessions import sketches
from analyze_sessions.sketches import DISTINCT_ERROR, EXACT_USERS, HEAVY_USERS, Users, UserStats
from tests.helpers import run_command, section

# Three relative standard errors: what the report says (two, 95 times in
# 100) would fail one check in twenty by chance.
TOLERANCE = 1.5 * DISTINCT_ERROR


def users_of(sessions: list[tuple[str, int]]) -> Users:
    users = Users()
    for user_id, size in sessions:
        users.add(user_id, size)
    return users


def test_users_are_exact_up_to_the_bound() -> None:
    exact = users_of([(str(n), 10) for n in range(EXACT_USERS)] * 2)

    assert not exact.estimated
    assert exact.distinct() == EXACT_USERS
    assert exact.top(1) == [("0", UserStats(2, 20))]
    assert users_of([(str(n), 10) for n in range(EXACT_USERS + 1)]).estimated


@pytest.mark.parametrize("count", [12_000, 60_000, 250_000])
def test_distinct_users_are_estimated_within_the_documented_error(count: int) -> None:
    users = users_of([(f"user-{n}", 100) for n in range(count)])

    assert users.estimated
    assert abs(users.distinct() - count) <= TOLERANCE * count


def test_the_heaviest_users_are_found_with_bytes_within_their_error() -> None:
    rng = random.Random(11)
    sessions = [(f"light-{rng.randrange(40_000)}", rng.randint(50, 500)) for _ in range(80_000)]
    heavy = {f"heavy-{n}": 0 for n in range(10)}
    for _ in range(400):
        user_id = rng.choice(list(heavy))
        size = rng.randint(20_000, 60_000)
        heavy[user_id] += size
        sessions.insert(rng.randrange(len(sessions)), (user_id, size))
    total = sum(size for _, size in sessions)

    users = users_of(sessions)
    top = dict(users.top(10))

    assert users.estimated
    assert set(top) == set(heavy)
    for user_id, found in top.items():
        assert heavy[user_id] <= found.stored_bytes <= heavy[user_id] + found.error
        assert found.error <= total / HEAVY_USERS


@pytest.mark.parametrize("count", [41_000, 45_000])
def test_no_bias_where_linear_counting_would_hand_over(count: int) -> None:
    for seed in range(3):
        users = users_of([(f"{seed}-user-{n}", 100) for n in range(count)])
        assert abs(users.distinct() - count) <= TOLERANCE * count


def test_merged_summaries_keep_their_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Summaries of 3 users, of streams split at random into shards, merged:
    # every user with more than a third of the bytes kept, and every count
    # at most its error over the truth.
    monkeypatch.setattr(sketches, "HEAVY_USERS", 3)
    monkeypatch.setattr(sketches, "EXACT_USERS", 0)
    rng = random.Random(5)
    for _ in range(2_000):
        sessions = [(rng.choice("abcdefgh"), rng.randint(1, 9)) for _ in range(rng.randint(1, 30))]
        truth: dict[str, int] = {}
        for user_id, size in sessions:
            truth[user_id] = truth.get(user_id, 0) + size
        shards = [users_of(sessions[shard::4]) for shard in range(4)]
        merged = shards[0]
        for shard in shards[1:]:
            merged.merge(shard)

        kept = dict(merged.top(3))
        for user_id, found in kept.items():
            assert found.stored_bytes - found.error <= truth[user_id] <= found.stored_bytes
        total = sum(truth.values())
        assert {user for user, size in truth.items() if size > total / 3} <= set(kept)


def test_merged_sketches_estimate_the_union() -> None:
    first = users_of([(f"user-{n}", 100) for n in range(0, 30_000)])
    second = users_of([(f"user-{n}", 100) for n in range(20_000, 50_000)])
    small = users_of([(f"user-{n}", 100) for n in range(49_990, 50_010)])

    first.merge(second)
    first.merge(small)

    assert abs(first.distinct() - 50_010) <= TOLERANCE * 50_010
    assert first.top(1)[0][1].stored_bytes >= 200


def test_a_state_gives_the_same_users_again() -> None:
    for users in (
        users_of([("7", 100), ("8", 50), ("7", 1)]),
        users_of([(f"user-{n}", n % 977) for n in range(30_000)]),
    ):
        again = Users.from_state(users.state())
        assert again == users
        assert again.distinct() == users.distinct()
        assert again.top(5) == users.top(5)


@pytest.mark.parametrize(
    "forged",
    [
        {"registers": [0] * 10, "heavy": {}},
        {"registers": [99] * sketches.REGISTERS, "heavy": {}},
        {"exact": {str(n): [1, 1, 0] for n in range(EXACT_USERS + 1)}},
    ],
)
def test_a_state_no_run_could_write_is_refused(forged: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Users.from_state(forged)


@pytest.mark.django_db(transaction=True)
def test_the_report_says_when_users_are_estimated(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(8):
        client = Client()
        client.force_login(User.objects.create_user(f"user{n}"))
    monkeypatch.setattr(sketches, "EXACT_USERS", 5)

    users = section(run_command()[0], "Users")

    # Eight users, counted by a HyperLogLog: exact while most registers are empty.
    assert users[0] == (
        "8 sessions logged in (100.0%), 0 anonymous; about 8 distinct users (estimated, "
        f"within {DISTINCT_ERROR:.1%} 95 times in 100)"
    )
    assert users[1] == "Top users by stored size (estimated: each has stored bytes in the range):"
    # Fewer users than the summary keeps: each exact, an error of 0.
    assert len(users[2:]) == 8
    for line in users[2:]:
        found = re.fullmatch(r"user \d+: (\d+) bytes to (\d+) bytes", line.strip())
        assert found is not None, line
        assert found[1] == found[2]
