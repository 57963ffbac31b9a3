"""
The key space cut into ranges, for shards on several machines and jobs on
one; and the reports of shards, read, checked and merged.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
from collections import Counter
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import jsonschema

from analyze_sessions.shown import printable
from analyze_sessions.stats import Outcome, from_state, to_state

# Django makes session keys of these, and they sort the same way in every
# database's collation: digits, then letters.
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_DIGITS = 3
_SPACE = len(ALPHABET) ** _DIGITS

# The most shards a store is cut into: --shard's N, and --tasks'.
MAX_SHARDS = 1000

KeyRange = tuple[str | None, str | None]  # From the first, up to the second; None is open.
EVERY_KEY: KeyRange = (None, None)


class InvalidShard(ValueError):
    """A --shard value that is not K/N; the message says so."""


def key_range(index: int, count: int) -> KeyRange:
    """The ``index``-th (from 0) of ``count`` ranges of about as many random keys each."""
    return _boundary(index, count), _boundary(index + 1, count)


def in_range(key: str, keys: KeyRange) -> bool:
    low, high = keys
    return (low is None or key >= low) and (high is None or key < high)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"``, the second of three shards, as (1, 3): the index from 0, and the count."""
    match = re.fullmatch(r"([0-9]+)/([0-9]+)", text.strip())
    if match is None or not 1 <= int(match[1]) <= int(match[2]) <= MAX_SHARDS:
        raise InvalidShard(
            f"Invalid shard '{text}': give K/N, the K-th of N shards, with 1 <= K <= N "
            f"<= {MAX_SHARDS}, for example 1/3."
        )
    return int(match[1]) - 1, int(match[2])


def _boundary(index: int, count: int) -> str | None:
    if index <= 0 or index >= count:
        return None
    position = index * _SPACE // count
    digits = []
    for _ in range(_DIGITS):
        position, digit = divmod(position, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return "".join(reversed(digits))


# The largest report --merge reads: a shard of a big store, with every
# distinct key and user it saw, fits; an endless file does not.
MAX_REPORT_SIZE = 256 * 1024 * 1024
# And the most items it may hold: the keys and users of some two million
# distinct ones, in under a gigabyte once parsed.
MAX_REPORT_ITEMS = 8_000_000
# What the reports of shards must share to be merged: one store, read one way.
_SHARED = ("schema_version", "engine")


class ShardReportError(ValueError):
    """A report that cannot be merged; the message says which and why, quoting none of it."""


@dataclass
class ShardReport:
    """One shard's JSON report, checked: what it says, and the outcome it carries."""

    document: dict[str, Any]
    outcome: Outcome
    named: str  # Where it came from, as an error's sentence says it.

    @property
    def shard(self) -> tuple[int, int]:
        return parse_shard(self.document["filters"]["shard"])


def read_shard_report(path: str, *, max_size: int = MAX_REPORT_SIZE) -> ShardReport:
    """
    Read the JSON report of a shard at ``path``, and check it against the
    report's schema: a report file may have been made by hand, or forged.
    """
    text = read_report_file(path, max_size, doing="merge", report="report of a shard")
    return shard_report(text, named=f"'{printable(path)}'")


def shard_report(text: bytes | str, *, named: str) -> ShardReport:
    """
    The JSON report of a shard in ``text``, checked against the report's
    schema; ``named`` says where it came from, in the sentence of an error.
    """
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):  # Not JSON; nested past any report's depth.
        raise ShardReportError(
            f"Cannot merge {named}: it is not a JSON report of a shard (made with "
            f"--shard and --format json)."
        ) from None
    version = document.get("schema_version") if isinstance(document, dict) else None
    merged = _validator().schema["properties"]["schema_version"]["const"]
    if type(version) is int and version != merged:
        raise ShardReportError(
            f"Cannot merge {named}: it is a report of schema version "
            f"{min(max(version, 0), 10**6)}, and this version merges version {merged} "
            f"only: run its shard again with this version."
        )
    problem = next(iter(_validator().iter_errors(document)), None)
    if problem is None and not (document.get("filters") or {}).get("shard"):
        raise ShardReportError(
            f"Cannot merge {named}: it is the report of a whole store, not of a shard "
            f"(made with --shard)."
        )
    if problem is not None:
        raise ShardReportError(
            f"Cannot merge {named}: it is not a report of a shard that this version can "
            f"merge ({where_in_report(problem)} is not as the report's schema says)."
        )
    state = document.pop("state")  # Only the outcome is kept of it: it can be large.
    try:
        outcome = Outcome(
            from_state(state),
            total_sessions=document["sessions"]["total"],
            keys_listed=state["keys_listed"],
            keys_not_found=document["sessions"]["not_found"],
            unreadable=Counter(state["unreadable"]),
            sessions_gone=state["sessions_gone"],
            unreadable_expiry=state["unreadable_expiry"],
            partial=document["partial"],
        )
    except (ValueError, TypeError, OverflowError):  # A date that is not one, say.
        raise ShardReportError(
            f"Cannot merge {named}: it is not a report of a shard that this version can "
            f"merge (its state does not hold together)."
        ) from None
    return ShardReport(document, outcome, named)


def merge_shard_reports(reports: list[ShardReport], *, show_keys: bool = False) -> Outcome:
    """
    The outcome of the shards of one split, merged: each of N shards once,
    made of one store, with the same filters, and keys shown by name
    (--show-keys) in all of them or none, as this merge shows them.
    """
    first = reports[0]
    for report in reports:
        if report.outcome.stats.show_keys != show_keys:
            made, asked = ("with", "without") if not show_keys else ("without", "with")
            raise ShardReportError(
                f"Cannot merge {report.named}: it was made {made} --show-keys, and this "
                f"merge is {asked} it; merge it as it was made, or run its shard again."
            )
        differing = [name for name in _SHARED if report.document[name] != first.document[name]]
        filters = {**first.document["filters"], **report.document["filters"]}
        differing += sorted(
            name
            for name in filters
            if name != "shard"
            and report.document["filters"].get(name) != first.document["filters"].get(name)
        )
        if differing:
            raise ShardReportError(
                f"Cannot merge {report.named} with {first.named}: they differ in "
                f"{', '.join(differing)}, so they are not shards of one run."
            )
    _check_split([report.shard for report in reports])
    merged = first.outcome
    for report in reports[1:]:
        merged.merge(report.outcome)
    return merged


def shard_state(outcome: Outcome, *, show_keys: bool) -> dict[str, Any]:
    """What a shard's JSON report carries for --merge: all that the outcome holds."""
    return {
        **to_state(outcome.stats, show_keys=show_keys),
        "keys_listed": outcome.keys_listed,
        "unreadable": dict(outcome.unreadable),
        "sessions_gone": outcome.sessions_gone,
        "unreadable_expiry": outcome.unreadable_expiry,
    }


def _check_split(shards: list[tuple[int, int]]) -> None:
    """Each of N shards, once: anything else would count sessions twice, or miss some."""
    counts = {count for _, count in shards}
    if len(counts) != 1:
        raise ShardReportError("Cannot merge: the reports are not the shards of one split (K/N).")
    [count] = counts
    given = sorted(index for index, _ in shards)
    if given != list(range(count)):
        twice = sorted({index + 1 for index in given if given.count(index) > 1})
        missing = sorted(set(range(1, count + 1)) - {index + 1 for index in given})
        problems = [f"shard {k}/{count} given twice" for k in twice]
        problems += [f"shard {k}/{count} missing" for k in missing]
        raise ShardReportError(f"Cannot merge: {', '.join(problems)}.")


def read_report_file(path: str, max_size: int, *, doing: str, report: str) -> bytes:
    """
    The bytes of the report file at ``path``, to ``doing`` with a
    ``report``: never blocking on a FIFO, never more than a report can be,
    and never more items than parsing can hold.
    """
    shown = printable(path)  # A path may hold anything: it is shown escaped.
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ShardReportError(f"Cannot read report '{shown}': {error.strerror}.") from error
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise ShardReportError(f"Cannot read report '{shown}': it is not a regular file.")
        with os.fdopen(os.dup(descriptor), "rb") as report_file:
            data = report_file.read(max_size + 1)
    except OSError as error:
        raise ShardReportError(f"Cannot read report '{shown}': {error.strerror}.") from error
    finally:
        os.close(descriptor)
    return bounded_report(data, max_size, named=f"'{shown}'", doing=doing, report=report)


def bounded_report(data: bytes, max_size: int, *, named: str, doing: str, report: str) -> bytes:
    """
    ``data``, if it is no larger than ``max_size``, and holds no more items
    than parsing can hold; ``named`` says where it came from.
    """
    if len(data) > max_size:
        raise ShardReportError(
            f"Cannot {doing} {named}: it is larger than any {report} can be "
            f"({max_size // 1024**2} MiB)."
        )
    # Parsed, each item is an object: a report of "[],[],..." would take
    # gigabytes. Counted first, as no report of a real store has as many.
    if data.count(b",") + data.count(b"[") + data.count(b"{") > MAX_REPORT_ITEMS:
        raise ShardReportError(
            f"Cannot {doing} {named}: it holds more than any {report} can "
            f"({MAX_REPORT_ITEMS} items)."
        )
    return data


def strict_validator(schema: dict[str, Any]) -> Any:
    """
    A validator of ``schema`` whose integers are whole numbers written as
    such: JSON Schema takes 2.0 for one, and a forged report's 2.0 would be
    a float wherever it is counted.
    """
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("integer", lambda _, instance: type(instance) is int)
    strict = jsonschema.validators.extend(base, type_checker=checker)  # type: ignore[no-untyped-call]
    return strict(schema)


@functools.cache
def _validator() -> Any:
    schema = json.loads(files("analyze_sessions").joinpath("report.schema.json").read_text())
    return strict_validator(schema)


def where_in_report(error: Any) -> str:
    """
    Where in the report ``error`` is, as a path of the names the schema
    gives (``state.totals.processed``): the report's own names (a key's
    name may be a secret) are shown as ``*``.
    """
    names = _schema_names()
    path = "".join(
        f"[{part}]" if isinstance(part, int) else f".{part if part in names else '*'}"
        for part in error.absolute_path
    )
    return path[1:] if path else "the report as a whole"


@functools.cache
def _schema_names() -> frozenset[str]:
    """Every property name the report's schema defines."""
    names: set[str] = set()

    def collect(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(_validator().schema)
    return frozenset(names)
