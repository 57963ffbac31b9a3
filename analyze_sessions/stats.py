"""Accumulators for decoded sessions, mergeable so batches can be counted apart."""

from __future__ import annotations

import heapq
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from analyze_sessions.owners import NO_OWNERS, Owner, Owners
from analyze_sessions.patterns import key_pattern
from analyze_sessions.shown import masked
from analyze_sessions.sketches import Users
from analyze_sessions.timeline import Timeline

if TYPE_CHECKING:  # Decoding needs the sources, and they need the shards, which need these.
    from analyze_sessions.decoding import DecodedSession

# Limits that sessions can outgrow: memcached's default largest item, and
# the most browsers keep in one cookie, which signed-cookie sessions live in.
MEMCACHED_ITEM_LIMIT = 1024 * 1024
COOKIE_LIMIT = 4096
# Class names come from whoever wrote to the cache: only so many are kept
# apart, so that a million made-up names cannot take the memory.
MAX_REFUSED_CLASSES = 20
OTHER_CLASSES = "(other classes)"
# The most lines of keys (and of nested paths) kept, whatever names the
# store's keys have: keys past them are counted on one line. And the most of
# a key's name a line keeps.
MAX_LINES = 100_000
OTHER_KEYS = "(other keys)"
MAX_NAME_LENGTH = 200


@dataclass(slots=True)
class KeyStats:
    """
    The sessions with one key, or with keys of one pattern, and the bytes
    their entries took: a session with several keys of a pattern counts
    once, with the bytes of them all (``max_bytes`` is the most one
    session's took).

    ``key`` is the one key a pattern's line stands for, until another key
    of the pattern is seen; it is None for a pattern of several keys, and
    for a pattern whose keys hold a token, which is never shown. ``owner``
    is the app that writes the key, where it is known.
    """

    sessions: int = 0
    total_bytes: int = 0
    max_bytes: int = 0
    key: str | None = None
    owner: Owner | None = field(default=None, compare=False)
    # The owner's app, looked up once a line rather than once an entry.
    app: str | None = field(default=None, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.app = None if self.owner is None else self.owner.app

    def merge(self, other: KeyStats) -> None:
        self.sessions += other.sessions
        self.total_bytes += other.total_bytes
        self.max_bytes = max(self.max_bytes, other.max_bytes)
        if self.key != other.key:
            self.key = None


class KeyTable:
    """
    Key stats by the name the report gives them: a key's own, or its
    pattern's where it has ids or a token in it (see patterns.py), so that
    a million keys of one pattern take one line, and one line's memory.
    With ``grouped`` false, every key is its own line (--show-keys).
    """

    __slots__ = ("lines", "grouped", "owners")

    def __init__(self, *, grouped: bool = True, owners: Owners = NO_OWNERS) -> None:
        self.lines: dict[str, KeyStats] = {}
        self.grouped = grouped
        self.owners = owners

    def add(self, entries: dict[str, int], apps: set[str | None]) -> None:
        """Count one session's entries; add the apps that own them to ``apps``."""
        lines = self.lines
        owned = apps.add
        in_patterns: dict[str, int] | None = None
        for key, size in entries.items():
            line = lines.get(key)
            if line is None or line.key != key:
                name, shown = self._name(key)
                if name != key:
                    if in_patterns is None:
                        in_patterns = {}
                    in_patterns[name] = in_patterns.get(name, 0) + size
                    self._seen(name, key if shown else None)
                    continue
                if line is None:
                    line = lines[key] = KeyStats(key=key, owner=self.owners(key))
            line.sessions += 1
            line.total_bytes += size
            if size > line.max_bytes:
                line.max_bytes = size
            owned(line.app)
        if in_patterns:
            for name, size in in_patterns.items():
                line = lines[name]
                line.sessions += 1
                line.total_bytes += size
                if size > line.max_bytes:
                    line.max_bytes = size
                owned(line.app)

    def safe_name(self, key: str) -> str:
        """``key``, or its pattern where it holds a token that is not to be shown."""
        if self.grouped:
            found = key_pattern(key)
            if found.token:
                return _cut(found.pattern)
        return _cut(key)

    def merge(self, other: KeyTable) -> None:
        for name, line in other.lines.items():
            mine = self.lines.get(name)
            if mine is None and len(self.lines) >= MAX_LINES:
                # Past the most lines kept, on the line of the other keys: a
                # session may count there once for each line it had apart.
                name, mine = OTHER_KEYS, self.lines.get(OTHER_KEYS)
            if mine is None:
                owner = None if name == OTHER_KEYS else line.owner
                key = None if name == OTHER_KEYS else line.key
                self.lines[name] = KeyStats(
                    line.sessions, line.total_bytes, line.max_bytes, key, owner
                )
            else:
                mine.merge(line)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyTable):
            return NotImplemented
        return (self.grouped, self.lines) == (other.grouped, other.lines)

    def _name(self, key: str) -> tuple[str, bool]:
        """
        The name of ``key``'s line, and whether that line may show ``key``
        while it is its only key: not where the key holds a token, nor where
        the name is cut short, or is that of the keys past the most kept.
        """
        if self.grouped:
            found = key_pattern(key)
            name, shown = found.pattern, not found.token
        else:
            name, shown = key, True
        if len(name) > MAX_NAME_LENGTH:
            name, shown = _cut(name), False
        if name not in self.lines and len(self.lines) >= MAX_LINES:
            name, shown = OTHER_KEYS, False
        return name, shown

    def _seen(self, name: str, key: str | None) -> None:
        """Note that ``key`` (None: one not to show) is one of line ``name``'s keys."""
        line = self.lines.get(name)
        if line is None:
            owner = None if name == OTHER_KEYS else self.owners(name)
            self.lines[name] = KeyStats(key=key, owner=owner)
        elif line.key is not None and line.key != key:
            line.key = None

    def shown(self, name: str) -> str:
        """What the report shows for line ``name``: its one key, or the pattern."""
        line = self.lines[name]
        return line.key if line.key is not None else name


@dataclass(frozen=True, order=True)
class LargeSession:
    """One of the largest sessions: what the report may say of it."""

    stored_size: int
    key: str
    expires_at: datetime | None = field(compare=False, default=None)
    user_id: str | None = field(compare=False, default=None)
    largest_key: str | None = field(compare=False, default=None)


class SizeDistribution:
    """
    The distribution of stored sizes, in memory that stays flat.

    Sizes are kept exactly up to ``EXACT_UP_TO`` of them; past that, in a
    sketch of logarithmic buckets whose width keeps any percentile within 1%
    of the exact one. The power-of-two histogram is always exact. Merging two
    distributions gives what one run over both sets of sizes gives.
    """

    EXACT_UP_TO = 10_000
    # Relative accuracy 1%: bucket i holds (GAMMA**(i-1), GAMMA**i].
    GAMMA = (1 + 0.01) / (1 - 0.01)

    def __init__(self) -> None:
        self.count = 0
        self.maximum = 0
        self.minimum: int | None = None
        self.exact: list[int] | None = []
        self.buckets: Counter[int] = Counter()
        self.powers: Counter[int] = Counter()

    def add(self, size: int) -> None:
        self.count += 1
        if size > self.maximum:
            self.maximum = size
        if self.minimum is None or size < self.minimum:
            self.minimum = size
        self.powers[size.bit_length()] += 1
        if self.exact is not None:
            self.exact.append(size)
            if len(self.exact) > self.EXACT_UP_TO:
                self._to_sketch()
        else:
            self.buckets[self._bucket(size)] += 1

    def merge(self, other: SizeDistribution) -> None:
        self.count += other.count
        self.maximum = max(self.maximum, other.maximum)
        if other.minimum is not None:
            self.minimum = (
                other.minimum if self.minimum is None else min(self.minimum, other.minimum)
            )
        self.powers.update(other.powers)
        if self.exact is not None and other.exact is not None:
            self.exact.extend(other.exact)
            if len(self.exact) > self.EXACT_UP_TO:
                self._to_sketch()
            return
        if self.exact is not None:
            self._to_sketch()
        if other.exact is not None:
            self.buckets.update(self._bucket(size) for size in other.exact)
        else:
            self.buckets.update(other.buckets)

    def percentile(self, percent: float) -> int:
        """The nearest-rank percentile: exact, or within 1% once sketched."""
        if self.count == 0:
            return 0
        rank = max(1, math.ceil(percent / 100 * self.count))
        if self.exact is not None:
            return sorted(self.exact)[rank - 1]
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                # The middle of the bucket, by relative error.
                estimate = round(2 * self.GAMMA**bucket / (self.GAMMA + 1))
                return max(self.minimum or 0, min(self.maximum, estimate))
        return self.maximum

    def histogram(self) -> list[tuple[int, int, int]]:
        """(low, high, sessions) for each power-of-two range of sizes, low to high."""
        if not self.powers:
            return []
        lowest, highest = min(self.powers), max(self.powers)
        return [
            (0 if bits == 0 else 2 ** (bits - 1), 2**bits - 1 if bits else 0, self.powers[bits])
            for bits in range(lowest, highest + 1)
        ]

    def _bucket(self, size: int) -> int:
        # What math.log(size, GAMMA) gives, with GAMMA's log taken once.
        return 0 if size <= 1 else math.ceil(math.log(size) / _LOG_GAMMA)

    def _to_sketch(self) -> None:
        assert self.exact is not None
        self.buckets.update(self._bucket(size) for size in self.exact)
        self.exact = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SizeDistribution):
            return NotImplemented
        mine = sorted(self.exact) if self.exact is not None else None
        theirs = sorted(other.exact) if other.exact is not None else None
        return (self.count, self.maximum, self.minimum, mine, self.buckets, self.powers) == (
            other.count,
            other.maximum,
            other.minimum,
            theirs,
            other.buckets,
            other.powers,
        )


_LOG_GAMMA = math.log(SizeDistribution.GAMMA)


class TopSessions:
    """
    The ``size`` largest sessions, by stored size and then key.

    ``least`` is the least stored size a session needs to be admitted: a
    quick first test for the many that are not.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[LargeSession] = []
        self.least: float = 0 if size else math.inf

    def admits(self, stored_size: int, key: str) -> bool:
        """Whether a session this big would be among the largest kept."""
        if len(self.heap) < self.size:
            return True
        return bool(self.size) and (stored_size, key) > (
            self.heap[0].stored_size,
            self.heap[0].key,
        )

    def add(self, session: LargeSession) -> None:
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, session)
        elif self.size and session > self.heap[0]:
            heapq.heapreplace(self.heap, session)
        if self.size and len(self.heap) == self.size:
            self.least = self.heap[0].stored_size

    def merge(self, other: TopSessions) -> None:
        for session in other.heap:
            self.add(session)

    def largest_first(self) -> list[LargeSession]:
        return sorted(self.heap, reverse=True)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TopSessions):
            return NotImplemented
        return self.largest_first() == other.largest_first()


@dataclass
class Stats:
    """
    Totals over the sessions processed so far, decodable or not.

    ``now`` is when the run started: sessions whose expiry is before it are
    counted as expired. ``top`` is how many of the largest sessions to keep.
    Keys are grouped by pattern unless ``show_keys``, and ``owner_of`` finds
    the app that writes each.
    """

    now: datetime | None = None
    top: int = 10
    show_keys: bool = False
    owner_of: Owners = field(default=NO_OWNERS, repr=False, compare=False)
    processed: int = 0
    stored_bytes: int = 0
    payload_bytes: int = 0
    keys: KeyTable = field(init=False)
    nested: KeyTable = field(init=False)
    # The sessions with keys of each app (None: of apps not known); the
    # bytes are the keys' own, summed by app in the report.
    owners: Counter[str | None] = field(default_factory=Counter)
    undecodable: Counter[str] = field(default_factory=Counter)
    undecodable_bytes: int = 0
    refused_classes: Counter[str] = field(default_factory=Counter)
    unknown_key_sessions: int = 0
    unknown_key_bytes: int = 0
    expired_sessions: int = 0
    expired_bytes: int = 0
    users: Users = field(default_factory=Users)
    authenticated_sessions: int = 0
    over_cookie_limit: int = 0
    over_memcached_limit: int = 0
    sizes: SizeDistribution = field(default_factory=SizeDistribution)
    largest: TopSessions = field(init=False)
    # When the sessions were written, and when they expire.
    timeline: Timeline = field(init=False)

    def __post_init__(self) -> None:
        self.largest = TopSessions(self.top)
        self.timeline = Timeline(now=None if self.now is None else self.now.timestamp())
        self.keys = KeyTable(grouped=not self.show_keys, owners=self.owner_of)
        self.nested = KeyTable(grouped=not self.show_keys, owners=self.owner_of)

    def add(self, session: DecodedSession) -> None:
        # Called once a session, millions of times: kept plain and inlined.
        size = session.stored_size
        self.processed += 1
        self.stored_bytes += size
        self.sizes.add(size)
        if size > COOKIE_LIMIT:
            self.over_cookie_limit += 1
            if size > MEMCACHED_ITEM_LIMIT:
                self.over_memcached_limit += 1
        expires_at = session.expires_at
        if expires_at is not None and self.now is not None and expires_at < self.now:
            self.expired_sessions += 1
            self.expired_bytes += size
        self.timeline.add(expires_at, session.age, size)
        entries = session.entries
        largest = self.largest
        if size >= largest.least and largest.admits(size, session.key):
            largest_key = max(entries, key=lambda key: (entries[key], key), default=None)
            if largest_key is not None:
                largest_key = self.keys.safe_name(largest_key)
            largest.add(LargeSession(size, session.key, expires_at, session.user_id, largest_key))
        if session.failure is not None:
            self.undecodable[session.failure] += 1
            self.undecodable_bytes += size
            if session.unknown_key:
                self.unknown_key_sessions += 1
                self.unknown_key_bytes += size
            if session.refused_class is not None:
                self._refused(session.refused_class, 1)
            return
        self.payload_bytes += session.payload_size
        apps: set[str | None] = set()
        self.keys.add(entries, apps)
        owners = self.owners
        for app in apps:
            owners[app] += 1
        if session.nested:
            self.nested.add(session.nested, set())
        if session.user_id is not None:
            self.authenticated_sessions += 1
            self.users.add(session.user_id, size)

    def keep_top(self, top: int) -> None:
        """Keep only the ``top`` largest sessions, and list as many users, where more were kept."""
        assert top <= self.top
        largest = TopSessions(top)
        largest.merge(self.largest)
        self.top, self.largest = top, largest

    def merge(self, other: Stats) -> None:
        """Add ``other``'s totals to these, as if its sessions were added here."""
        for name in _TOTALS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.keys.merge(other.keys)
        self.nested.merge(other.nested)
        self.owners.update(other.owners)
        self.undecodable.update(other.undecodable)
        for class_name, count in other.refused_classes.items():
            self._refused(class_name, count)
        self.users.merge(other.users)
        self.sizes.merge(other.sizes)
        self.largest.merge(other.largest)
        self.timeline.merge(other.timeline)

    def _refused(self, class_name: str, count: int) -> None:
        refused = self.refused_classes
        if class_name not in refused and len(refused) >= MAX_REFUSED_CLASSES:
            class_name = OTHER_CLASSES
        refused[class_name] += count

    @property
    def decodable(self) -> int:
        return self.processed - sum(self.undecodable.values())


def to_state(stats: Stats, *, show_keys: bool = False) -> dict[str, Any]:
    """
    ``stats`` as JSON values, from which from_state() makes them again, so
    that the stats of shards run apart can be merged.

    Session keys are cut to their first characters unless ``show_keys``.
    """
    sizes = stats.sizes
    return {
        "now": None if stats.now is None else stats.now.isoformat(),
        "top": stats.top,
        "totals": {name: getattr(stats, name) for name in _TOTALS},
        "show_keys": stats.show_keys,
        "keys": _lines_state(stats.keys),
        "nested": _lines_state(stats.nested),
        "owners": [[app, sessions] for app, sessions in stats.owners.items()],
        "undecodable": dict(stats.undecodable),
        "refused_classes": dict(stats.refused_classes),
        "users": stats.users.state(),
        "sizes": {
            "count": sizes.count,
            "maximum": sizes.maximum,
            "minimum": sizes.minimum,
            "exact": sizes.exact,
            "buckets": {str(bucket): count for bucket, count in sizes.buckets.items()},
            "powers": {str(bits): count for bits, count in sizes.powers.items()},
        },
        "largest": [
            [
                session.stored_size,
                session.key if show_keys else masked(session.key),
                None if session.expires_at is None else session.expires_at.isoformat(),
                session.user_id,
                session.largest_key,
            ]
            for session in stats.largest.largest_first()
        ],
        "timeline": stats.timeline.state(),
    }


def from_state(state: dict[str, Any]) -> Stats:
    """
    The stats that to_state() wrote. Raises ValueError where the state
    does not hold together (a forged one: sizes that do not add up to the
    sessions, a date that is not one), as no run could have written it.
    """
    stats = Stats(now=_moment(state["now"]), top=state["top"], show_keys=state["show_keys"])
    for name, value in state["totals"].items():
        setattr(stats, name, value)
    _lines_from_state(stats.keys, state["keys"])
    _lines_from_state(stats.nested, state["nested"])
    for app, sessions in state["owners"]:
        stats.owners[app] += sessions
    stats.undecodable = Counter(state["undecodable"])
    for class_name, count in state["refused_classes"].items():
        stats._refused(class_name, count)
    stats.users = Users.from_state(state["users"])
    sizes = stats.sizes
    sizes.count = state["sizes"]["count"]
    sizes.maximum = state["sizes"]["maximum"]
    sizes.minimum = state["sizes"]["minimum"]
    sizes.exact = state["sizes"]["exact"]
    sizes.buckets = Counter({int(b): n for b, n in state["sizes"]["buckets"].items()})
    sizes.powers = Counter({int(b): n for b, n in state["sizes"]["powers"].items()})
    if len(state["largest"]) > stats.top:
        raise ValueError("More of the largest sessions than were kept.")
    for size, key, expires, user_id, largest_key in state["largest"]:
        stats.largest.add(LargeSession(size, key, _moment(expires), user_id, largest_key))
    _check_sizes(sizes, stats.processed)
    stats.timeline = Timeline.from_state(state["timeline"], stats.timeline.now)
    if stats.timeline.now is not None and not stats.timeline.holds_together(stats.processed):
        raise ValueError("The timeline does not place the sessions processed.")
    return stats


def _moment(text: str | None) -> datetime | None:
    """An ISO 8601 date and time of a state, aware in UTC (raises where it is not one)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)  # OverflowError past the calendar's ends.


def _check_sizes(sizes: SizeDistribution, processed: int) -> None:
    """That the sizes of a state describe ``processed`` sessions, as a run's do."""
    counted = sizes.buckets.total() if sizes.exact is None else len(sizes.exact)
    holds = (
        sizes.count == processed == counted == sizes.powers.total()
        and (sizes.minimum is None) == (processed == 0)
        and (sizes.minimum or 0) <= sizes.maximum
    )
    if not holds:
        raise ValueError("The sizes do not describe the sessions processed.")


_TOTALS = (
    "processed",
    "stored_bytes",
    "payload_bytes",
    "undecodable_bytes",
    "unknown_key_sessions",
    "unknown_key_bytes",
    "expired_sessions",
    "expired_bytes",
    "over_cookie_limit",
    "over_memcached_limit",
    "authenticated_sessions",
)


def _cut(name: str) -> str:
    """A name cut to MAX_NAME_LENGTH characters, and marked so, if longer."""
    return name if len(name) <= MAX_NAME_LENGTH else f"{name[:MAX_NAME_LENGTH]}\u2026"


def _lines_state(table: KeyTable) -> dict[str, list[Any]]:
    """Each line as [sessions, total bytes, max bytes, its one key, owner, where]."""
    return {
        name: [
            line.sessions,
            line.total_bytes,
            line.max_bytes,
            line.key,
            None if line.owner is None else line.owner.app,
            None if line.owner is None else line.owner.where,
        ]
        for name, line in table.lines.items()
    }


def _lines_from_state(table: KeyTable, lines: dict[str, list[Any]]) -> None:
    for name, (sessions, total_bytes, max_bytes, key, app, where) in lines.items():
        owner = None if app is None else Owner(app, where)
        table.lines[name] = KeyStats(sessions, total_bytes, max_bytes, key, owner)


@dataclass
class Outcome:
    """
    What reading a range of keys gave: the stats of the sessions processed,
    and what the source counted beside them (see ``Source``), among which
    ``unreadable_expiry``, the sessions processed whose expiry could not be
    read.
    """

    stats: Stats
    total_sessions: int | None = None
    keys_listed: int | None = None
    keys_not_found: int | None = None
    unreadable: Counter[str] = field(default_factory=Counter)
    sessions_gone: int = 0
    unreadable_expiry: int = 0
    partial: bool = False
    failure: str | None = None

    def merge(self, other: Outcome) -> None:
        self.stats.merge(other.stats)
        self.total_sessions = _add(self.total_sessions, other.total_sessions)
        self.keys_listed = _add(self.keys_listed, other.keys_listed)
        self.keys_not_found = _add(self.keys_not_found, other.keys_not_found)
        self.unreadable.update(other.unreadable)
        self.sessions_gone += other.sessions_gone
        self.unreadable_expiry += other.unreadable_expiry
        self.partial = self.partial or other.partial
        self.failure = self.failure or other.failure


def _add(first: int | None, second: int | None) -> int | None:
    return None if first is None or second is None else first + second
