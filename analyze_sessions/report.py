"""The report of a run, and the renderers that write it out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from analyze_sessions.decoding import FAILURES
from analyze_sessions.sizes import format_size
from analyze_sessions.stats import Stats

_CENTS = Decimal("0.01")


def mean(total: int, count: int) -> Decimal:
    """``total / count`` to two decimals, rounded half up; 0.00 for no count."""
    if count == 0:
        return _CENTS * 0
    return (Decimal(total) / count).quantize(_CENTS, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class KeyLine:
    """One session key: in how many sessions, and the bytes its entries took."""

    key: str
    sessions: int
    total_bytes: int
    max_bytes: int

    @property
    def mean_bytes(self) -> Decimal:
        return mean(self.total_bytes, self.sessions)


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

    @classmethod
    def from_stats(
        cls,
        stats: Stats,
        *,
        total_sessions: int | None,
        keys_listed: int | None = None,
        keys_not_found: int | None = None,
    ) -> Report:
        keys = sorted(
            (
                KeyLine(key, key_stats.sessions, key_stats.total_bytes, key_stats.max_bytes)
                for key, key_stats in stats.keys.items()
            ),
            key=lambda line: (-line.total_bytes, line.key),
        )
        return cls(
            total_sessions=total_sessions,
            processed=stats.processed,
            stored_bytes=stats.stored_bytes,
            keys=tuple(keys),
            undecodable=tuple(
                (reason, stats.undecodable[reason])
                for reason in FAILURES
                if stats.undecodable[reason]
            ),
            undecodable_bytes=stats.undecodable_bytes,
            keys_listed=keys_listed,
            keys_not_found=keys_not_found,
        )

    @property
    def mean_stored_size(self) -> Decimal:
        return mean(self.stored_bytes, self.processed)

    @property
    def undecodable_sessions(self) -> int:
        return sum(count for _, count in self.undecodable)


def render_text(report: Report) -> Iterator[str]:
    """
    Yield the lines of the plain-text report.

    The first lines are worded as the 2013 tool worded them, so that scripts
    reading its output keep working: a key line adds to its classic form
    only after the closing parenthesis.
    """
    if report.total_sessions is None:
        total = "an unknown number of total sessions (the store cannot count them)"
    else:
        total = f"{report.total_sessions} total sessions"
    yield f"Processed {report.processed} sessions out of {total}"
    yield f"Average size was {report.mean_stored_size} bytes"
    yield "Saw the following keys:"
    for line in report.keys:
        yield (
            f"    {printable(line.key)} ({line.sessions} times, "
            f"avg. size {line.mean_bytes} bytes), max {line.max_bytes} bytes, "
            f"total {line.total_bytes} bytes"
        )
    yield ""
    yield "Summary:"
    stored = f"    Stored size: {report.stored_bytes} bytes in all"
    if report.stored_bytes >= 1024:
        stored += f" ({format_size(report.stored_bytes)})"
    yield stored
    if report.undecodable:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in report.undecodable)
        yield (
            f"    Undecodable sessions: {report.undecodable_sessions}, "
            f"{report.undecodable_bytes} bytes ({reasons})"
        )
    else:
        yield "    Undecodable sessions: 0"
    if report.keys_listed is not None:
        yield f"    Listed keys not found: {report.keys_not_found} of {report.keys_listed}"


def printable(text: str) -> str:
    """``text``, with anything that could break a line of the report escaped."""
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
