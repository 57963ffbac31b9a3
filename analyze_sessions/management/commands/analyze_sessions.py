from __future__ import annotations

import dataclasses
import os
import re
import sys
from argparse import ArgumentParser
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from functools import partial
from importlib import metadata
from typing import IO, Any

from django.conf import settings
from django.contrib.sessions.backends import cache as cache_engine
from django.contrib.sessions.backends import cached_db
from django.core.cache import InvalidCacheBackendError, caches
from django.core.cache.backends.memcached import BaseMemcachedCache
from django.core.exceptions import ImproperlyConfigured
from django.core.mail import mail_admins
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from tqdm import tqdm

from analyze_sessions.compare import CompareError, check_comparable, compare, read_earlier_report
from analyze_sessions.metrics import render_openmetrics
from analyze_sessions.owners import installed_owners
from analyze_sessions.pipeline import Plan, open_plan, read, read_in_parallel
from analyze_sessions.queued import (
    SHARD_OPTIONS,
    DeadlinePassed,
    TaskQueueError,
    run_shards,
    shard_list,
    task_backend,
)
from analyze_sessions.report import Report, render_csv, render_json, render_text
from analyze_sessions.saving import SaveError, save_atomically
from analyze_sessions.shards import (
    EVERY_KEY,
    MAX_SHARDS,
    InvalidShard,
    ShardReportError,
    key_range,
    merge_shard_reports,
    parse_shard,
    read_shard_report,
)
from analyze_sessions.shards import shard_state as shard_state_of
from analyze_sessions.shown import printable
from analyze_sessions.sizes import InvalidSize, format_size, parse_size
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    Source,
    SourceError,
    UnsupportedEngine,
    first_line,
    session_store_class,
)
from analyze_sessions.sources.database import DatabaseSource
from analyze_sessions.sources.keys import KeysFileError, read_session_keys
from analyze_sessions.stats import Outcome


def app_version() -> str:
    """This app's version, as installed."""
    try:
        return metadata.version("django-analyze-sessions")
    except metadata.PackageNotFoundError:  # Run from a checkout on the path.
        return "unknown (not installed)"


# Bounds that keep a typo from holding a run, or a database, for ever.
MAX_BATCH_SIZE = 100_000
MAX_SLEEP_TIME = 3600.0
MAX_TOP = 1000
DEFAULT_TOP = "10"
# The options that choose which sessions are read, and how, with their
# defaults: --merge reads none, so they are refused with it.
READING_OPTIONS = {
    "bigger_than": None,
    "ids_from": None,
    "model": None,
    "sample": None,
    "limit": None,
    "depth": "0",
    "jobs": "1",
    "shard": None,
    "tasks": None,
    "max_session_size": None,
    "batch_size": "1000",
    "sleep_time": "0",
    "database": DEFAULT_DB_ALIAS,
}
MAX_DEPTH = 10
MAX_JOBS = 64
DEFAULT_TASK_BACKEND = "default"
DEFAULT_TASK_TIMEOUT = 3600
MAX_TASK_TIMEOUT = 7 * 24 * 3600
# What a database's LENGTH() can be compared with everywhere: PostgreSQL's
# is a 32-bit integer, and no session engine keeps 2 GiB in one session.
MAX_BIGGER_THAN = 2**31 - 1
MIN_SESSION_SIZE_BOUND = 1024
MAX_SESSION_SIZE_BOUND = 1024**3
# The exit status of a process killed by SIGPIPE, as shells report it.
BROKEN_PIPE = 128 + 13


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

    def get_version(self) -> str:
        """The app's version, which ``--version`` prints, rather than Django's."""
        return app_version()

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
            choices=("text", "json", "csv", "openmetrics"),
            default="text",
            help=(
                "Write the report as text (the default), JSON, CSV with a row per key, "
                "or OpenMetrics text for Prometheus."
            ),
        )
        parser.add_argument(
            "--save-json",
            metavar="PATH",
            help=(
                "Also save the JSON report to PATH, whatever --format says: written "
                "whole to a new file, then renamed over PATH."
            ),
        )
        parser.add_argument(
            "--save-metrics",
            metavar="PATH",
            help=(
                "Also save the report as OpenMetrics text to PATH, whatever --format says, "
                "for node_exporter's textfile collector: written whole, then renamed."
            ),
        )
        parser.add_argument(
            "--compare",
            metavar="PATH",
            help=(
                "Say what changed since the run whose JSON report is at PATH "
                "(--save-json's, or --format json's): sessions, bytes, and the keys "
                "and apps whose bytes changed most."
            ),
        )
        parser.add_argument(
            "--top",
            default=None,
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
            help=(
                "Show whole session keys, not their first 6 characters, and every "
                "session key by name, tokens included, rather than by pattern."
            ),
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
            "--tasks",
            metavar="N",
            help=(
                "Read the sessions in N shards, each a task on the workers of the site's "
                "task queue (django.tasks), and merge their reports."
            ),
        )
        parser.add_argument(
            "--task-backend",
            default=DEFAULT_TASK_BACKEND,
            metavar="ALIAS",
            help='With --tasks, the backend of the TASKS setting to use. Defaults to "default".',
        )
        parser.add_argument(
            "--task-timeout",
            default=str(DEFAULT_TASK_TIMEOUT),
            metavar="SECONDS",
            help=(
                "With --tasks, how long to wait for the shards before reporting those that "
                f"finished: more than 0, up to a week. Defaults to {DEFAULT_TASK_TIMEOUT}, an hour."
            ),
        )
        parser.add_argument(
            "--max-session-size",
            metavar="SIZE",
            help=(
                "Count sessions stored in more than SIZE, or that decompress to more, "
                "as too large, without reading them whole: from 1KiB to 1GiB. "
                "Defaults to 16MiB."
            ),
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
        try:
            self._handle(options)
        except KeyboardInterrupt:  # Where no partial report could be made: while starting.
            raise CommandError("Interrupted.", returncode=130) from None
        except DeadlinePassed:  # Past --task-timeout, where only an alarm could stop the run.
            raise CommandError("--task-timeout passed before the shards were gathered.") from None

    def _handle(self, options: dict[str, Any]) -> None:
        _check_saving(options)
        if options.get("tasks") is None:
            for name, default in (
                ("task_backend", DEFAULT_TASK_BACKEND),
                ("task_timeout", str(DEFAULT_TASK_TIMEOUT)),
            ):
                if _is_given(options, name, default):
                    raise CommandError(f"{_flag(name)} applies with --tasks only.")
        if options["mail_admins"] and not settings.ADMINS:
            raise CommandError("--mail-admins needs someone to mail: the ADMINS setting is empty.")
        if options["merge"]:
            given = [
                _flag(name)
                for name, default in READING_OPTIONS.items()
                if _is_given(options, name, default)
            ]
            if given:
                raise CommandError(
                    f"--merge reads no sessions, so {', '.join(given)} cannot apply: the shards "
                    f"were read with their own options."
                )
            outcome, document = self._merged(options["merge"], show_keys=options["show_keys"])
            earlier = self._earlier(
                options, engine=document["engine"], filters={**document["filters"], "shard": None}
            )
            if options["top"] is not None:
                self._narrow_top(outcome, options["top"])
            report = Report.from_stats(
                outcome.stats,
                **_counts(outcome),
                engine=document["engine"],
                filters={**document["filters"], "shard": None},
                depth=document["filters"].get("depth") or 0,
                disk=document.get("disk"),
                memcached=document["limits"]["over_memcached_limit"] is not None,
            )
            self._write(self._compared(report, earlier), options, outcome)
            return
        if options.get("tasks") is not None:
            self._read_in_tasks(options)
            return
        plan, filters = self._plan(options)
        jobs = whole_number("--jobs", options["jobs"], highest=MAX_JOBS)
        shard, shards = (0, 1) if options["shard"] is None else self._shard(options["shard"])
        # Before the scan, which a report that cannot be compared with would waste.
        earlier = self._earlier(
            options, engine=plan.engine, filters={**filters, "shard": options["shard"]}
        )
        try:
            source = open_plan(plan, key_range(shard, shards))
            # After the source, whose refusals say more than the engine's own.
            _check_engine(plan.engine, plan.store_class)
        except UnsupportedEngine as error:
            raise CommandError(str(error)) from error
        try:
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
                # Each job reads its part of this shard's keys, or on SQLite
                # its part of the table, which it can seek to.
                rowids = source.rowid_parts(jobs)
                if rowids is not None:
                    ranges = [key_range(shard, shards)] * jobs
                else:
                    ranges = [key_range(shard * jobs + job, shards * jobs) for job in range(jobs)]
                outcome = read_in_parallel(plan, ranges, rowids)
            else:
                try:
                    progress = self._progress(options["verbosity"], source, plan)
                except KeyboardInterrupt:  # While the rows were counted: none read.
                    outcome = Outcome(plan.stats(), partial=True)
                else:
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
        finally:
            source.close()
        report = Report.from_stats(
            outcome.stats,
            **_counts(outcome),
            engine=plan.engine,
            filters={**filters, "shard": options["shard"]},
            depth=plan.depth,
            disk=disk,
            memcached=_keeps_sessions_in_memcached(plan.store_class),
            cached=issubclass(plan.store_class, cache_engine.SessionStore),
            max_session_size=plan.max_size,
        )
        report = self._compared(report, earlier)
        self._write(report, options, outcome, state=options["shard"] is not None)

    def _read_in_tasks(self, options: dict[str, Any]) -> None:
        """--tasks N: the shards read on the site's task queue, waited for, and merged."""
        count = whole_number("--tasks", options["tasks"], highest=MAX_SHARDS)
        timeout = seconds("--task-timeout", options["task_timeout"], highest=MAX_TASK_TIMEOUT)
        if not timeout:
            raise CommandError("--task-timeout must be more than 0 seconds.")
        given = {
            _flag(name): why
            for name, default, why in _NOT_WITH_TASKS
            if _is_given(options, name, default)
        }
        if given:
            raise CommandError(
                f"--tasks cannot go with {', '.join(given)}: {'; '.join(given.values())}."
            )
        if options["show_keys"]:
            raise CommandError(
                "--tasks cannot go with --show-keys: the shards' reports would keep whole "
                "session keys in the task queue, for whoever reads it; use --shard and --merge."
            )
        plan, filters = self._plan(options)
        filters = {**filters, "shard": None}  # What the merged report says it was read with.
        earlier = self._earlier(options, engine=plan.engine, filters=filters)
        try:
            # Here first, so that the workers are sent nothing this store refuses.
            open_plan(plan).close()
            _check_engine(plan.engine, plan.store_class)
            shard_task = task_backend(options["task_backend"])
        except (UnsupportedEngine, TaskQueueError) as error:
            raise CommandError(str(error)) from error
        progress = None
        if options["verbosity"] >= 1 and self.stderr.isatty():
            stream: Any = self.stderr._out
            progress = tqdm(file=stream, total=count, unit=" shards", desc="Shards", leave=False)
        try:
            collected = run_shards(
                shard_task,
                count,
                {
                    name: None if value is None else str(value)
                    for name, value in options.items()
                    if name in SHARD_OPTIONS
                },
                engine=plan.engine,
                filters=filters,
                top=plan.top,
                timeout=timeout,
                progress=None if progress is None else progress.update,
            )
        except TaskQueueError as error:
            raise CommandError(str(error)) from error
        finally:
            if progress is not None:
                progress.close()
        problems = collected.sentence()
        if collected.outcome is None:
            if collected.interrupted:
                raise CommandError(
                    f"Interrupted before any shard finished: {collected.interruption()}."
                    f"{' ' if problems else ''}{problems}",
                    returncode=130,
                )
            raise CommandError(f"{problems} No shard finished, so there is no report.")
        outcome = collected.outcome
        unfinished = collected.unfinished
        outcome.partial = outcome.partial or bool(unfinished)
        if problems:
            outcome.failure = problems
        report = Report.from_stats(
            outcome.stats,
            **_counts(outcome),
            engine=plan.engine,
            filters=filters,
            depth=plan.depth,
            disk=collected.disk,
            memcached=_keeps_sessions_in_memcached(plan.store_class),
            cached=issubclass(plan.store_class, cache_engine.SessionStore),
            max_session_size=plan.max_size,
            unfinished=shard_list(unfinished, count) if unfinished else "",
        )
        covers = "the shards that finished"
        if collected.interrupted:
            covers += f"; {collected.interruption()}"
        self._write(self._compared(report, earlier), options, outcome, covers=covers)

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
                bigger_than = size_option(
                    "--bigger-than", options["bigger_than"], lowest=0, highest=MAX_BIGGER_THAN
                )
            max_size = DEFAULT_MAX_SESSION_SIZE
            if options["max_session_size"] is not None:
                max_size = size_option(
                    "--max-session-size",
                    options["max_session_size"],
                    lowest=MIN_SESSION_SIZE_BOUND,
                    highest=MAX_SESSION_SIZE_BOUND,
                )
            if options["model"] is not None and not _MODEL_LABEL.fullmatch(options["model"]):
                raise CommandError(
                    f"Invalid --model {_shown(options['model'])}: give app_label.ModelName, "
                    f"for example sessions.Session."
                )
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
                top=whole_number(
                    "--top",
                    DEFAULT_TOP if options["top"] is None else options["top"],
                    highest=MAX_TOP,
                    lowest=0,
                ),
                # Aware whatever USE_TZ says, as every source's expiries are.
                now=datetime.now(timezone.utc),
                max_size=max_size,
                show_keys=options["show_keys"],
                owners=installed_owners(),
            )
            if options["ids_from"] is not None:
                stdin: IO[Any] = options.get("stdin") or sys.stdin
                plan.keys = read_session_keys(options["ids_from"], stdin)
                if not plan.keys:
                    named = (
                        "Standard input"
                        if options["ids_from"] == "-"
                        else f"The ids file '{printable(options['ids_from'])}'"
                    )
                    self.stderr.write(f"{named} lists no session keys, so none is analyzed.")
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

    def _earlier(
        self, options: dict[str, Any], *, engine: str, filters: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The earlier report --compare names, checked to be comparable with this run."""
        path = options.get("compare")
        if path is None:
            return None
        if options["format"] in ("csv", "openmetrics"):
            raise CommandError(
                f"--compare says what changed in the text and JSON reports: --format "
                f"{options['format']} shows this run only."
            )
        try:
            document = read_earlier_report(path)
            check_comparable(document, path, engine=engine, filters=filters)
        except CompareError as error:
            raise CommandError(str(error)) from error
        return document

    def _compared(self, report: Report, earlier: dict[str, Any] | None) -> Report:
        if earlier is None:
            return report
        return dataclasses.replace(report, compared=compare(earlier, report))

    def _shard(self, text: str) -> tuple[int, int]:
        try:
            return parse_shard(text)
        except InvalidShard as error:
            raise CommandError(str(error)) from error

    def _narrow_top(self, outcome: Outcome, given: str) -> None:
        """Keep the ``--top`` largest sessions and users of merged shards, of those they kept."""
        top = whole_number("--top", given, highest=MAX_TOP, lowest=0)
        kept = outcome.stats.top
        if top > kept:
            raise CommandError(
                f"The shards kept their {kept} largest sessions and users (--top {kept} when "
                f"they were read): --top can be at most {kept} with --merge."
            )
        outcome.stats.keep_top(top)

    def _merged(self, paths: list[str], *, show_keys: bool) -> tuple[Outcome, dict[str, Any]]:
        """
        The outcome of the shards whose JSON reports are at ``paths``, and
        the first report, for what the shards share (engine, filters, disk).
        """
        try:
            reports = [read_shard_report(path) for path in paths]
            return merge_shard_reports(reports, show_keys=show_keys), reports[0].document
        except ShardReportError as error:
            raise CommandError(str(error)) from error

    def _write(
        self,
        report: Report,
        options: dict[str, Any],
        outcome: Outcome,
        state: bool = False,
        covers: str = "the sessions read before",
    ) -> None:
        shard_state = None
        if state:
            shard_state = shard_state_of(outcome, show_keys=options["show_keys"])
        reader_gone = False
        if options["mail_admins"]:
            self._mail(report, human=options["human"], show_keys=options["show_keys"])
        else:
            try:
                for line in self._render(report, options, shard_state):
                    self.stdout.write(line)
                self.stdout.flush()
            except BrokenPipeError:  # The files are saved all the same.
                reader_gone = True
        # After the report is out: a file that cannot be written loses nothing
        # else. The report of an interrupted run does not replace last week's.
        saving = [option for option in ("save_json", "save_metrics") if options.get(option)]
        if outcome.partial:
            saving = []
        saved: list[tuple[str, str, Callable[[], Iterator[str]]]] = [
            (
                "save_json",
                "JSON report",
                partial(render_json, report, show_keys=options["show_keys"], state=shard_state),
            ),
            ("save_metrics", "metrics", partial(render_openmetrics, report)),
        ]
        for option, what, lines in saved:
            if option in saving:
                try:
                    save_atomically(options[option], lines(), what=what)
                except SaveError as error:
                    raise CommandError(str(error)) from error
        if reader_gone:
            _reader_gone()
        kept = ""
        if outcome.partial and (options.get("save_json") or options.get("save_metrics")):
            kept = " The files it would save were left as they were."
        if outcome.failure is not None:
            raise CommandError(f"{outcome.failure} The report covers {covers}.{kept}")
        if outcome.partial:
            raise CommandError(f"Interrupted: the report covers {covers}.{kept}", returncode=130)

    def _render(
        self, report: Report, options: dict[str, Any], state: dict[str, Any] | None = None
    ) -> Iterator[str]:
        if options["format"] == "json":
            return render_json(report, show_keys=options["show_keys"], state=state)
        if options["format"] == "csv":
            return render_csv(report)
        if options["format"] == "openmetrics":
            return render_openmetrics(report)
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

    def _progress(self, verbosity: int, source: Source, plan: Plan) -> Any:
        """
        A progress bar on stderr, when a person is watching it. Where the
        scan reads a whole table, it counts the rows first, for the bar's
        total and the time left: one query more, only for a person.
        """
        if verbosity < 1 or not self.stderr.isatty():
            return None
        total = None
        whole_table = plan.keys is None and plan.bigger_than is None and plan.limit is None
        if isinstance(source, DatabaseSource) and whole_table and source.key_range == EVERY_KEY:
            try:
                total = source.total_sessions()
            except SourceError:  # The scan says why, in its words.
                pass
        stream: Any = self.stderr._out
        return tqdm(
            file=stream, total=total, unit=" sessions", desc="Reading sessions", leave=False
        )


def _reader_gone() -> None:
    """
    Whoever read standard output stopped (``| head``): stop quietly, as
    Unix tools do, with the status of a process that SIGPIPE ended. What
    is still buffered goes nowhere, rather than into a traceback at exit.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # Standard output is no file: nothing is left to flush.
        pass
    raise SystemExit(BROKEN_PIPE)


def _check_saving(options: dict[str, Any]) -> None:
    """Refuse, before any scan, files that --save-json and --save-metrics cannot be."""
    paths = {}
    for option in ("save_json", "save_metrics"):
        path = options.get(option)
        if path is None:
            continue
        flag = _flag(option)
        if path in ("", "-"):
            raise CommandError(
                f"{flag} saves to a file: give its path (--format prints to standard output)."
            )
        paths[flag] = os.path.abspath(path)
    if len(paths) == 2 and len(set(paths.values())) == 1:
        raise CommandError("--save-json and --save-metrics cannot save to the same file.")


def _check_engine(engine: str, store_class: type[Any]) -> None:
    """Make the engine's store once, so that a setting it lacks is one sentence."""
    try:
        store_class()
    except InvalidCacheBackendError as error:
        raise UnsupportedEngine(
            f"Cannot use session engine '{engine}': SESSION_CACHE_ALIAS names the cache "
            f"'{settings.SESSION_CACHE_ALIAS}', but CACHES has no such cache."
        ) from error
    except ImproperlyConfigured as error:  # Django's own sentences say what to set.
        raise UnsupportedEngine(str(error)) from error
    except Exception as error:  # Whatever else the engine raises for its settings.
        raise UnsupportedEngine(
            f"Cannot use session engine '{engine}': {first_line(error)}."
        ) from error


def _counts(outcome: Outcome) -> dict[str, Any]:
    return {
        "total_sessions": outcome.total_sessions,
        "keys_listed": outcome.keys_listed,
        "keys_not_found": outcome.keys_not_found,
        "unreadable": outcome.unreadable,
        "sessions_gone": outcome.sessions_gone,
        "unreadable_expiry": outcome.unreadable_expiry,
        "partial": outcome.partial,
    }


def _keeps_sessions_in_memcached(store_class: type[Any]) -> bool:
    if not issubclass(store_class, (cache_engine.SessionStore, cached_db.SessionStore)):
        return False
    return isinstance(caches[settings.SESSION_CACHE_ALIAS], BaseMemcachedCache)


def _is_given(options: dict[str, Any], name: str, default: str | None) -> bool:
    """Whether option ``name`` was given, as on the command line or by call_command() (jobs=1)."""
    return options.get(name) is not None and str(options[name]) != default


def _flag(name: str) -> str:
    """An option's name as given on the command line: ``--task-backend``."""
    return f"--{name.replace('_', '-')}"


# The options --tasks refuses, with their defaults, and why.
_NOT_WITH_TASKS = (
    ("shard", None, "--tasks makes the shards itself"),
    ("jobs", "1", "each task reads its shard in one process"),
    ("ids_from", None, "the workers cannot read this machine's files"),
    ("limit", None, "each task would stop at a limit of its own"),
)

_MODEL_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")


def _shown(value: object) -> str:
    """An option's value as an error message quotes it: cut short if long."""
    text = str(value)
    return f"'{text}'" if len(text) <= 40 else f"'{text[:40]}\u2026'"


def whole_number(option: str, value: str | int, *, highest: int, lowest: int = 1) -> int:
    try:
        number = int(value) if len(str(value)) <= 40 else lowest - 1
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise CommandError(
            f"{option} must be a whole number from {lowest} to {highest}, not {_shown(value)}."
        )
    return number


def size_option(option: str, value: str, *, lowest: int, highest: int) -> int:
    """A size option's bytes, from ``lowest`` to ``highest``."""
    size = parse_size(value)
    if not lowest <= size <= highest:
        raise CommandError(
            f"{option} must be from {format_size(lowest)} to {format_size(highest)} "
            f"({highest} bytes), not {_shown(value)}."
        )
    return size


def seconds(option: str, value: str | float, *, highest: float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= highest:  # Also false for NaN.
        raise CommandError(
            f"{option} must be a number of seconds from 0 to {highest:g}, not {_shown(value)}."
        )
    return number


def rate(option: str, value: str | float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not 0 < number <= 1:
        raise CommandError(f"{option} must be a number above 0 and at most 1, not {_shown(value)}.")
    return number
