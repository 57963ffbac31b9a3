"""
The report as OpenMetrics text, for Prometheus (``--format openmetrics``,
``--save-metrics`` for node_exporter's textfile collector).

Every metric is a gauge (the state of the store when the run started) or
a histogram, named ``django_sessions_*`` in base units, as Prometheus's
naming conventions have them. Series are bounded whatever the store
holds: a series per app, and per key or pattern for the ``MAX_KEY_SERIES``
largest, the rest summed under one label, so that a store with a million
keys cannot flood a monitoring system. Label values are names anyone
with a session could choose: they are escaped, and never a session key.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from analyze_sessions.decoding import (
    BAD_ENCODING,
    BAD_PAYLOAD,
    BAD_SIGNATURE,
    TOO_COSTLY,
    TOO_LARGE,
)
from analyze_sessions.shown import printable
from analyze_sessions.stats import OTHER_KEYS

if TYPE_CHECKING:
    from analyze_sessions.report import Report
    from analyze_sessions.timeline import Written

PREFIX = "django_sessions"
# The keys and patterns with a series of their own, largest first.
MAX_KEY_SERIES = 50
# The bounds of the histogram's buckets: the same on every run, as rates
# and quantiles over time need, from 15 bytes to 128 MiB by powers of two.
BUCKET_BOUNDS = tuple(2**bits - 1 for bits in range(4, 28))
UNKNOWN_APPS = "(unknown apps)"
UNDECODABLE_REASONS = (BAD_SIGNATURE, BAD_ENCODING, BAD_PAYLOAD, TOO_LARGE, TOO_COSTLY)


def render_openmetrics(report: Report) -> Iterator[str]:
    """The lines of the OpenMetrics exposition of ``report``, ``# EOF`` last."""
    if report.total_sessions is not None:
        yield from _gauge("store_sessions", "Sessions the store holds.", report.total_sessions)
    yield from _gauge("processed_sessions", "Sessions analyzed.", report.processed)
    yield from _gauge(
        "stored_bytes", "Bytes the store holds for the sessions analyzed.", report.stored_bytes
    )
    yield from _gauge(
        "payload_bytes",
        "Serialized bytes of the sessions decoded, before compression and signing.",
        report.payload_bytes,
    )
    yield from _gauge(
        "expired_sessions", "Sessions past their expiry, still stored.", report.expired_sessions
    )
    yield from _gauge(
        "expired_bytes", "Stored bytes of sessions past their expiry.", report.expired_bytes
    )
    undecodable = dict(report.undecodable)
    yield from _family(
        "undecodable_sessions",
        "gauge",
        "Sessions that cannot be decoded, by reason.",
        [
            (f'{{reason="{_label(reason)}"}}', undecodable.get(reason, 0))
            for reason in sorted({*UNDECODABLE_REASONS, *undecodable})
        ],
    )
    yield from _gauge(
        "retired_key_bytes",
        "Stored bytes of sessions signed with a secret key no longer configured.",
        report.unknown_key_bytes,
    )
    yield from _histogram(report)
    owners = _series(
        "owner",
        [
            (UNKNOWN_APPS if line.owner is None else line.owner, line.total_bytes, line.sessions)
            for line in report.owners
        ],
    )
    yield from _family(
        "owner_bytes",
        "gauge",
        "Payload bytes of the keys each app writes.",
        [(labels, total_bytes) for labels, total_bytes, _ in owners],
    )
    yield from _family(
        "owner_sessions",
        "gauge",
        "Sessions that hold a key each app writes.",
        [(labels, sessions) for labels, _, sessions in owners],
    )
    keys = _series("key", _key_series(report))
    yield from _family(
        "key_bytes",
        "gauge",
        f"Payload bytes of each of the {MAX_KEY_SERIES} largest keys or patterns; of the rest "
        f"together under {OTHER_KEYS}.",
        [(labels, total_bytes) for labels, total_bytes, _ in keys],
    )
    yield from _family(
        "key_sessions",
        "gauge",
        f"Sessions that hold each of the {MAX_KEY_SERIES} largest keys or patterns; for the "
        f"rest, the sum of each one's.",
        [(labels, sessions) for labels, _, sessions in keys],
    )
    if report.written is not None:
        yield from _written(report.written)
    started = report.now or datetime.now(timezone.utc)
    yield from _gauge(
        "report_timestamp_seconds",
        "When the run started, as a Unix time.",
        int(started.timestamp()),
    )
    yield from _gauge(
        "report_partial", "1 if the run was interrupted, else 0.", int(report.partial)
    )
    yield "# EOF"


def _written(found: Written) -> Iterator[str]:
    """When the sessions were written, by day and by month, and when they expire."""
    days = [(f'{{date="{name}"}}', sessions, stored) for name, sessions, stored in found.by_day]
    months = [
        (f'{{month="{name}"}}', sessions, stored) for name, sessions, stored in found.by_month
    ]
    expiring = [
        (f'{{within="{within}"}}', sessions, stored) for within, sessions, stored in found.expiring
    ]
    for name, samples, description in (
        ("written_day", days, "last written on each of the last 30 days (UTC)"),
        ("written_month", months, "last written in each month before (UTC)"),
        ("expiring", expiring, "that expire within a day, a week, a month of the run's start"),
    ):
        yield from _family(
            f"{name}_sessions",
            "gauge",
            f"Sessions {description}.",
            [(labels, sessions) for labels, sessions, _ in samples],
        )
        yield from _family(
            f"{name}_bytes",
            "gauge",
            f"Stored bytes of the sessions {description}.",
            [(labels, stored) for labels, _, stored in samples],
        )
    yield from _gauge(
        "unplaced_sessions",
        "Sessions whose last write cannot be told (no expiry, an expiry set as a date, "
        "undecodable).",
        found.unplaced[0],
    )


def _key_series(report: Report) -> list[tuple[str, int, int]]:
    """(name, bytes, sessions) of the largest keys, then of the rest, summed."""
    lines = sorted(report.keys, key=lambda line: (-line.total_bytes, line.key))
    mine = [line for line in lines if line.key != OTHER_KEYS][:MAX_KEY_SERIES]
    kept = {id(line) for line in mine}
    rest = [line for line in lines if id(line) not in kept]
    series = [(line.key, line.total_bytes, line.sessions) for line in mine]
    if rest:
        series.append(
            (
                OTHER_KEYS,
                sum(line.total_bytes for line in rest),
                sum(line.sessions for line in rest),
            )
        )
    return series


def _series(label: str, lines: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """
    The labels and values of ``lines`` (name, bytes, sessions), one series
    a label: names that differ only in what escaping makes alike (a line
    break, and a backslash and an n) are summed, as a series is one only.
    """
    found: dict[str, list[int]] = {}
    for name, total_bytes, sessions in lines:
        counted = found.setdefault(f'{{{label}="{_label(name)}"}}', [0, 0])
        counted[0] += total_bytes
        counted[1] += sessions
    return [(labels, total_bytes, sessions) for labels, (total_bytes, sessions) in found.items()]


def _histogram(report: Report) -> Iterator[str]:
    name = f"{PREFIX}_stored_size_bytes"
    yield f"# TYPE {name} histogram"
    yield f"# UNIT {name} bytes"
    yield f"# HELP {name} Stored sizes of the sessions analyzed."
    for bound in BUCKET_BOUNDS:
        below = sum(count for _, high, count in report.histogram if high <= bound)
        yield f'{name}_bucket{{le="{bound}.0"}} {below}'
    yield f'{name}_bucket{{le="+Inf"}} {report.processed}'
    yield f"{name}_sum {report.stored_bytes}"
    yield f"{name}_count {report.processed}"


def _gauge(name: str, description: str, value: int) -> Iterator[str]:
    return _family(name, "gauge", description, [("", value)])


def _family(
    name: str, kind: str, description: str, samples: list[tuple[str, int]]
) -> Iterator[str]:
    full = f"{PREFIX}_{name}"
    yield f"# TYPE {full} {kind}"
    for unit in ("bytes", "seconds"):
        if full.endswith(f"_{unit}"):
            yield f"# UNIT {full} {unit}"
    yield f"# HELP {full} {description}"
    for labels, value in samples:
        yield f"{full}{labels} {value}"


def _label(value: str) -> str:
    """A label value as OpenMetrics writes it: escaped, after what cannot be shown is."""
    return printable(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
