from __future__ import annotations

import sys
from argparse import ArgumentParser
from typing import IO, Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

from analyze_sessions.decoding import Decoder
from analyze_sessions.report import Report, render_text
from analyze_sessions.sizes import InvalidSize, parse_size
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

    def handle(
        self,
        *args: Any,
        bigger_than: str | None,
        ids_from: str | None,
        model: str | None,
        batch_size: str | int,
        sleep_time: str | float,
        database: str,
        **options: Any,
    ) -> None:
        stdin: IO[Any] = options.get("stdin") or sys.stdin
        engine = settings.SESSION_ENGINE
        try:
            store_class = session_store_class(engine)
            source = open_source(
                engine,
                store_class,
                scanning=ids_from is None,
                model_label=model,
                using=database,
                bigger_than=None if bigger_than is None else parse_size(bigger_than),
                batch_size=whole_number("--batch-size", batch_size, highest=MAX_BATCH_SIZE),
                sleep_time=seconds("--sleep-time", sleep_time, highest=MAX_SLEEP_TIME),
            )
            keys = None if ids_from is None else read_session_keys(ids_from, stdin)
        except (InvalidSize, UnsupportedEngine, KeysFileError) as error:
            raise CommandError(str(error)) from error

        decoder = Decoder(store_class, expiry=getattr(source, "expiry", None))
        stats = Stats()
        try:
            for batch in source.scan() if keys is None else source.lookup(keys):
                for raw in batch:
                    stats.add(decoder.decode(raw))
            total_sessions = source.total_sessions()
        except SourceError as error:
            raise CommandError(str(error)) from error

        report = Report.from_stats(
            stats,
            total_sessions=total_sessions,
            keys_listed=None if keys is None else source.keys_listed,
            keys_not_found=None if keys is None else source.keys_not_found,
        )
        for line in render_text(report):
            self.stdout.write(line)


def whole_number(option: str, value: str | int, *, highest: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if not 1 <= number <= highest:
        raise CommandError(f"{option} must be a whole number from 1 to {highest}, not '{value}'.")
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
