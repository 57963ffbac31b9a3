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
from analyze_sessions.sources import UnsupportedEngine, session_store_class
from analyze_sessions.sources.database import DatabaseSource, session_model
from analyze_sessions.sources.keys import KeysFileError, read_session_keys
from analyze_sessions.stats import Stats


class Command(BaseCommand):
    help = (
        "Report how much space sessions take: how many there are, how big they "
        "are, and which keys take the space. Never writes to the session store."
    )
    # call_command(..., stdin=stream) stands in for standard input.
    stealth_options = ("stdin",)

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
            "--batch-size",
            default="1000",
            metavar="N",
            help="Read at most N sessions per query. Defaults to 1000.",
        )
        parser.add_argument(
            "--sleep-time",
            default="0",
            metavar="SECONDS",
            help="Pause this many seconds between two queries. Defaults to 0.",
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
        batch_size: str | int,
        sleep_time: str | float,
        database: str,
        **options: Any,
    ) -> None:
        stdin: IO[Any] = options.get("stdin") or sys.stdin
        try:
            store_class = session_store_class(settings.SESSION_ENGINE)
            source = DatabaseSource(
                session_model(settings.SESSION_ENGINE, store_class),
                using=database,
                bigger_than=None if bigger_than is None else parse_size(bigger_than),
                batch_size=positive_int("--batch-size", batch_size),
                sleep_time=non_negative_float("--sleep-time", sleep_time),
            )
            keys = None if ids_from is None else read_session_keys(ids_from, stdin)
        except (InvalidSize, UnsupportedEngine, KeysFileError) as error:
            raise CommandError(str(error)) from error

        decoder = Decoder(store_class)
        stats = Stats()
        total_sessions = source.total_sessions()
        for batch in source.scan() if keys is None else source.lookup(keys):
            for raw in batch:
                stats.add(decoder.decode(raw))

        report = Report.from_stats(
            stats,
            total_sessions=total_sessions,
            keys_listed=None if keys is None else source.keys_listed,
            keys_not_found=None if keys is None else source.keys_not_found,
        )
        for line in render_text(report):
            self.stdout.write(line)


def positive_int(option: str, value: str | int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise CommandError(f"{option} must be a whole number of 1 or more, not '{value}'.")
    return number


def non_negative_float(option: str, value: str | float) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number < float("inf"):
        raise CommandError(f"{option} must be a number of seconds, 0 or more, not '{value}'.")
    return number
