"""
When the sessions were written, and when they expire: whether the store
is growing, and since when, from one run.

A session's last write is its expiry less its age: the session's own age
where it set one in seconds (``_session_expiry``), else the cookie's
(``SESSION_COOKIE_AGE``), as Django sets the expiry at each save. A
session that set its expiry as a date, or whose data cannot be read, or
that has no expiry, cannot be placed.

Written days are kept one by one for the last ``DAYS_KEPT`` days, then by
month for ``MONTHS_KEPT`` months, the rest together: whatever expiries a
store holds (a forged row may say the year 9999), the counts are bounded.
Days are UTC days, counted from the Unix epoch, so that the timelines of
shards run apart add up.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

DAY = 86_400
# The days shown one by one, and the days kept so (a little more: the
# shards of a split may not all start on the same day).
DAYS_SHOWN = 30
DAYS_KEPT = 32
MONTHS_KEPT = 120
# Expiring within: a day, a week, a month (cumulative).
EXPIRING = (("day", 1), ("week", 7), ("month", 30))
# A day stands out with more than this many times the median day's sessions.
STANDS_OUT = 3
_EPOCH = date(1970, 1, 1).toordinal()


def _pair() -> list[int]:
    return [0, 0]


@dataclass
class Timeline:
    """Sessions and stored bytes by when they were last written, and when they expire."""

    now: float | None = None  # The run's start, as a Unix time.
    days: dict[int, list[int]] = field(default_factory=dict)  # Epoch day: [sessions, bytes].
    months: dict[int, list[int]] = field(default_factory=dict)  # Year * 12 + month - 1.
    earlier: list[int] = field(default_factory=_pair)  # Before MONTHS_KEPT months.
    later: list[int] = field(default_factory=_pair)  # After the run started.
    unplaced: list[int] = field(default_factory=_pair)
    expiring: list[list[int]] = field(default_factory=lambda: [_pair() for _ in EXPIRING])

    def __post_init__(self) -> None:
        # What each session is compared with, worked out once.
        now = self.now or 0.0
        self._ends = [now + days * DAY for _, days in EXPIRING]
        self._today = int(now // DAY)
        self._first_month = (_month(self._today) or 0) - MONTHS_KEPT

    def add(self, expires_at: datetime | None, age: int | None, size: int) -> None:
        # Called once a session: kept plain and inlined.
        now = self.now
        if now is None:
            return
        if expires_at is None:
            _count(self.unplaced, size)
            return
        expires = expires_at.timestamp()
        ends = self._ends
        if now < expires <= ends[2]:
            expiring = self.expiring
            if expires <= ends[1]:
                if expires <= ends[0]:
                    _count(expiring[0], size)
                _count(expiring[1], size)
            _count(expiring[2], size)
        if age is None:
            _count(self.unplaced, size)
            return
        written = expires - age
        if written > now:
            _count(self.later, size)
            return
        day = int(written // DAY)
        if day > self._today - DAYS_KEPT:
            found = self.days.get(day)
            if found is None:
                self.days[day] = [1, size]
            else:
                found[0] += 1
                found[1] += size
            return
        month = _month(day)
        if month is None or month < self._first_month:
            _count(self.earlier, size)
        else:
            _count(self.months.setdefault(month, [0, 0]), size)

    def merge(self, other: Timeline) -> None:
        # Shards' runs start at different times, maybe on different days:
        # the timeline of them all runs to the last of them.
        if other.now is not None and (self.now is None or other.now > self.now):
            self.now = other.now
            self.__post_init__()
        for mine, theirs in ((self.days, other.days), (self.months, other.months)):
            for when, (sessions, stored) in theirs.items():
                _count(mine.setdefault(when, [0, 0]), stored, sessions)
        for mine_pair, their_pair in (
            (self.earlier, other.earlier),
            (self.later, other.later),
            (self.unplaced, other.unplaced),
            *zip(self.expiring, other.expiring, strict=True),
        ):
            _count(mine_pair, their_pair[1], their_pair[0])

    def placed(self) -> int:
        """How many sessions it counts, each once, placed or not."""
        pairs = [*self.days.values(), *self.months.values(), self.earlier, self.later]
        return sum(pair[0] for pair in pairs) + self.unplaced[0]

    def holds_together(self, processed: int) -> bool:
        """Whether it counts ``processed`` sessions, each once, as a run's timeline does."""
        expiring = [pair[0] for pair in self.expiring]
        return (
            self.placed() == processed
            and expiring == sorted(expiring)
            and expiring[-1] <= processed
        )

    def state(self) -> dict[str, Any]:
        return {
            "days": [[day, *pair] for day, pair in sorted(self.days.items())],
            "months": [[month, *pair] for month, pair in sorted(self.months.items())],
            "earlier": list(self.earlier),
            "later": list(self.later),
            "unplaced": list(self.unplaced),
            "expiring": [list(pair) for pair in self.expiring],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], now: float | None) -> Timeline:
        timeline = cls(now=now)
        timeline.days = {day: [sessions, stored] for day, sessions, stored in state["days"]}
        timeline.months = {month: [sessions, stored] for month, sessions, stored in state["months"]}
        timeline.earlier = list(state["earlier"])
        timeline.later = list(state["later"])
        timeline.unplaced = list(state["unplaced"])
        timeline.expiring = [list(pair) for pair in state["expiring"]]
        return timeline


@dataclass(frozen=True)
class Written:
    """What the report says of when sessions were written, and when they expire."""

    by_day: tuple[tuple[str, int, int], ...]  # The last DAYS_SHOWN days, oldest first.
    by_month: tuple[tuple[str, int, int], ...]  # Before, oldest first.
    earlier: tuple[str, int, int]  # Before this month: (month, sessions, bytes).
    later: tuple[int, int]
    unplaced: tuple[int, int]
    median_day: float | None  # Over the days shown that have any.
    stand_out: tuple[str, ...]
    expiring: tuple[tuple[str, int, int], ...]  # (within, sessions, bytes).

    @property
    def placed(self) -> int:
        return (
            sum(day[1] for day in self.by_day)
            + sum(month[1] for month in self.by_month)
            + self.earlier[1]
        )


def written(timeline: Timeline) -> Written | None:
    """What ``timeline`` says, as of its run's start; None without one."""
    if timeline.now is None:
        return None
    today = int(timeline.now // DAY)
    shown = range(today - DAYS_SHOWN + 1, today + 1)
    this_month, first_month = _month(today) or 0, timeline._first_month
    earlier, later = list(timeline.earlier), list(timeline.later)
    # Each day where it falls as of this run: shown, in its month, or (in a
    # merged or forged state) before or after.
    months: dict[int, list[int]] = {}
    for day, (sessions, stored) in timeline.days.items():
        if day in shown:
            continue
        month = None if day > today else _month(day)
        if day > today:
            _count(later, stored, sessions)
        elif month is None:
            _count(earlier, stored, sessions)
        else:
            _count(months.setdefault(month, [0, 0]), stored, sessions)
    for month, (sessions, stored) in timeline.months.items():
        _count(months.setdefault(month, [0, 0]), stored, sessions)
    by_month = []
    for month, (sessions, stored) in sorted(months.items()):
        if month < first_month:
            _count(earlier, stored, sessions)
        elif month > this_month:
            _count(later, stored, sessions)
        else:
            by_month.append((_month_name(month), sessions, stored))
    by_day = tuple((_day_name(day), *timeline.days.get(day, (0, 0))) for day in shown)
    # The median of the days that have any: in a store of sparse days, the
    # median of them all is none, and every day or none would stand out.
    written_days = [sessions for _, sessions, _ in by_day if sessions]
    median = float(statistics.median(written_days)) if written_days else None
    stand_out = tuple(
        name
        for name, sessions, _ in by_day
        if median is not None and sessions > STANDS_OUT * median
    )
    return Written(
        by_day=by_day,
        by_month=tuple(by_month),
        earlier=(_month_name(first_month), earlier[0], earlier[1]),
        later=(later[0], later[1]),
        unplaced=(timeline.unplaced[0], timeline.unplaced[1]),
        median_day=median,
        stand_out=stand_out,
        expiring=tuple(
            (name, pair[0], pair[1])
            for (name, _), pair in zip(EXPIRING, timeline.expiring, strict=True)
        ),
    )


def _count(pair: list[int], size: int, sessions: int = 1) -> None:
    pair[0] += sessions
    pair[1] += size


def _month(day: int) -> int | None:
    """The month of an epoch day, as year * 12 + month - 1; None off the calendar."""
    try:
        moment = date.fromordinal(day + _EPOCH)
    except (ValueError, OverflowError):
        return None
    return moment.year * 12 + moment.month - 1


def _day_name(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def _month_name(month: int) -> str:
    return f"{month // 12:04d}-{month % 12 + 1:02d}"
