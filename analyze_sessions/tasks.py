"""
One shard of the sessions, read on a worker of the site's task queue, for
``analyze_sessions --tasks N``: Django's ``django.tasks`` from Django 6.0,
the ``django-tasks`` package it was made from before.
"""

from __future__ import annotations

import io
import re
from typing import Any

from django.core.management import call_command
from django.core.management.base import CommandError

from analyze_sessions.queued import MAY_BE_NONE, SHARD_OPTIONS, report_signer
from analyze_sessions.shards import MAX_SHARDS

try:
    from django.tasks import task
except ImportError:  # Django 5.2, with the django-tasks package.
    from django_tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]


class ShardFailed(Exception):
    """A shard's run that could not go on: the message is the command's one sentence."""


@task
def analyze_shard(k: int, n: int, options: dict[str, Any]) -> str:
    """
    The JSON report of shard ``k`` of ``n`` (from 1), its state included,
    exactly as ``analyze_sessions --shard K/N --format json`` prints it,
    signed for these options and the run ``options["run"]`` with the site's
    secret key.

    It is returned as text, not parsed: a key's name may hold what a JSON
    column of the queue cannot (PostgreSQL's jsonb refuses ``\\u0000``), and
    the command checks it against the report's schema when it comes back.
    """
    if type(k) is not int or type(n) is not int or not 1 <= k <= n <= MAX_SHARDS:
        raise ShardFailed(f"A shard is K of N, with 1 <= K <= N <= {MAX_SHARDS}.")
    if type(options) is not dict or not all(
        name in SHARD_OPTIONS
        and (type(value) is SHARD_OPTIONS[name] or (value is None and name in MAY_BE_NONE))
        for name, value in options.items()
    ):
        raise ShardFailed(
            f"A shard's options are some of {', '.join(sorted(SHARD_OPTIONS))}, each a "
            f"string, and some of them null."
        )
    if not re.fullmatch("[0-9a-f]{32}", str(options.get("run"))):
        raise ShardFailed("A shard's task is enqueued by analyze_sessions --tasks, for a run.")
    signer = report_signer(k, n, options)
    options = {name: value for name, value in options.items() if name != "run"}
    report = io.StringIO()
    try:
        call_command(
            "analyze_sessions",
            shard=f"{k}/{n}",
            format="json",
            stdout=report,
            stderr=io.StringIO(),
            **options,
        )
    except CommandError as error:
        # Only the sentence: the queue keeps a failed task's traceback.
        raise ShardFailed(str(error)) from None
    return signer.sign(report.getvalue())
