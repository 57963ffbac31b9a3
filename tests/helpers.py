"""Ways to make sessions through real Django code, and to run the command."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import string
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import django
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django.utils.crypto import get_random_string

SALT = "django.contrib.sessions.SessionStore"


def run_command(*args: str, stdin: str | None = None, **options: Any) -> tuple[str, str, int]:
    """Run analyze_sessions as call_command() does; return (out, err, returncode)."""
    out, err = StringIO(), StringIO()
    if stdin is not None:
        options["stdin"] = StringIO(stdin)
    try:
        call_command("analyze_sessions", *args, stdout=out, stderr=err, **options)
    except CommandError as error:
        return out.getvalue(), f"CommandError: {error}\n", error.returncode
    return out.getvalue(), err.getvalue(), 0


def session_via_view(**items: str) -> str:
    """Make a session through the ``store`` view, which keeps ``items``; return its key."""
    client = Client()
    response = client.get("/store/", items)
    assert response.status_code == 200
    return str(client.session.session_key)


def session_of_size(stored_size: int) -> str:
    """
    Save a real session whose stored size is exactly ``stored_size``.

    Its one key, ``filler``, holds random letters. They compress a little, and
    not evenly, so the length that encodes to ``stored_size`` is searched for:
    bisected, then looked for nearby. A compressed session is "." + base64 +
    51 characters of timestamp and signature, and base64 is never one more
    than a multiple of 4 long: no such session is 1 more than a multiple of 4.
    """
    store = SessionStore()
    letters = "".join(random.Random(stored_size).choices(string.ascii_letters, k=2 * stored_size))

    def encoded_size(length: int) -> int:
        return len(store.encode({"filler": letters[:length]}))

    low, high = 0, len(letters)
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if encoded_size(middle) < stored_size else (low, middle)
    for length in range(max(0, low - 64), low + 64):
        if encoded_size(length) == stored_size:
            break
    else:
        raise AssertionError(f"No session encodes to {stored_size} bytes.")
    store["filler"] = letters[:length]
    store.create()
    stored = Session.objects.get(session_key=store.session_key)
    assert len(stored.session_data) == stored_size
    return str(store.session_key)


def signed(value: str, salt: str = SALT) -> str:
    """``value`` signed as a session store signs its base64 payload."""
    return signing.TimestampSigner(salt=salt).sign(value)


def corrupt_session(data: str, using: str = "default") -> str:
    """Store a row holding ``data`` as session data, as old or broken code might."""
    key = get_random_string(32, VALID_KEY_CHARS)
    Session.objects.using(using).create(
        session_key=key, session_data=data, expire_date=timezone.now() + timedelta(days=1)
    )
    return key


def two_sessions() -> tuple[str, str]:
    """Make two sessions through the store view; see two_sessions_report()."""
    return session_via_view(foo="bar"), session_via_view(foo="bazbaz", n="1")


# The sentence under the key list of every text report.
KEY_SIZES_NOTE = (
    "Key sizes are payload bytes, before compression; session sizes are stored bytes, "
    "so a key's max can exceed the largest session."
)


def two_sessions_report(sizes: tuple[int, int], processed_line: str) -> str:
    """
    The classic lines of the report of two_sessions() whose stored sizes are
    ``sizes``, and the first line of its totals.

    Entry sizes by hand: "foo":"bar" is 11 bytes, "foo":"bazbaz" 14, "n":"1" 7.
    """
    total = sum(sizes)
    mean = (Decimal(total) / 2).quantize(Decimal("0.01"), ROUND_HALF_UP)
    return (
        f"{processed_line}\n"
        f"Average size was {mean} bytes\n"
        "Saw the following keys:\n"
        "    foo (2 times, avg. size 12.50 bytes), max 14 bytes, total 25 bytes, app unknown\n"
        "    n (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        f"    Stored: {total} bytes in all, {mean} bytes a session\n"
    )


def head(out: str) -> str:
    """The classic lines of a text report, and the first line of its totals."""
    classic = out.partition("\n\n")[0]
    return f"{classic}\n\nTotals:\n    {section(out, 'Totals')[0]}\n"


def section(out: str, title: str) -> list[str]:
    """The lines of one section of a text report, without their indent."""
    for part in out.split("\n\n"):
        if part.startswith(f"{title}:\n"):
            return [line.removeprefix("    ") for line in part.splitlines()[1:]]
    raise AssertionError(f"No section {title!r} in:\n{out}")


# What the PostgreSQL source sends before each read to make it read-only.
READ_ONLY_STATEMENTS = {"SET TRANSACTION READ ONLY"}


def writes(queries: list[dict[str, str]]) -> list[str]:
    """The statements among ``queries`` that are neither reads nor read-only settings."""
    return [
        query["sql"]
        for query in queries
        if not query["sql"].startswith("SELECT ") and query["sql"] not in READ_ONLY_STATEMENTS
    ]


# Django 6.0 takes addresses alone, and 6.1 configures mail in MAILERS.
ADMINS = ["ops@example.com"] if django.VERSION >= (6, 0) else [("Ops", "ops@example.com")]


def mail_to_files(directory: Path) -> dict[str, Any]:
    """Settings that make Django write mail to files in ``directory``."""
    backend = "django.core.mail.backends.filebased.EmailBackend"
    if django.VERSION >= (6, 1):
        mailer = {"BACKEND": backend, "OPTIONS": {"file_path": str(directory)}}
        return {"MAILERS": {"default": mailer}}
    return {"EMAIL_BACKEND": backend, "EMAIL_FILE_PATH": str(directory)}


def django_admin_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a ``django-admin`` process that reads the test database."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "ANALYZE_SESSIONS_DB_NAME": connection.settings_dict["NAME"],
        **(env or {}),
    }


DJANGO_ADMIN = str(Path(sys.executable).with_name("django-admin"))


def django_admin(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a real ``django-admin`` process against the test database."""
    return subprocess.run(
        [DJANGO_ADMIN, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=django_admin_env(env),
        timeout=timeout,
    )


@contextlib.contextmanager
def within(seconds: int) -> Iterator[None]:
    """Fail, rather than hang, if the block takes longer than ``seconds``."""

    def too_long(signum: int, frame: object) -> None:
        raise TimeoutError(f"Still running after {seconds} seconds.")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
