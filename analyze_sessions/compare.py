"""
What changed since an earlier run: this run's report against an earlier
JSON report (``--compare``), of schema version 1 or 2.

Keys are compared by pattern (``search_*``), as version 2 reports them:
version 1 reports, and reports made with ``--show-keys``, name each key,
and their keys are taken to their patterns first, so that a report is
compared the same way whatever it was made with; tokens are never shown.
The earlier report is a file anyone who could write there may have
forged: it is read bounded, checked against what this module reads of it,
and every name in it is shown escaped and cut short.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from analyze_sessions.patterns import key_pattern
from analyze_sessions.shards import (
    MAX_REPORT_SIZE,
    ShardReportError,
    read_report_file,
    strict_validator,
    where_in_report,
)
from analyze_sessions.shown import printable
from analyze_sessions.stats import MAX_NAME_LENGTH, OTHER_KEYS

if TYPE_CHECKING:
    from analyze_sessions.report import Report

# How a report's generated_at is written (see report.generated_at()).
GENERATED_AT = "%Y-%m-%dT%H:%M:%SZ"
# The most lines of each list of changes: the keys that grew most, and so on.
MAX_CHANGES = 10
# The options that choose sessions: reports of other choices count other sessions.
_FILTERS = ("bigger_than", "ids_from", "model", "database", "sample", "limit", "depth", "shard")
# What a filter a report leaves out stands for.
_UNSET = {"depth": 0}

_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def _object(**properties: Any) -> dict[str, Any]:
    """A JSON object that must have each of ``properties``, and may have more."""
    return {"type": "object", "required": list(properties), "properties": properties}


# What comparing reads of a report, in schema versions 1 and 2 alike.
COMPARED_SCHEMA: dict[str, Any] = {
    **_object(
        schema_version={"enum": [1, 2]},
        engine={"type": "string"},
        filters={"type": "object", "additionalProperties": {"type": ["string", "number", "null"]}},
        partial={"type": "boolean"},
        sessions=_object(processed=_COUNT),
        stored_bytes=_object(total=_COUNT),
        expired=_object(sessions=_COUNT),
        undecodable=_object(sessions=_COUNT),
        keys={"type": "array", "items": _object(key={"type": "string"}, total_bytes=_COUNT)},
    ),
}
COMPARED_SCHEMA["properties"].update(
    generated_at={
        "type": "string",
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
    },
    owners={
        "type": "array",
        "items": _object(owner={"type": ["string", "null"]}, total_bytes=_COUNT),
    },
)
COMPARED_SCHEMA["properties"]["keys"]["items"]["properties"]["grouped"] = {"type": "boolean"}


class CompareError(ValueError):
    """An earlier report that cannot be compared with; the message says why, quoting none of it."""


@dataclass(frozen=True)
class Change:
    """A number then and now."""

    before: int
    after: int

    @property
    def change(self) -> int:
        return self.after - self.before

    @property
    def percent(self) -> Decimal | None:
        """The change as a percentage of before, to one decimal; None from nothing."""
        if self.before == 0:
            return None
        return (Decimal(self.change) * 100 / self.before).quantize(
            Decimal("0.1"), rounding=ROUND_HALF_UP
        )


@dataclass(frozen=True)
class LineChange:
    """The bytes of one key or pattern (``grouped``), or one app, then and now."""

    name: str | None
    before: int
    after: int
    grouped: bool = False

    @property
    def change(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class Comparison:
    """What changed between an earlier report and this run's."""

    generated_at: str | None  # None where the earlier report does not say.
    partial: bool  # The earlier run was interrupted.
    sessions: Change
    stored_bytes: Change
    expired_sessions: Change
    undecodable_sessions: Change
    keys_grew: tuple[LineChange, ...]
    keys_shrank: tuple[LineChange, ...]
    new_keys: tuple[LineChange, ...]
    new_key_count: int
    gone_keys: tuple[LineChange, ...]
    gone_key_count: int
    # None where the earlier report (schema version 1) names no apps.
    owners_grew: tuple[LineChange, ...] | None
    owners_shrank: tuple[LineChange, ...] | None

    def totals(self) -> list[tuple[str, Change]]:
        return [
            ("sessions", self.sessions),
            ("stored_bytes", self.stored_bytes),
            ("expired_sessions", self.expired_sessions),
            ("undecodable_sessions", self.undecodable_sessions),
        ]


def read_earlier_report(path: str, *, max_size: int = MAX_REPORT_SIZE) -> dict[str, Any]:
    """The earlier JSON report at ``path``, checked to hold what comparing reads."""
    shown = printable(path)  # A path may hold anything: it is shown escaped.
    try:
        text = read_report_file(path, max_size, doing="compare with", report="report")
    except ShardReportError as error:
        raise CompareError(str(error)) from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        raise CompareError(
            f"Cannot compare with '{shown}': it is not a JSON report (made with --format json "
            f"or --save-json)."
        ) from None
    problem = next(iter(_validator().iter_errors(document)), None)
    if problem is not None:
        raise CompareError(
            f"Cannot compare with '{shown}': it is not a JSON report of schema version 1 or 2 "
            f"({where_in_report(problem)} is not as a report has it)."
        )
    if "generated_at" in document:
        try:
            datetime.strptime(document["generated_at"], GENERATED_AT)
        except ValueError:
            raise CompareError(
                f"Cannot compare with '{shown}': its generated_at is no date and "
                f"time the calendar has."
            ) from None
    return dict(document)


def check_comparable(
    document: dict[str, Any], path: str, *, engine: str, filters: dict[str, Any]
) -> None:
    """Refuse an earlier report of another engine, or of sessions chosen another way."""
    shown = printable(path)  # A path may hold anything: it is shown escaped.
    if document["engine"] != engine:
        raise CompareError(
            f"Cannot compare with '{shown}': it is a report of another session engine than "
            f"'{engine}'."
        )
    earlier = document["filters"]
    differ = [
        name
        for name in _FILTERS
        if str(earlier.get(name, _UNSET.get(name))) != str(filters.get(name, _UNSET.get(name)))
    ]
    if differ:
        options = ", ".join(f"--{name.replace('_', '-')}" for name in differ)
        raise CompareError(
            f"Cannot compare with '{shown}': its sessions were chosen with other options "
            f"({options}), so the numbers would not measure the same sessions."
        )


def compare(document: dict[str, Any], report: Report) -> Comparison:
    """What changed from the earlier report ``document`` to ``report``."""
    before = _by_pattern(
        (row["key"], row.get("grouped", False), row["total_bytes"]) for row in document["keys"]
    )
    after = _by_pattern((line.key, line.grouped, line.total_bytes) for line in report.keys)
    both = [
        LineChange(name, before[name][1], after[name][1], grouped=after[name][0])
        for name in before.keys() & after.keys()
    ]
    new = [
        LineChange(name, 0, bytes_, grouped)
        for name, (grouped, bytes_) in after.items()
        if name not in before
    ]
    gone = [
        LineChange(name, bytes_, 0, grouped)
        for name, (grouped, bytes_) in before.items()
        if name not in after
    ]
    owners_grew = owners_shrank = None
    if "owners" in document:
        then = _owner_bytes((row["owner"], row["total_bytes"]) for row in document["owners"])
        now = _owner_bytes((line.owner, line.total_bytes) for line in report.owners)
        owners = [
            LineChange(owner, then.get(owner, 0), now.get(owner, 0))
            for owner in then.keys() | now.keys()
        ]
        owners_grew, owners_shrank = _most(owners)
    keys_grew, keys_shrank = _most(both)
    return Comparison(
        generated_at=document.get("generated_at"),
        partial=document["partial"],
        sessions=Change(document["sessions"]["processed"], report.processed),
        stored_bytes=Change(document["stored_bytes"]["total"], report.stored_bytes),
        expired_sessions=Change(document["expired"]["sessions"], report.expired_sessions),
        undecodable_sessions=Change(
            document["undecodable"]["sessions"], report.undecodable_sessions
        ),
        keys_grew=keys_grew,
        keys_shrank=keys_shrank,
        new_keys=tuple(sorted(new, key=lambda line: (-line.after, line.name or ""))[:MAX_CHANGES]),
        new_key_count=len(new),
        gone_keys=tuple(
            sorted(gone, key=lambda line: (-line.before, line.name or ""))[:MAX_CHANGES]
        ),
        gone_key_count=len(gone),
        owners_grew=owners_grew,
        owners_shrank=owners_shrank,
    )


def _by_pattern(lines: Any) -> dict[str, tuple[bool, int]]:
    """Bytes by key pattern, and whether each stands for keys other than its name."""
    found: dict[str, tuple[bool, int]] = {}
    for key, grouped, total_bytes in lines:
        if grouped or key == OTHER_KEYS:
            name = key
        else:
            name = key_pattern(key).pattern
            grouped = name != key
        if len(name) > MAX_NAME_LENGTH:
            name = f"{name[:MAX_NAME_LENGTH]}\u2026"
        was_grouped, bytes_ = found.get(name, (False, 0))
        found[name] = (was_grouped or grouped, bytes_ + total_bytes)
    return found


def _owner_bytes(lines: Any) -> dict[str | None, int]:
    found: dict[str | None, int] = {}
    for owner, total_bytes in lines:
        if owner is not None and len(owner) > MAX_NAME_LENGTH:
            owner = f"{owner[:MAX_NAME_LENGTH]}\u2026"
        found[owner] = found.get(owner, 0) + total_bytes
    return found


def _most(lines: list[LineChange]) -> tuple[tuple[LineChange, ...], tuple[LineChange, ...]]:
    """The lines that grew most, and those that shrank most, at most MAX_CHANGES each."""
    grew = sorted(
        (line for line in lines if line.change > 0),
        key=lambda line: (-line.change, line.name or ""),
    )
    shrank = sorted(
        (line for line in lines if line.change < 0), key=lambda line: (line.change, line.name or "")
    )
    return tuple(grew[:MAX_CHANGES]), tuple(shrank[:MAX_CHANGES])


@functools.cache
def _validator() -> Any:
    return strict_validator(COMPARED_SCHEMA)


def to_json(comparison: Comparison) -> dict[str, Any]:
    """The ``compared_to`` object of the JSON report."""

    def line(change: LineChange, name: str = "key") -> dict[str, Any]:
        shown: dict[str, Any] = {name: change.name}
        if name == "key":
            shown["grouped"] = change.grouped
        return {**shown, "before": change.before, "after": change.after, "change": change.change}

    def lines(changes: tuple[LineChange, ...] | None, name: str = "key") -> list[Any] | None:
        return None if changes is None else [line(change, name) for change in changes]

    changes: dict[str, Any] = {
        name: {
            "before": change.before,
            "after": change.after,
            "change": change.change,
            "percent": None if change.percent is None else float(change.percent),
        }
        for name, change in comparison.totals()
    }
    changes.update(
        keys_grew=lines(comparison.keys_grew),
        keys_shrank=lines(comparison.keys_shrank),
        new_keys={"count": comparison.new_key_count, "largest": lines(comparison.new_keys)},
        gone_keys={"count": comparison.gone_key_count, "largest": lines(comparison.gone_keys)},
        owners_grew=lines(comparison.owners_grew, "owner"),
        owners_shrank=lines(comparison.owners_shrank, "owner"),
    )
    return {
        "generated_at": comparison.generated_at,
        "partial": comparison.partial,
        "changes": changes,
    }
