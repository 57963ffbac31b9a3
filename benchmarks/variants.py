"""
One way of analyzing the benchmark's sessions, run in a process of its own.

    python -m benchmarks.variants NAME

prints a line of JSON: how many sessions it read, its peak RSS, and that
of the worker processes it started, if any; and the seconds it spent
before the run it measures (starting a task queue's workers), if any.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import resource
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from io import StringIO
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
django.setup()

from django.contrib.sessions.backends.base import SessionBase  # noqa: E402
from django.contrib.sessions.models import Session  # noqa: E402
from django.core import signing  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

SALT = "django.contrib.sessions.SessionStore"


def floor() -> int:
    """The least any analysis must do: read each row, verify and decode it."""
    signer = signing.TimestampSigner(salt=SALT)
    loads = signing.JSONSerializer().loads
    count = 0
    connection.ensure_connection()
    with transaction.atomic():
        cursor = _streaming_cursor("floor")
        cursor.execute("SELECT session_data FROM django_session")
        while rows := cursor.fetchmany(1000):
            for (data,) in rows:
                count += 1
                try:
                    encoded = signer.unsign(data).encode()
                    if encoded[:1] == b".":
                        payload = zlib.decompress(signing.b64_decode(encoded[1:]))
                    else:
                        payload = signing.b64_decode(encoded)
                    loads(payload)
                except Exception:
                    pass
    return count


def _streaming_cursor(name: str) -> Any:
    """
    A cursor of the driver's that streams the rows, where a plain one would
    fetch them all before the first: a named one on PostgreSQL, and MySQL's
    SSCursor.
    """
    if connection.vendor == "postgresql":
        return connection.connection.cursor(name=name)
    if connection.vendor == "mysql":
        from MySQLdb.cursors import SSCursor  # type: ignore[import-untyped]

        return connection.connection.cursor(SSCursor)
    return connection.connection.cursor()


def tight() -> int:
    """
    The least verifying and decoding can cost in CPython: a raw cursor, one
    HMAC per secret prepared once and copied for each row, binascii, zlib
    and json.loads, with none of Django's layers.
    """
    from django.conf import settings

    macs = [
        hmac.new(
            hashlib.sha256(f"{SALT}signer{secret}".encode()).digest(), digestmod=hashlib.sha256
        )
        for secret in [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    ]
    count = 0
    connection.ensure_connection()
    with transaction.atomic():
        cursor = _streaming_cursor("tight")
        cursor.execute("SELECT session_data FROM django_session")
        while rows := cursor.fetchmany(1000):
            for (data,) in rows:
                count += 1
                signed, _, signature = data.encode().rpartition(b":")
                for mac in macs:
                    check = mac.copy()
                    check.update(signed)
                    if hmac.compare_digest(
                        binascii.b2a_base64(check.digest(), newline=False)
                        .rstrip(b"=")
                        .translate(_URLSAFE),
                        signature,
                    ):
                        break
                else:
                    continue  # Not signed with any secret.
                encoded = signed.rpartition(b":")[0]
                compressed = encoded[:1] == b"."
                body = encoded[compressed:]
                try:
                    raw = binascii.a2b_base64(body.translate(_STANDARD) + b"=" * (-len(body) % 4))
                    json.loads(zlib.decompress(raw) if compressed else raw)
                except (binascii.Error, zlib.error, ValueError):
                    pass
    return count


_URLSAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = bytes.maketrans(b"-_", b"+/")


def by_hand() -> int:
    """What an operator writes: the ORM, get_decoded(), json.dumps per key."""
    count = 0
    sizes: dict[str, int] = {}
    for session in Session.objects.iterator(chunk_size=1000):
        count += 1
        for key, value in session.get_decoded().items():
            sizes[key] = sizes.get(key, 0) + len(json.dumps({key: value}))
    return count


def legacy_2013() -> int:
    """The 2013 tool's algorithm: OFFSET batches, a count per batch, encode per key."""
    count, batch = 0, 1000
    sizes: dict[str, int] = {}
    start = 0
    while start < Session.objects.count():
        for session in Session.objects.all()[start : start + batch]:
            count += 1
            for key, value in session.get_decoded().items():
                sizes[key] = sizes.get(key, 0) + len(SessionBase().encode({key: value}))
        start += batch
    return count


class FirstLine(StringIO):
    """Keeps the first line written, and lets the rest go."""

    def write(self, text: str) -> int:
        if not self.tell():
            super().write(text)
        return len(text)


def analyze(*args: str) -> int:
    out = FirstLine()
    call_command("analyze_sessions", *args, stdout=out)
    return int(out.getvalue().split()[1])  # "Processed N sessions out of ..."


# What analyze_tasks spent before the run: the task queue's tables made,
# and its workers started, which a site has running already.
untimed = 0.0


def analyze_in_tasks(workers: int) -> int:
    """``--tasks N`` on ``workers`` django-tasks-db workers started beforehand."""
    global untimed
    started = time.perf_counter()
    call_command("migrate", "django_tasks_database", verbosity=0)
    command = [sys.executable, "-m", "django", "db_worker", "--interval=0.05", "--no-reload"]
    command += ["--no-startup-delay", "--skip-checks", "--verbosity=0"]
    processes = [subprocess.Popen([*command, f"--worker-id=benchmark-{n}"]) for n in range(workers)]
    try:
        time.sleep(3)  # Until they wait for tasks: Django starts in about a second.
        untimed = time.perf_counter() - started
        return analyze(f"--tasks={workers}")
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()


VARIANTS: dict[str, Callable[[], int]] = {
    "floor": floor,
    "tight": tight,
    "by_hand": by_hand,
    "legacy_2013": legacy_2013,
    "analyze_jobs_1": lambda: analyze("--jobs=1"),
    "analyze_jobs_2": lambda: analyze("--jobs=2"),
    "analyze_tasks_2": lambda: analyze_in_tasks(2),
    # Every key listed in a file, which the benchmark writes beforehand.
    "analyze_ids_from": lambda: analyze(f"--ids-from={os.environ['BENCHMARK_IDS']}"),
}


def peak_rss_kib() -> int:
    """
    The most memory this process has held: VmHWM where Linux tells it. Its
    ru_maxrss would count the process that started this one, too.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    sessions = VARIANTS[sys.argv[1]]()
    print(
        json.dumps(
            {
                "sessions": sessions,
                "peak_rss_kib": peak_rss_kib(),
                "workers_peak_rss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                "untimed_seconds": untimed,
            }
        )
    )
