from __future__ import annotations

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

from analyze_sessions.decoding import Decoder
from analyze_sessions.pipeline import analyze
from analyze_sessions.report import Report, render_csv, render_json, render_text
from analyze_sessions.sizes import InvalidSize, format_size, parse_size
from analyze_sessions.sources import (
    SourceError,
    UnsupportedEngine,
    open_source,
    session_store_class,
)
from analyze_sessions.sources.keys import KeysFileError, read_session_keys
from analyze_sessions.stats import Stats

# Bounds that keep a typo from holding a run, or a database, for ever.
MAX_BATCH_SIZE = 100_000
MAX_SLEEP_TIME = 3600.0
MAX_TOP = 1000
MAX_DEPTH = 10


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
        started = timezone.now()
        engine = settings.SESSION_ENGINE
        ids_from = options["ids_from"]
        sample = None if options["sample"] is None else rate("--sample", options["sample"])
        limit = None
        if options["limit"] is not None:
            limit = whole_number("--limit", options["limit"], highest=10**12)
        top = whole_number("--top", options["top"], highest=MAX_TOP, lowest=0)
        depth = whole_number("--depth", options["depth"], highest=MAX_DEPTH, lowest=0)
        if options["mail_admins"] and not settings.ADMINS:
            raise CommandError("--mail-admins needs someone to mail: the ADMINS setting is empty.")
        try:
            bigger_than = None
            if options["bigger_than"] is not None:
                bigger_than = parse_size(options["bigger_than"])
            store_class = session_store_class(engine)
            source = open_source(
                engine,
                store_class,
                scanning=ids_from is None,
                model_label=options["model"],
                using=options["database"],
                bigger_than=bigger_than,
                batch_size=whole_number(
                    "--batch-size", options["batch_size"], highest=MAX_BATCH_SIZE
                ),
                sleep_time=seconds("--sleep-time", options["sleep_time"], highest=MAX_SLEEP_TIME),
            )
            stdin: IO[Any] = options.get("stdin") or sys.stdin
            keys = None if ids_from is None else read_session_keys(ids_from, stdin)
        except (InvalidSize, UnsupportedEngine, KeysFileError) as error:
            raise CommandError(str(error)) from error

        decoder = Decoder(store_class, expiry=getattr(source, "expiry", None), depth=depth)
        stats = Stats(now=started, top=top)
        progress = self._progress(options["verbosity"])
        failure: SourceError | None = None
        total_sessions, disk = None, None
        try:
            partial = analyze(
                source.scan() if keys is None else source.lookup(keys),
                decoder,
                stats,
                sample=sample,
                limit=limit,
                on_batch=None if progress is None else progress.update,
            )
            total_sessions = source.total_sessions()
            disk = source.disk_usage() if hasattr(source, "disk_usage") else None
        except SourceError as error:
            # The store went away: what was read is still worth reporting.
            failure, partial = error, True
        finally:
            if progress is not None:
                progress.close()
            _close(source)
        if failure is not None and not stats.processed:
            raise CommandError(str(failure)) from failure

        report = Report.from_stats(
            stats,
            total_sessions=total_sessions,
            keys_listed=None if keys is None else source.keys_listed,
            keys_not_found=None if keys is None else source.keys_not_found,
            engine=engine,
            filters={
                "bigger_than": bigger_than,
                "ids_from": ids_from,
                "model": options["model"],
                "database": options["database"],
                "sample": sample,
                "limit": limit,
            },
            depth=depth,
            disk=disk,
            memcached=_keeps_sessions_in_memcached(store_class),
            partial=partial,
        )
        if options["mail_admins"]:
            self._mail(report, human=options["human"], show_keys=options["show_keys"])
        else:
            for line in self._render(report, options):
                self.stdout.write(line)
        if failure is not None:
            raise CommandError(
                f"{failure} The report covers the sessions read before."
            ) from failure
        if partial:
            raise CommandError(
                "Interrupted: the report covers the sessions read before.", returncode=130
            )

    def _render(self, report: Report, options: dict[str, Any]) -> Iterator[str]:
        if options["format"] == "json":
            return render_json(report, show_keys=options["show_keys"])
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


def _close(source: Any) -> None:
    try:
        source.close()
    except Exception:  # A connection already gone has nothing to put back.
        pass


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
