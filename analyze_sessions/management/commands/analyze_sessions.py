from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from collections.abc import Iterator
from typing import IO, Any

from django.conf import settings
from django.contrib.sessions.backends import cache as cache_engine
from django.contrib.sessions.backends import cached_db
from django.core.cache import caches
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.mail import mail_admins
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils import timezone
from tqdm import tqdm

from analyze_sessions.pipeline import Outcome, Plan, open_plan, read, read_in_parallel
from analyze_sessions.report import Report, render_csv, render_json, render_text
from analyze_sessions.shards import InvalidShard, key_range, parse_shard
from analyze_sessions.sizes import InvalidSize, format_size, parse_size
from analyze_sessions.sources import UnsupportedEngine, session_store_class
from analyze_sessions.sources.database import DatabaseSource
from analyze_sessions.sources.keys import KeysFileError, read_session_keys
from analyze_sessions.stats import from_state, to_state

# Bounds that keep a typo from holding a run, or a database, for ever.
MAX_BATCH_SIZE = 100_000
MAX_SLEEP_TIME = 3600.0
MAX_TOP = 1000
MAX_DEPTH = 10
MAX_JOBS = 64


class Command(BaseCommand):
    help = (
        "Report how much space sessions take: how many there are, how big they "
        "are, and which keys take the space. Never writes to the session store."
    )
    # call_command(..., stdin=stream) stands in for standard input.
    stealth_options = ("stdin",)
    # System checks connect to every configured database on some backends;
    # reading one must not depend on whether the others are up.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--bigger-than",
            metavar="SIZE",
            help=(
                "Only analyze sessions whose stored size is greater than SIZE: "
                "bytes, or a number with a unit (15KB, 15KiB, 1.5MB, 2M)."
            ),
        )
        parser.add_argument(
            "--ids-from",
            metavar="PATH",
            help=(
                "Only analyze the sessions whose keys are listed in PATH, one "
                "per line; '-' reads them from standard input."
            ),
        )
        parser.add_argument(
            "--model",
            metavar="APP_LABEL.MODEL",
            help=(
                "Read sessions from this model, for session engines that keep "
                "them in a model of their own without saying which."
            ),
        )
        parser.add_argument(
            "--sample",
            metavar="RATE",
            help="Analyze only this share of sessions, chosen by key: 0.1 is one in ten.",
        )
        parser.add_argument("--limit", metavar="N", help="Stop after analyzing N sessions.")
        parser.add_argument(
            "--format",
            choices=("text", "json", "csv"),
            default="text",
            help="Write the report as text (the default), JSON, or CSV with a row per key.",
        )
        parser.add_argument(
            "--top",
            default="10",
            metavar="N",
            help="List the N largest sessions and the N users with most. Defaults to 10.",
        )
        parser.add_argument(
            "--depth",
            default="0",
            metavar="N",
            help="Break dict and list values down N levels into their parts. Defaults to 0.",
        )
        parser.add_argument(
            "--human",
            action="store_true",
            help="Show sizes as 15.4 KiB rather than bytes, past the first lines.",
        )
        parser.add_argument(
            "--show-keys",
            action="store_true",
            help="Show whole session keys, not their first 6 characters.",
        )
        parser.add_argument(
            "--mail-admins",
            action="store_true",
            help="Mail the text report to the ADMINS, for cron, instead of printing it.",
        )
        parser.add_argument(
            "--jobs",
            default="1",
            metavar="N",
            help=(
                "Read and decode in N processes, each with its own database "
                "connection and its part of the keys. Defaults to 1."
            ),
        )
        parser.add_argument(
            "--shard",
            metavar="K/N",
            help=(
                "Analyze only the K-th of N parts of the keys, so that N machines "
                "can share a store; with --format json, merge them with --merge."
            ),
        )
        parser.add_argument(
            "--merge",
            nargs="+",
            metavar="REPORT",
            help="Merge the JSON reports of shards into the report of them all.",
        )
        parser.add_argument(
            "--batch-size",
            default="1000",
            metavar="N",
            help=f"Read at most N sessions per query, up to {MAX_BATCH_SIZE}. Defaults to 1000.",
        )
        parser.add_argument(
            "--sleep-time",
            default="0",
            metavar="SECONDS",
            help="Pause this many seconds between two queries, up to an hour. Defaults to 0.",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            choices=tuple(connections),
            help=(
                'Nominates a database to read sessions from. Defaults to the "default" database.'
            ),
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["mail_admins"] and not settings.ADMINS:
            raise CommandError("--mail-admins needs someone to mail: the ADMINS setting is empty.")
        if options["merge"]:
            outcome, document = self._merged(options["merge"])
            report = Report.from_stats(
                outcome.stats,
                **_counts(outcome),
                engine=document["engine"],
                filters={**document["filters"], "shard": None},
                depth=document["filters"].get("depth") or 0,
                disk=document.get("disk"),
                memcached=document["limits"]["over_memcached_limit"] is not None,
            )
            self._write(report, options, outcome)
            return
        plan, filters = self._plan(options)
        jobs = whole_number("--jobs", options["jobs"], highest=MAX_JOBS)
        shard, shards = (0, 1) if options["shard"] is None else self._shard(options["shard"])
        try:
            source = open_plan(plan, key_range(shard, shards))
        except UnsupportedEngine as error:
            raise CommandError(str(error)) from error
        if jobs > 1:
            if not isinstance(source, DatabaseSource):
                raise CommandError("--jobs works with sessions kept in a database only.")
            if plan.limit is not None:
                raise CommandError("--limit and --jobs do not go together: pick one.")
            if connections[plan.using].settings_dict.get("OPTIONS", {}).get("pool"):
                raise CommandError(
                    "--jobs cannot share a database connection pool between processes: "
                    "run it with a database alias that has no OPTIONS['pool']."
                )
            # Each job reads its part of this shard's keys.
            ranges = [key_range(shard * jobs + job, shards * jobs) for job in range(jobs)]
            outcome = read_in_parallel(plan, ranges)
        else:
            progress = self._progress(options["verbosity"])
            try:
                outcome = read(plan, source, None if progress is None else progress.update)
            finally:
                if progress is not None:
                    progress.close()
        if outcome.failure is not None and not outcome.stats.processed:
            raise CommandError(outcome.failure)
        disk = None
        if not outcome.partial and isinstance(source, DatabaseSource):
            disk = source.disk_usage()
        report = Report.from_stats(
            outcome.stats,
            **_counts(outcome),
            engine=plan.engine,
            filters={**filters, "shard": options["shard"]},
            depth=plan.depth,
            disk=disk,
            memcached=_keeps_sessions_in_memcached(plan.store_class),
        )
        self._write(report, options, outcome, state=options["shard"] is not None)

    def _plan(self, options: dict[str, Any]) -> tuple[Plan, dict[str, Any]]:
        """The plan the options make, once they are checked."""
        engine = settings.SESSION_ENGINE
        sample = None if options["sample"] is None else rate("--sample", options["sample"])
        limit = None
        if options["limit"] is not None:
            limit = whole_number("--limit", options["limit"], highest=10**12)
        try:
            bigger_than = None
            if options["bigger_than"] is not None:
                bigger_than = parse_size(options["bigger_than"])
            plan = Plan(
                engine=engine,
                store_class=session_store_class(engine),
                model_label=options["model"],
                using=options["database"],
                bigger_than=bigger_than,
                batch_size=whole_number(
                    "--batch-size", options["batch_size"], highest=MAX_BATCH_SIZE
                ),
                sleep_time=seconds("--sleep-time", options["sleep_time"], highest=MAX_SLEEP_TIME),
                sample=sample,
                limit=limit,
                depth=whole_number("--depth", options["depth"], highest=MAX_DEPTH, lowest=0),
                top=whole_number("--top", options["top"], highest=MAX_TOP, lowest=0),
                now=timezone.now(),
            )
            if options["ids_from"] is not None:
                stdin: IO[Any] = options.get("stdin") or sys.stdin
                plan.keys = read_session_keys(options["ids_from"], stdin)
        except (InvalidSize, UnsupportedEngine, KeysFileError) as error:
            raise CommandError(str(error)) from error
        filters = {
            "bigger_than": bigger_than,
            "ids_from": options["ids_from"],
            "model": options["model"],
            "database": options["database"],
            "sample": sample,
            "limit": limit,
            "depth": plan.depth,
        }
        return plan, filters

    def _shard(self, text: str) -> tuple[int, int]:
        try:
            return parse_shard(text)
        except InvalidShard as error:
            raise CommandError(str(error)) from error

    def _merged(self, paths: list[str]) -> tuple[Outcome, dict[str, Any]]:
        """
        The outcome of the shards whose JSON reports are at ``paths``, and
        the first report, for what the shards share (engine, filters, disk).
        """
        merged: Outcome | None = None
        shards: list[str | None] = []
        for path in paths:
            try:
                with open(path, encoding="utf-8") as report_file:
                    document = json.load(report_file)
                state = document["state"]
                outcome = Outcome(
                    from_state(state),
                    total_sessions=document["sessions"]["total"],
                    keys_listed=state["keys_listed"],
                    keys_not_found=document["sessions"]["not_found"],
                    partial=document["partial"],
                )
            except OSError as error:
                raise CommandError(f"Cannot read report '{path}': {error.strerror}.") from error
            except (ValueError, KeyError, TypeError) as error:
                raise CommandError(
                    f"Cannot merge '{path}': it is not a JSON report of a shard "
                    f"(made with --shard and --format json)."
                ) from error
            shards.append(document["filters"].get("shard"))
            if merged is None:
                merged, first = outcome, document
            else:
                merged.merge(outcome)
        assert merged is not None
        _check_shards(shards)
        return merged, first

    def _write(
        self, report: Report, options: dict[str, Any], outcome: Outcome, state: bool = False
    ) -> None:
        if options["mail_admins"]:
            self._mail(report, human=options["human"], show_keys=options["show_keys"])
        else:
            shard_state = None
            if state:
                shard_state = {
                    **to_state(outcome.stats, show_keys=options["show_keys"]),
                    "keys_listed": outcome.keys_listed,
                }
            for line in self._render(report, options, shard_state):
                self.stdout.write(line)
        if outcome.failure is not None:
            raise CommandError(f"{outcome.failure} The report covers the sessions read before.")
        if outcome.partial:
            raise CommandError(
                "Interrupted: the report covers the sessions read before.", returncode=130
            )

    def _render(
        self, report: Report, options: dict[str, Any], state: dict[str, Any] | None = None
    ) -> Iterator[str]:
        if options["format"] == "json":
            return render_json(report, show_keys=options["show_keys"], state=state)
        if options["format"] == "csv":
            return render_csv(report)
        return render_text(report, human=options["human"], show_keys=options["show_keys"])

    def _mail(self, report: Report, *, human: bool, show_keys: bool) -> None:
        subject = (
            f"Sessions: {report.processed} analyzed, {format_size(report.stored_bytes)} "
            f"stored, {report.expired_sessions} expired, "
            f"{report.undecodable_sessions} undecodable"
        )
        if report.partial:
            subject += " (partial)"
        body = "\n".join(render_text(report, human=human, show_keys=show_keys)) + "\n"
        try:
            mail_admins(subject, body)
        except Exception as error:  # Whatever the mail backend raises.
            raise CommandError(f"Cannot mail the report: {error}.") from error

    def _progress(self, verbosity: int) -> Any:
        """A progress bar on stderr, when a person is watching it."""
        if verbosity < 1 or not self.stderr.isatty():
            return None
        stream: Any = self.stderr._out
        return tqdm(file=stream, unit=" sessions", desc="Reading sessions", leave=False)


def _check_shards(shards: list[str | None]) -> None:
    """Each of N shards, once: anything else would count sessions twice, or miss some."""
    parsed = [parse_shard(shard) for shard in shards if shard is not None]
    counts = {count for _, count in parsed}
    if len(parsed) < len(shards) or len(counts) != 1:
        raise CommandError("Cannot merge: the reports are not the shards of one split (K/N).")
    [count] = counts
    given = sorted(index for index, _ in parsed)
    if given != list(range(count)):
        twice = sorted({index + 1 for index in given if given.count(index) > 1})
        missing = sorted(set(range(1, count + 1)) - {index + 1 for index in given})
        problems = [f"shard {k}/{count} given twice" for k in twice]
        problems += [f"shard {k}/{count} missing" for k in missing]
        raise CommandError(f"Cannot merge: {', '.join(problems)}.")


def _counts(outcome: Outcome) -> dict[str, Any]:
    return {
        "total_sessions": outcome.total_sessions,
        "keys_listed": outcome.keys_listed,
        "keys_not_found": outcome.keys_not_found,
        "partial": outcome.partial,
    }


def _keeps_sessions_in_memcached(store_class: type[Any]) -> bool:
    if not issubclass(store_class, (cache_engine.SessionStore, cached_db.SessionStore)):
        return False
    return isinstance(caches[settings.SESSION_CACHE_ALIAS], BaseMemcachedCache)


def whole_number(option: str, value: str | int, *, highest: int, lowest: int = 1) -> int:
    try:
        number = int(value)
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise CommandError(
            f"{option} must be a whole number from {lowest} to {highest}, not '{value}'."
        )
    return number


def seconds(option: str, value: str | float, *, highest: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= highest:  # Also false for NaN.
        raise CommandError(
            f"{option} must be a number of seconds from 0 to {highest:g}, not '{value}'."
        )
    return number


def rate(option: str, value: str | float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 1:
        raise CommandError(f"{option} must be a number above 0 and at most 1, not '{value}'.")
    return number
