"""The report of a run, and the renderers that write it out."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, TypeGuard

from django.db import DEFAULT_DB_ALIAS

from analyze_sessions.compare import Comparison, LineChange
from analyze_sessions.compare import to_json as comparison_json
from analyze_sessions.decoding import FAILURES, TOO_LARGE
from analyze_sessions.shown import KEY_PREFIX_LENGTH, masked, printable, spreadsheet_safe
from analyze_sessions.sizes import format_size
from analyze_sessions.sketches import DISTINCT_ERROR
from analyze_sessions.sources import DEFAULT_MAX_SESSION_SIZE
from analyze_sessions.stats import (
    COOKIE_LIMIT,
    MEMCACHED_ITEM_LIMIT,
    KeyTable,
    LargeSession,
    Stats,
)
from analyze_sessions.timeline import STANDS_OUT, Written, written

SCHEMA_VERSION = 2
# The most key lines the text report lists: the rest are summed in one line.
MAX_KEY_LINES = 100
_CENTS = Decimal("0.01")
_PERCENTILES = (("p50", 50), ("p90", 90), ("p99", 99))
HISTOGRAM_WIDTH = 30


def mean(total: int, count: int) -> Decimal:
    """``total / count`` to two decimals, rounded half up; 0.00 for no count."""
    if count == 0:
        return _CENTS * 0
    return (Decimal(total) / count).quantize(_CENTS, rounding=ROUND_HALF_UP)


def share(part: int, whole: int) -> Decimal:
    """``part`` as a fraction of ``whole``, to four decimals; 0 for no whole."""
    if whole == 0:
        return Decimal("0.0000")
    return (Decimal(part) / whole).quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class KeyLine:
    """
    One session key, or the keys of one pattern (``grouped``): in how many
    sessions, the bytes their entries took, and the app that writes them.
    """

    key: str
    sessions: int
    total_bytes: int
    max_bytes: int
    owner: str | None = None
    where: str | None = None
    grouped: bool = False

    @property
    def mean_bytes(self) -> Decimal:
        return mean(self.total_bytes, self.sessions)


@dataclass(frozen=True)
class OwnerLine:
    """The keys of one app (None: of apps not known) taken together."""

    owner: str | None
    sessions: int
    total_bytes: int


@dataclass(frozen=True)
class UserLine:
    """A user's sessions and bytes; ``error``: bytes an estimate may overstate by."""

    user_id: str
    sessions: int
    stored_bytes: int
    error: int = 0


@dataclass(frozen=True)
class Report:
    """Everything a renderer shows, with no session value in it."""

    total_sessions: int | None  # None where the store cannot count them.
    processed: int
    stored_bytes: int
    keys: tuple[KeyLine, ...]
    undecodable: tuple[tuple[str, int], ...]
    undecodable_bytes: int
    keys_listed: int | None = None
    keys_not_found: int | None = None
    engine: str = ""
    filters: dict[str, Any] = field(default_factory=dict)
    payload_bytes: int = 0
    percentiles: dict[str, int] = field(default_factory=dict)
    histogram: tuple[tuple[int, int, int], ...] = ()
    largest: tuple[LargeSession, ...] = ()
    expired_sessions: int = 0
    expired_bytes: int = 0
    unknown_key_sessions: int = 0
    unknown_key_bytes: int = 0
    authenticated_sessions: int = 0
    distinct_users: int = 0
    users_estimated: bool = False  # Sketched: see sketches.py.
    top_users: tuple[UserLine, ...] = ()
    owners: tuple[OwnerLine, ...] = ()
    now: datetime | None = None  # When the run started: what is expired is before it.
    nested: tuple[KeyLine, ...] = ()
    depth: int = 0
    disk: dict[str, Any] | None = None
    over_cookie_limit: int = 0
    over_memcached_limit: int = 0
    memcached: bool = False
    cached: bool = False  # Kept in a cache only: no clearsessions for them.
    partial: bool = False
    unfinished: str = ""  # With --tasks: the shards that did not finish ("shards 2/4, 3/4").
    unreadable: tuple[tuple[str, int], ...] = ()
    sessions_gone: int = 0
    unreadable_expiry: int = 0
    refused_classes: tuple[tuple[str, int], ...] = ()
    max_session_size: int = DEFAULT_MAX_SESSION_SIZE
    compared: Comparison | None = None  # With --compare: what changed since.
    written: Written | None = None  # When the sessions were written, and expire.

    @classmethod
    def from_stats(
        cls,
        stats: Stats,
        *,
        total_sessions: int | None,
        keys_listed: int | None = None,
        keys_not_found: int | None = None,
        unreadable: dict[str, int] | None = None,
        **context: Any,
    ) -> Report:
        """The report of ``stats``; ``context`` sets the fields stats do not know."""
        return cls(
            total_sessions=total_sessions,
            processed=stats.processed,
            stored_bytes=stats.stored_bytes,
            keys=_key_lines(stats.keys),
            undecodable=tuple(
                (reason, stats.undecodable[reason])
                for reason in FAILURES
                if stats.undecodable[reason]
            ),
            undecodable_bytes=stats.undecodable_bytes,
            keys_listed=keys_listed,
            keys_not_found=keys_not_found,
            unreadable=_by_count(unreadable or {}),
            refused_classes=_by_count(stats.refused_classes),
            payload_bytes=stats.payload_bytes,
            percentiles={
                **{name: stats.sizes.percentile(percent) for name, percent in _PERCENTILES},
                "max": stats.sizes.maximum,
            },
            histogram=tuple(stats.sizes.histogram()),
            largest=tuple(stats.largest.largest_first()),
            expired_sessions=stats.expired_sessions,
            expired_bytes=stats.expired_bytes,
            unknown_key_sessions=stats.unknown_key_sessions,
            unknown_key_bytes=stats.unknown_key_bytes,
            authenticated_sessions=stats.authenticated_sessions,
            distinct_users=stats.users.distinct(),
            users_estimated=stats.users.estimated,
            top_users=tuple(
                UserLine(user_id, user.sessions, user.stored_bytes, user.error)
                for user_id, user in stats.users.top(stats.top)
            ),
            owners=_owner_lines(stats),
            now=stats.now,
            nested=_key_lines(stats.nested),
            over_cookie_limit=stats.over_cookie_limit,
            over_memcached_limit=stats.over_memcached_limit,
            written=written(stats.timeline),
            **context,
        )

    @property
    def mean_stored_size(self) -> Decimal:
        return mean(self.stored_bytes, self.processed)

    @property
    def undecodable_sessions(self) -> int:
        return sum(count for _, count in self.undecodable)

    @property
    def anonymous_sessions(self) -> int:
        return self.processed - self.undecodable_sessions - self.authenticated_sessions

    @property
    def unreadable_sessions(self) -> int:
        return sum(count for _, count in self.unreadable)


def _by_count(counts: dict[str, int]) -> tuple[tuple[str, int], ...]:
    """The counts, most first, then by name."""
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _owner_lines(stats: Stats) -> tuple[OwnerLine, ...]:
    owned: dict[str | None, int] = {}
    for line in stats.keys.lines.values():
        owned[line.app] = owned.get(line.app, 0) + line.total_bytes
    lines = (OwnerLine(app, sessions, owned.get(app, 0)) for app, sessions in stats.owners.items())
    return tuple(
        sorted(lines, key=lambda line: (-line.total_bytes, line.owner is None, line.owner or ""))
    )


def _key_lines(table: KeyTable) -> tuple[KeyLine, ...]:
    lines = (
        KeyLine(
            table.shown(name),
            found.sessions,
            found.total_bytes,
            found.max_bytes,
            None if found.owner is None else found.owner.app,
            None if found.owner is None else found.owner.where,
            grouped=found.key is None,
        )
        for name, found in table.lines.items()
    )
    return tuple(sorted(lines, key=lambda line: (-line.total_bytes, line.key)))


def render_text(report: Report, *, human: bool = False, show_keys: bool = False) -> Iterator[str]:
    """
    Yield the lines of the plain-text report.

    The first lines are worded as the 2013 tool worded them, so that scripts
    reading its output keep working: a key line adds to its classic form
    only after the closing parenthesis. Sections follow, each shown where it
    has something to say.
    """

    def size(count: int) -> str:
        return format_size(count) if human else f"{count} bytes"

    if report.total_sessions is None:
        total = "an unknown number of total sessions"
    else:
        total = f"{report.total_sessions} total sessions"
    yield f"Processed {report.processed} sessions out of {total}"
    yield f"Average size was {report.mean_stored_size} bytes"
    if report.keys:
        yield "Saw the following keys:"
        for line in report.keys[:MAX_KEY_LINES]:
            yield _key_line(line)
        rest = report.keys[MAX_KEY_LINES:]
        if rest:
            yield (
                f"    ({len(rest)} more keys and patterns, "
                f"{size(sum(line.total_bytes for line in rest))} in all: "
                f"--format json lists them all)"
            )
        yield (
            "Key sizes are payload bytes, before compression; session sizes are stored bytes, "
            "so a key's max can exceed the largest session."
        )

    scope = list(_scope(report))
    if scope:
        yield from _section("Scope", scope)

    totals = [
        f"Stored: {size(report.stored_bytes)} in all, "
        f"{_mean_size(report.stored_bytes, report.processed, human)} a session",
        f"Payload: {size(report.payload_bytes)} serialized, before compression and signing",
    ]
    if report.payload_bytes:
        decodable_stored = report.stored_bytes - report.undecodable_bytes
        totals.append(
            f"Compression: decodable sessions are stored in "
            f"{_percent(decodable_stored, report.payload_bytes)} of their payload's size"
        )
    if report.unreadable:
        totals.append(
            f"Unreadable: {_sessions(report.unreadable_sessions)} ({_counted(report.unreadable)})"
            f": named as sessions, but not read, so not processed"
        )
    if report.sessions_gone:
        totals.append(
            f"Gone while read: {_sessions(report.sessions_gone)}: listed, then deleted or "
            f"expired before they were read"
        )
    if report.keys_listed is not None:
        totals.append(f"Listed keys not found: {report.keys_not_found} of {report.keys_listed}")
    yield from _section("Totals", totals)

    if report.compared is not None:
        yield from _section(_since_title(report.compared), list(_since(report.compared, size)))

    if report.owners:
        yield from _section("By app", list(_by_app(report, size)))

    if report.histogram:
        yield from _section(
            "Distribution of stored sizes", list(_distribution(report, size, human))
        )

    if report.largest:
        # Sizes aligned on the right, as a column.
        width = max(len(size(session.stored_size)) for session in report.largest)
        yield from _section(
            "Largest sessions",
            [
                _largest_line(session, size, show_keys, report.now, width)
                for session in report.largest
            ],
        )

    cleanup = (
        "the cache deletes each when it next reads or culls it"
        if report.cached
        else "clearsessions would delete them"
    )
    expired = [
        f"{_sessions(report.expired_sessions)} "
        f"({_percent(report.expired_sessions, report.processed)}), "
        f"{size(report.expired_bytes)} ({_percent(report.expired_bytes, report.stored_bytes)}"
        f" of stored): past their expiry, still stored; {cleanup}"
    ]
    if report.unreadable_expiry:
        expired.append(
            f"{_sessions(report.unreadable_expiry)} with an expiry that cannot be read "
            f"(not a date): not counted as expired"
        )
    yield from _section("Expired", expired)

    if report.written is not None and report.processed:
        yield from _section("Written", list(_written(report.written, size)))

    if report.undecodable:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in report.undecodable)
        undecodable = [
            f"{_sessions(report.undecodable_sessions)}, {size(report.undecodable_bytes)} "
            f"({reasons}): no request can read them, and Django reads each as empty"
        ]
        if report.unknown_key_sessions:
            undecodable.append(
                f"{report.unknown_key_sessions} of them, {size(report.unknown_key_bytes)}, "
                f"{'is' if report.unknown_key_sessions == 1 else 'are'} signed with a key no "
                f"longer configured: dead weight until "
                f"{'it expires' if report.unknown_key_sessions == 1 else 'they expire'}"
            )
        too_large = dict(report.undecodable).get(TOO_LARGE, 0)
        if too_large:
            undecodable.append(
                f"{too_large} of them {'is' if too_large == 1 else 'are'} stored in more than "
                f"{size(report.max_session_size)}, or decompress to more "
                f"(--max-session-size): not read whole"
            )
        if report.refused_classes:
            refused = sum(count for _, count in report.refused_classes)
            undecodable.append(
                f"{refused} of them {'is a pickle' if refused == 1 else 'are pickles'} of "
                f"classes a session cannot hold, not unpickled: "
                f"{_counted(report.refused_classes)}"
            )
        yield from _section("Undecodable", undecodable)
    else:
        yield from _section("Undecodable", ["0 sessions"])

    decodable = report.processed - report.undecodable_sessions
    distinct = (
        f"about {report.distinct_users} distinct users (estimated, within "
        f"{DISTINCT_ERROR:.1%} 95 times in 100)"
        if report.users_estimated
        else f"{report.distinct_users} distinct {'user' if report.distinct_users == 1 else 'users'}"
    )
    users = [
        f"{_sessions(report.authenticated_sessions)} logged in "
        f"({_percent(report.authenticated_sessions, decodable)}), "
        f"{report.anonymous_sessions} anonymous; {distinct}"
    ]
    if report.top_users and report.users_estimated:
        users.append("Top users by stored size (estimated: each has stored bytes in the range):")
        users += [
            f"    user {printable(user.user_id)}: {size(user.stored_bytes - user.error)} to "
            f"{size(user.stored_bytes)}"
            for user in report.top_users
        ]
    elif report.top_users:
        users.append("Top users by stored size:")
        users += [
            f"    user {printable(user.user_id)}: {_sessions(user.sessions)}, "
            f"{size(user.stored_bytes)}"
            for user in report.top_users
        ]
    yield from _section("Users", users)

    if report.depth:
        yield from _section(
            f"Nested (depth {report.depth})",
            [_key_line(line)[4:] for line in report.nested[:MAX_KEY_LINES]]
            + (
                [f"({len(report.nested) - MAX_KEY_LINES} more paths: --format json lists them all)"]
                if len(report.nested) > MAX_KEY_LINES
                else []
            )
            or ["no dict or list values"],
        )

    if report.disk:
        yield from _section(
            "On disk",
            [
                f"Table {printable(report.disk['table'])}: {size(report.disk['total_bytes'])} "
                f"with its indexes, of which indexes {size(report.disk['index_bytes'])}; "
                f"stored sizes add up to {size(report.stored_bytes)}"
            ],
        )

    limits = []
    if report.memcached and report.over_memcached_limit:
        limits.append(
            f"{_sessions(report.over_memcached_limit)} over 1 MiB, memcached's default "
            f"largest item: the cache will not keep them"
        )
    if report.over_cookie_limit:
        limits.append(
            f"{_sessions(report.over_cookie_limit)} over 4 KiB, the most a browser keeps "
            f"in a cookie: too big for signed-cookie sessions"
        )
    if limits:
        yield from _section("Limits", limits)


def _written(found: Written, size: Any) -> Iterator[str]:
    """The lines of the Written section: when the sessions were last written, and expire."""
    if found.placed:
        days = [day for day in found.by_day if day[1]]
        if days:
            yield "By day, the last 30 days (UTC), for each day that has any:"
        for name, sessions, stored in days:
            standing = " (stands out)" if name in found.stand_out else ""
            yield f"    {name}: {_sessions(sessions)}, {size(stored)}{standing}"
        if found.stand_out:
            median = f"{found.median_day:g}"
            yield (
                f"Standing out: {len(found.stand_out)} of them, with more than {STANDS_OUT} "
                f"times the median day's {median} sessions (bots, a campaign, a bug?)"
            )
        months = [month for month in found.by_month if month[1]]
        if months or found.earlier[1]:
            yield "Before, by month:"
        if found.earlier[1]:
            yield (
                f"    before {found.earlier[0]}: {_sessions(found.earlier[1])}, "
                f"{size(found.earlier[2])}"
            )
        for name, sessions, stored in months:
            yield f"    {name}: {_sessions(sessions)}, {size(stored)}"
    if found.later[0]:
        yield (
            f"After the run started: {_sessions(found.later[0])}, {size(found.later[1])}: "
            f"their expiry is further off than their age (set by hand, or a clock ahead)"
        )
    if found.unplaced[0]:
        yield (
            f"Not placed: {_sessions(found.unplaced[0])}, {size(found.unplaced[1])}: no "
            f"expiry, an expiry set as a date, or data that cannot be read"
        )
    yield "Expiring: " + "; ".join(
        f"{_sessions(sessions)}, {size(stored)} in the next {within}"
        for within, sessions, stored in found.expiring
    )


def _since_title(comparison: Comparison) -> str:
    if comparison.generated_at is None:
        title = "Since the earlier report (of an unknown date)"
    else:
        moment = datetime.strptime(comparison.generated_at, "%Y-%m-%dT%H:%M:%SZ")
        title = f"Since {moment.strftime('%Y-%m-%d %H:%M')} UTC"
    return f"{title}, a partial one" if comparison.partial else title


def _since(comparison: Comparison, size: Any) -> Iterator[str]:
    """The lines of the Since section: what changed, and where."""
    for label, change, sized in (
        ("Sessions", comparison.sessions, False),
        ("Stored", comparison.stored_bytes, True),
        ("Expired sessions", comparison.expired_sessions, False),
        ("Undecodable sessions", comparison.undecodable_sessions, False),
    ):
        shown = size if sized else str
        sign = "+" if change.change >= 0 else "-"
        percent = "" if change.percent is None else f" ({change.percent:+}%)"
        yield (
            f"{label}: {shown(change.after)}, {sign}{shown(abs(change.change))}{percent} "
            f"from {shown(change.before)}"
        )
    groups: list[tuple[str, tuple[LineChange, ...] | None]] = [
        ("Keys whose bytes grew most", comparison.keys_grew),
        ("Keys whose bytes shrank most", comparison.keys_shrank),
        ("Apps whose bytes grew most", comparison.owners_grew),
        ("Apps whose bytes shrank most", comparison.owners_shrank),
    ]
    for title, lines in groups:
        if lines:
            yield f"{title}:"
            for line in lines:
                sign = "+" if line.change >= 0 else "-"
                yield (
                    f"    {_changed_name(line, title.startswith('Apps'))}: "
                    f"{sign}{size(abs(line.change))}, from {size(line.before)} "
                    f"to {size(line.after)}"
                )
    for title, lines, count, bytes_of in (
        ("New keys", comparison.new_keys, comparison.new_key_count, "after"),
        ("Gone keys", comparison.gone_keys, comparison.gone_key_count, "before"),
    ):
        if count:
            yield f"{title}: {count}"
            for line in lines:
                yield f"    {_changed_name(line, False)}: {size(getattr(line, bytes_of))}"
            if count > len(lines):
                yield f"    (and {count - len(lines)} more)"
    if comparison.owners_grew is None:
        yield "Apps: the earlier report (schema version 1) does not name them"


def _changed_name(line: LineChange, app: bool) -> str:
    if app:
        return "unknown apps" if line.name is None else printable(line.name)
    return printable(line.name or "")


def _key_line(line: KeyLine) -> str:
    """A key's line: the 2013 tool's, then more after its closing parenthesis."""
    return (
        f"    {printable(line.key)} ({line.sessions} times, "
        f"avg. size {line.mean_bytes} bytes), max {line.max_bytes} bytes, "
        f"total {line.total_bytes} bytes, {_owner(line.owner, line.where)}"
    )


def _owner(owner: str | None, where: str | None = None) -> str:
    if owner is None:
        return "app unknown"
    if where is None:
        return f"by {printable(owner)}"
    return f"by {printable(owner)} ({printable(where)})"


def _by_app(report: Report, size: Any) -> Iterator[str]:
    for line in report.owners:
        name = "unknown apps" if line.owner is None else printable(line.owner)
        yield (
            f"{name}: {_sessions(line.sessions)}, {size(line.total_bytes)}, "
            f"{_percent(line.total_bytes, report.payload_bytes)} of the payload"
        )
    known = sum(line.total_bytes for line in report.owners if line.owner is not None)
    yield f"Apps known for {_percent(known, report.payload_bytes)} of the payload"


def _scope(report: Report) -> Iterator[str]:
    chosen = list(_chosen_by(report.filters))
    if chosen:
        yield f"Only the sessions chosen by {', '.join(chosen)}"
    if report.unfinished:
        yield (
            f"Partial: {report.unfinished} did not finish; {report.processed} sessions from "
            f"the others"
        )
    elif report.partial:
        yield f"Partial: interrupted after {report.processed} sessions"


def _chosen_by(filters: dict[str, Any]) -> Iterator[str]:
    """
    Each option that narrowed the sessions, with what the numbers then
    mean. A merged report's filters come from files anyone may have
    written: each value is shown escaped, and measured only if a number.
    """
    bigger_than = filters.get("bigger_than")
    if _is_number(bigger_than) and bigger_than >= 1024:
        yield f"--bigger-than {bigger_than} bytes ({format_size(int(bigger_than))})"
    elif bigger_than is not None:
        yield f"--bigger-than {_shown(bigger_than)} bytes"
    ids_from = filters.get("ids_from")
    if ids_from is not None:
        yield f"--ids-from {'standard input' if ids_from == '-' else _shown(ids_from)}"
    sample = filters.get("sample")
    if sample is not None and not (_is_number(sample) and sample >= 1):
        rate = f"{sample:g}" if _is_number(sample) else _shown(sample)
        yield f"--sample {rate} (by key: the numbers describe the sample)"
    limit = filters.get("limit")
    if limit is not None:
        yield f"--limit {_shown(limit)} (at most {_shown(limit)} sessions processed)"
    shard = filters.get("shard")
    if shard is not None:
        yield f"--shard {_shown(shard)} (the total is the shard's)"
    database = filters.get("database")
    if database is not None and database != DEFAULT_DB_ALIAS:
        yield f"--database {_shown(database)}"
    model = filters.get("model")
    if model is not None:
        yield f"--model {_shown(model)}"


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    return printable(str(value))


def _distribution(report: Report, size: Any, human: bool = False) -> Iterator[str]:
    yield ", ".join(f"{name} {size(value)}" for name, value in report.percentiles.items())
    peak = max(count for _, _, count in report.histogram)
    ranges = [
        f"{format_size(low)}-{format_size(high)}" if human else f"{low}-{high} bytes"
        for low, high, _ in report.histogram
    ]
    width = max(map(len, ranges))
    for sizes, (_, _, count) in zip(ranges, report.histogram, strict=True):
        bar = "#" * max(1 if count else 0, round(HISTOGRAM_WIDTH * count / peak))
        yield f"{sizes:>{width}} {count:>8} {bar}".rstrip()


def _largest_line(
    session: LargeSession, size: Any, show_keys: bool, now: datetime | None, width: int = 0
) -> str:
    key = session.key if show_keys else masked(session.key)
    if session.expires_at is None:
        expiry = "no expiry"
    elif is_expired(session, now):
        expiry = f"expired {_when(session.expires_at)}"
    else:
        expiry = f"expires {_when(session.expires_at)}"
    user = "anonymous" if session.user_id is None else f"user {printable(session.user_id)}"
    largest = "no keys" if session.largest_key is None else f"largest key {session.largest_key}"
    stored = size(session.stored_size).rjust(width)
    return f"{stored}: {printable(key)}, {expiry}, {user}, {printable(largest)}"


def is_expired(session: LargeSession, now: datetime | None) -> bool:
    """Whether ``session`` was past its expiry when the run started."""
    return session.expires_at is not None and now is not None and session.expires_at < now


def _counted(counts: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{printable(name)}: {count}" for name, count in counts)


def _sessions(count: int) -> str:
    return "1 session" if count == 1 else f"{count} sessions"


def _section(title: str, lines: list[str]) -> Iterator[str]:
    yield ""
    yield f"{title}:"
    for line in lines:
        yield f"    {line}"


def _mean_size(total: int, count: int, human: bool) -> str:
    average = mean(total, count)
    return format_size(int(average)) if human else f"{average} bytes"


def _percent(part: int, whole: int) -> str:
    return f"{share(part, whole) * 100:.1f}%"


def _when(moment: datetime) -> str:
    if moment.tzinfo is None:
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _written_json(found: Written) -> dict[str, Any]:
    def pair(sessions: int, stored: int) -> dict[str, int]:
        return {"sessions": sessions, "stored_bytes": stored}

    return {
        "written": {
            "by_day": [
                {"date": name, **pair(sessions, stored)} for name, sessions, stored in found.by_day
            ],
            "by_month": [
                {"month": name, **pair(sessions, stored)}
                for name, sessions, stored in found.by_month
            ],
            "earlier": {"before": found.earlier[0], **pair(*found.earlier[1:])},
            "after_run_started": pair(*found.later),
            "not_placed": pair(*found.unplaced),
            "median_day_sessions": found.median_day,
            "stand_out": list(found.stand_out),
        },
        "expiring": {within: pair(sessions, stored) for within, sessions, stored in found.expiring},
    }


def generated_at(now: datetime | None) -> str:
    """When the run started, in UTC, to the second, as ISO 8601 writes it."""
    moment = datetime.now(timezone.utc) if now is None else now.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def to_json(report: Report, *, show_keys: bool = False) -> dict[str, Any]:
    """The report as the documented JSON object, schema version 2."""
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "engine": report.engine,
        "filters": report.filters,
        "partial": report.partial,
        "generated_at": generated_at(report.now),
        **({} if report.compared is None else {"compared_to": comparison_json(report.compared)}),
        **({} if report.written is None else _written_json(report.written)),
        "sessions": {
            "total": report.total_sessions,
            "processed": report.processed,
            "undecodable": report.undecodable_sessions,
            "not_found": report.keys_not_found,
            "unreadable": dict(report.unreadable),
            "gone": report.sessions_gone,
        },
        "stored_bytes": {
            "total": report.stored_bytes,
            "mean": float(report.mean_stored_size),
            **report.percentiles,
        },
        "payload_bytes": {"total": report.payload_bytes},
        "histogram": [
            {"low": low, "high": high, "sessions": count} for low, high, count in report.histogram
        ],
        "expired": {
            "sessions": report.expired_sessions,
            "stored_bytes": report.expired_bytes,
            "unreadable_expiry": report.unreadable_expiry,
        },
        "undecodable": {
            "sessions": report.undecodable_sessions,
            "stored_bytes": report.undecodable_bytes,
            "reasons": dict(report.undecodable),
            "unknown_key": {
                "sessions": report.unknown_key_sessions,
                "stored_bytes": report.unknown_key_bytes,
            },
            "refused_classes": dict(report.refused_classes),
        },
        "users": {
            "authenticated_sessions": report.authenticated_sessions,
            "anonymous_sessions": report.anonymous_sessions,
            "distinct_users": report.distinct_users,
            "estimated": report.users_estimated,
            "top": [
                {
                    "user_id": user.user_id,
                    # A sketch's count of sessions bounds nothing: not given.
                    "sessions": None if report.users_estimated else user.sessions,
                    "stored_bytes": user.stored_bytes,
                    **({"stored_bytes_error": user.error} if report.users_estimated else {}),
                }
                for user in report.top_users
            ],
        },
        "keys": [_key_json(line, report.payload_bytes) for line in report.keys],
        "owners": [
            {
                "owner": line.owner,
                "sessions": line.sessions,
                "total_bytes": line.total_bytes,
                "share": float(share(line.total_bytes, report.payload_bytes)),
            }
            for line in report.owners
        ],
        "largest_sessions": [
            {
                "key_prefix": session.key if show_keys else session.key[:KEY_PREFIX_LENGTH],
                "stored_bytes": session.stored_size,
                "expire_date": None
                if session.expires_at is None
                else session.expires_at.isoformat(),
                "expired": is_expired(session, report.now),
                "user_id": session.user_id,
                "largest_key": session.largest_key,
            }
            for session in report.largest
        ],
        "limits": {
            "over_cookie_limit": report.over_cookie_limit,
            "cookie_limit_bytes": COOKIE_LIMIT,
            "over_memcached_limit": report.over_memcached_limit if report.memcached else None,
            "memcached_limit_bytes": MEMCACHED_ITEM_LIMIT,
        },
    }
    if report.depth:
        document["nested"] = [_key_json(line, report.payload_bytes) for line in report.nested]
    if report.disk:
        document["disk"] = report.disk
    return document


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _key_json(line: KeyLine, payload_bytes: int) -> dict[str, Any]:
    return {
        "key": line.key,
        "sessions": line.sessions,
        "total_bytes": line.total_bytes,
        "mean_bytes": float(line.mean_bytes),
        "max_bytes": line.max_bytes,
        "share": float(share(line.total_bytes, payload_bytes)),
        "grouped": line.grouped,
        "owner": line.owner,
        "where": line.where,
    }


def render_json(
    report: Report, *, show_keys: bool = False, state: dict[str, Any] | None = None
) -> Iterator[str]:
    """The JSON report; with a shard's ``state``, for --merge to read."""
    document = to_json(report, show_keys=show_keys)
    if state is not None:
        document["state"] = state
    # A line at a time, as the other formats: a reader that stops reading
    # (| head) is then seen at the next line, and one write of megabytes is
    # not half done when it is.
    yield from json.dumps(document, indent=2).splitlines()


CSV_HEADER = (
    "key",
    "sessions",
    "total_bytes",
    "mean_bytes",
    "max_bytes",
    "share",
    "owner",
    "where",
)


def render_csv(report: Report) -> Iterator[str]:
    """One row per key, largest first, after a header row."""
    for row in [CSV_HEADER, *(_csv_row(line, report.payload_bytes) for line in report.keys)]:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="").writerow(row)
        yield buffer.getvalue()


def _csv_row(line: KeyLine, payload_bytes: int) -> tuple[Any, ...]:
    return (
        spreadsheet_safe(printable(line.key)),
        line.sessions,
        line.total_bytes,
        line.mean_bytes,
        line.max_bytes,
        share(line.total_bytes, payload_bytes),
        spreadsheet_safe(printable(line.owner or "")),
        spreadsheet_safe(printable(line.where or "")),
    )
