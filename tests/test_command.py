from __future__ import annotations

import gc
import os
import subprocess
from datetime import timedelta
from datetime import timezone as dt_timezone
from decimal import ROUND_HALF_UP, Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management import call_command
from django.core.signing import b64_encode
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.helpers import (
    DJANGO_ADMIN,
    KEY_SIZES_NOTE,
    corrupt_session,
    django_admin,
    django_admin_env,
    head,
    run_command,
    section,
    session_of_size,
    session_via_view,
    signed,
    writes,
)

pytestmark = pytest.mark.django_db

# Stored sizes by hand: a payload of n bytes is ceil(4n / 3) characters of
# base64, then ":", a 6-character timestamp, ":" and a 43-character signature.
# {"foo":"bar"} is 13 bytes: 18 + 51 = 69.
# {"foo":"bazbaz","n":"1"} is 24 bytes: 32 + 51 = 83.
# Entry sizes: "foo":"bar" is 11 bytes, "foo":"bazbaz" 14, "n":"1" 7.


# The classic lines of two_sessions' report, after the first one.
TWO_SESSIONS_CLASSIC = (
    "Average size was 76.00 bytes\n"
    "Saw the following keys:\n"
    "    foo (2 times, avg. size 12.50 bytes), max 14 bytes, total 25 bytes, app unknown\n"
    "    n (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown\n"
    f"{KEY_SIZES_NOTE}\n"
)


@pytest.fixture
def two_sessions() -> tuple[str, str]:
    return session_via_view(foo="bar"), session_via_view(foo="bazbaz", n="1")


def test_whole_report_of_every_session(two_sessions: tuple[str, str]) -> None:
    first, second = two_sessions
    expires = {
        key: expire.astimezone(dt_timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        for key, expire in Session.objects.values_list("session_key", "expire_date")
    }

    # Written two weeks (SESSION_COOKIE_AGE) before their expiry.
    sizes = {first: 69, second: 83}
    by_day: dict[str, list[int]] = {}
    for key, expire in Session.objects.values_list("session_key", "expire_date"):
        day = (expire - timedelta(seconds=settings.SESSION_COOKIE_AGE)).astimezone(dt_timezone.utc)
        counted = by_day.setdefault(day.date().isoformat(), [0, 0])
        counted[0] += 1
        counted[1] += sizes[key]
    written = "".join(
        f"        {day}: {count} session{'s' if count > 1 else ''}, {size} bytes\n"
        for day, (count, size) in sorted(by_day.items())
    )

    out, err, returncode = run_command()

    # Payload: {"foo":"bar"} is 13 bytes, {"foo":"bazbaz","n":"1"} 24: 37,
    # stored in 152 / 37 = 410.8% of it. Both sizes are 64 to 127 bytes. The
    # keys' entries, 25 + 7 bytes, are of no app known: the store view's.
    assert (err, returncode) == ("", 0)
    assert out.split("\n\nOn disk:")[0] == (
        "Processed 2 sessions out of 2 total sessions\n" + TWO_SESSIONS_CLASSIC + "\n"
        "Totals:\n"
        "    Stored: 152 bytes in all, 76.00 bytes a session\n"
        "    Payload: 37 bytes serialized, before compression and signing\n"
        "    Compression: decodable sessions are stored in 410.8% of their payload's size\n"
        "\n"
        "By app:\n"
        "    unknown apps: 2 sessions, 32 bytes, 86.5% of the payload\n"
        "    Apps known for 0.0% of the payload\n"
        "\n"
        "Distribution of stored sizes:\n"
        "    p50 69 bytes, p90 83 bytes, p99 83 bytes, max 83 bytes\n"
        "    64-127 bytes        2 ##############################\n"
        "\n"
        "Largest sessions:\n"
        f"    83 bytes: {second[:6]}\u2026, expires {expires[second]}, anonymous, largest key foo\n"
        f"    69 bytes: {first[:6]}\u2026, expires {expires[first]}, anonymous, largest key foo\n"
        "\n"
        "Expired:\n"
        "    0 sessions (0.0%), 0 bytes (0.0% of stored): past their expiry, still stored; "
        "clearsessions would delete them\n"
        "\n"
        "Written:\n"
        "    By day, the last 30 days (UTC), for each day that has any:\n"
        f"{written}"
        # They expire in two weeks: within the month.
        "    Expiring: 0 sessions, 0 bytes in the next day; 0 sessions, 0 bytes in the next "
        "week; 2 sessions, 152 bytes in the next month\n"
        "\n"
        "Undecodable:\n"
        "    0 sessions\n"
        "\n"
        "Users:\n"
        "    0 sessions logged in (0.0%), 2 anonymous; 0 distinct users"
    ) + ("" if "On disk:" in out else "\n")


def test_bigger_than(two_sessions: tuple[str, str]) -> None:
    out, err, returncode = run_command("--bigger-than=69")

    assert (head(out), err, returncode) == (
        "Processed 1 sessions out of 2 total sessions\n"
        "Average size was 83.00 bytes\n"
        "Saw the following keys:\n"
        "    foo (1 times, avg. size 14.00 bytes), max 14 bytes, total 14 bytes, app unknown\n"
        "    n (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        "    Stored: 83 bytes in all, 83.00 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Scope") == ["Only the sessions chosen by --bigger-than 69 bytes"]


def filler_entry_size(key: str) -> int:
    return len('"filler":""') + len(Session.objects.get(pk=key).get_decoded()["filler"])


def test_bigger_than_15kb_against_15kib() -> None:
    session_via_view(foo="bar")
    session_of_size(15_000)  # Not bigger than 15KB: left out.
    keys = [session_of_size(size) for size in (15_002, 15_360, 15_362)]
    entries = [filler_entry_size(key) for key in keys]
    mean_of_three = (Decimal(sum(entries)) / 3).quantize(Decimal("0.01"), ROUND_HALF_UP)

    out, err, returncode = run_command("--bigger-than=15KB")

    assert run_command("--bigger-than=15000") == (out, err, returncode)
    assert run_command("--bigger-than", "15 kb") == (out, err, returncode)
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[:4] == [
        "Processed 3 sessions out of 5 total sessions",
        "Average size was 15241.33 bytes",  # (15002 + 15360 + 15362) / 3
        "Saw the following keys:",
        f"    filler (3 times, avg. size {mean_of_three} bytes), "
        f"max {max(entries)} bytes, total {sum(entries)} bytes, app unknown",
    ]
    # The bound as it was read, in bytes.
    assert section(out, "Scope") == [
        "Only the sessions chosen by --bigger-than 15000 bytes (14.6 KiB)"
    ]

    out, err, returncode = run_command("--bigger-than=15KiB")

    assert out.splitlines()[:4] == [
        "Processed 1 sessions out of 5 total sessions",
        "Average size was 15362.00 bytes",
        "Saw the following keys:",
        f"    filler (1 times, avg. size {entries[2]}.00 bytes), "
        f"max {entries[2]} bytes, total {entries[2]} bytes, app unknown",
    ]
    assert run_command("--bigger-than=15K")[0] == out
    assert section(out, "Scope") == [
        "Only the sessions chosen by --bigger-than 15360 bytes (15.0 KiB)"
    ]


@override_settings(SECRET_KEY="analyze-sessions-tests-retired", SECRET_KEY_FALLBACKS=[])
def session_signed_with_retired_key() -> str:
    return session_via_view(foo="bar")


@override_settings(SECRET_KEY="a-key-nobody-has-any-more", SECRET_KEY_FALLBACKS=[])
def session_signed_with_lost_key() -> str:
    return session_via_view(foo="bar")


def test_undecodable_sessions_are_counted_by_reason() -> None:
    session_via_view(foo="bar")  # 69 bytes
    session_signed_with_retired_key()  # 69 bytes, still decodes
    session_signed_with_lost_key()  # 69 bytes, bad signature: a key no longer configured
    corrupt_session("not a session")  # 13 bytes, bad signature
    corrupt_session(signed("abcde"))  # 5 + 51 = 56 bytes, bad encoding
    corrupt_session(signed(b64_encode(b"not json").decode()))  # 11 + 51 = 62, bad payload

    out, err, returncode = run_command()

    assert (head(out), err, returncode) == (
        "Processed 6 sessions out of 6 total sessions\n"
        "Average size was 56.33 bytes\n"  # 338 / 6
        "Saw the following keys:\n"
        "    foo (2 times, avg. size 11.00 bytes), max 11 bytes, total 22 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        "    Stored: 338 bytes in all, 56.33 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Undecodable") == [
        "4 sessions, 200 bytes (bad signature: 2, bad encoding: 1, bad payload: 1): "
        "no request can read them, and Django reads each as empty",
        "1 of them, 69 bytes, is signed with a key no longer configured: dead weight "
        "until it expires",
    ]


def test_a_row_of_non_ascii_junk_counts_its_characters() -> None:
    # Django writes session data in ASCII; this junk is measured in
    # characters, on every backend, and cannot be decoded.
    corrupt_session("日本語のデータ")

    out, err, returncode = run_command("--bigger-than=6")

    assert (head(out), err, returncode) == (
        "Processed 1 sessions out of 1 total sessions\n"
        "Average size was 7.00 bytes\n"
        "\n"
        "Totals:\n"
        "    Stored: 7 bytes in all, 7.00 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Undecodable")[0].startswith("1 session, 7 bytes (bad signature: 1)")
    assert run_command("--bigger-than=7")[0].startswith("Processed 0 sessions out of 1 total")


def test_ids_from_a_file(two_sessions: tuple[str, str], tmp_path: Path) -> None:
    first, second = two_sessions
    session_via_view(foo="not listed")
    ids = tmp_path / "ids"
    ids.write_text(f"# to check\n{first}\n\n  {second}  \n{first}\nnosuchkey\n")

    out, err, returncode = run_command(f"--ids-from={ids}")

    assert (head(out), err, returncode) == (
        "Processed 2 sessions out of 3 total sessions\n"
        + TWO_SESSIONS_CLASSIC
        + "\nTotals:\n    Stored: 152 bytes in all, 76.00 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Totals")[-1] == "Listed keys not found: 1 of 3"
    assert section(out, "Scope") == [f"Only the sessions chosen by --ids-from {ids}"]


def test_ids_from_stdin_with_bigger_than(two_sessions: tuple[str, str]) -> None:
    first, second = two_sessions

    out, err, returncode = run_command(
        "--ids-from", "-", "--bigger-than=69", stdin=f"{first}\n{second}\nmissing\n"
    )

    assert (head(out), err, returncode) == (
        "Processed 1 sessions out of 2 total sessions\n"
        "Average size was 83.00 bytes\n"
        "Saw the following keys:\n"
        "    foo (1 times, avg. size 14.00 bytes), max 14 bytes, total 14 bytes, app unknown\n"
        "    n (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        "    Stored: 83 bytes in all, 83.00 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Scope") == [
        "Only the sessions chosen by --bigger-than 69 bytes, --ids-from standard input"
    ]
    # The small session is found but filtered out; only "missing" is not found.
    assert section(out, "Totals")[-1] == "Listed keys not found: 1 of 3"


def test_an_empty_ids_file(two_sessions: tuple[str, str], tmp_path: Path) -> None:
    (tmp_path / "ids").write_text("\n\n")

    out, err, returncode = run_command(f"--ids-from={tmp_path / 'ids'}")
    from_stdin = run_command("--ids-from=-", stdin="# none\n")

    assert out.splitlines()[0] == "Processed 0 sessions out of 2 total sessions"
    assert section(out, "Totals")[-1] == "Listed keys not found: 0 of 0"
    # Said, in case the file is not the one meant; nothing went wrong.
    assert (err, returncode) == (
        f"The ids file '{tmp_path / 'ids'}' lists no session keys, so none is analyzed.\n",
        0,
    )
    assert from_stdin[1:] == ("Standard input lists no session keys, so none is analyzed.\n", 0)


@pytest.mark.parametrize("batch_size", ["1", "2", "1000"])
def test_batch_size_does_not_change_the_report(
    two_sessions: tuple[str, str], batch_size: str
) -> None:
    session_via_view(foo="x" * 100)
    corrupt_session("junk")

    assert run_command(f"--batch-size={batch_size}") == run_command()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bigger-than=15XB"],
            "Invalid size '15XB': give a number of bytes with an optional unit, "
            "for example 15000, 15KB, 15KiB, 1.5MB or 2M.",
        ),
        (
            ["--bigger-than=-5"],
            "Invalid size '-5': give a number of bytes with an optional unit, "
            "for example 15000, 15KB, 15KiB, 1.5MB or 2M.",
        ),
        (
            ["--bigger-than=abc"],
            "Invalid size 'abc': give a number of bytes with an optional unit, "
            "for example 15000, 15KB, 15KiB, 1.5MB or 2M.",
        ),
        (
            ["--bigger-than="],
            "Invalid size '': give a number of bytes with an optional unit, "
            "for example 15000, 15KB, 15KiB, 1.5MB or 2M.",
        ),
        (["--batch-size=0"], "--batch-size must be a whole number from 1 to 100000, not '0'."),
        (["--batch-size=-3"], "--batch-size must be a whole number from 1 to 100000, not '-3'."),
        (
            ["--batch-size=lots"],
            "--batch-size must be a whole number from 1 to 100000, not 'lots'.",
        ),
        (["--batch-size=1.5"], "--batch-size must be a whole number from 1 to 100000, not '1.5'."),
        (["--sleep-time=-1"], "--sleep-time must be a number of seconds from 0 to 3600, not '-1'."),
        (
            ["--sleep-time=soon"],
            "--sleep-time must be a number of seconds from 0 to 3600, not 'soon'.",
        ),
        (
            ["--batch-size=99999999999999999999"],
            "--batch-size must be a whole number from 1 to 100000, not '99999999999999999999'.",
        ),
        (
            ["--sleep-time=1e300"],
            "--sleep-time must be a number of seconds from 0 to 3600, not '1e300'.",
        ),
        (
            ["--sleep-time=nan"],
            "--sleep-time must be a number of seconds from 0 to 3600, not 'nan'.",
        ),
        (
            ["--ids-from=/nonexistent/ids"],
            "Cannot read ids file '/nonexistent/ids': No such file or directory.",
        ),
        # Past what any database's LENGTH() is compared with, and past what
        # an int can be written as: a range, said in one sentence.
        (
            ["--bigger-than=9223372036854775808"],
            "--bigger-than must be from 0 bytes to 2.0 GiB (2147483647 bytes), "
            "not '9223372036854775808'.",
        ),
        (
            ["--bigger-than=2GiB"],
            "--bigger-than must be from 0 bytes to 2.0 GiB (2147483647 bytes), not '2GiB'.",
        ),
        (
            ["--bigger-than=" + "9" * 5000],
            "--bigger-than must be from 0 bytes to 2.0 GiB (2147483647 bytes), "
            f"not '{'9' * 40}\u2026'.",
        ),
        (
            ["--limit=" + "9" * 5000],
            f"--limit must be a whole number from 1 to 1000000000000, not '{'9' * 40}\u2026'.",
        ),
        (
            ["--max-session-size=1000"],
            "--max-session-size must be from 1.0 KiB to 1.0 GiB (1073741824 bytes), not '1000'.",
        ),
        (
            ["--max-session-size=2GiB"],
            "--max-session-size must be from 1.0 KiB to 1.0 GiB (1073741824 bytes), not '2GiB'.",
        ),
        (
            ["--model=nope"],
            "Invalid --model 'nope': give app_label.ModelName, for example sessions.Session.",
        ),
        (
            ["--model=tests.Nope"],
            "Cannot find the model 'tests.Nope': App 'tests' doesn't have a 'Nope' model.",
        ),
    ],
)
def test_bad_input_is_one_clear_sentence(args: list[str], message: str) -> None:
    assert run_command(*args) == ("", f"CommandError: {message}\n", 1)


def test_the_largest_bigger_than_runs_on_every_database() -> None:
    session_via_view(foo="bar")

    out, err, returncode = run_command("--bigger-than=2147483647")

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 0 sessions out of 1 total sessions\n")


@pytest.mark.parametrize(
    ("engine", "message"),
    [
        (
            "cached_db",
            "Cannot use session engine 'django.contrib.sessions.backends.cached_db': "
            "SESSION_CACHE_ALIAS names the cache 'gone', but CACHES has no such cache.",
        ),
        (
            "cache",
            "Cannot use the 'gone' cache: SESSION_CACHE_ALIAS names it, but CACHES has no "
            "such cache.",
        ),
    ],
)
def test_an_engine_whose_cache_is_missing_is_one_sentence(engine: str, message: str) -> None:
    with override_settings(
        SESSION_ENGINE=f"django.contrib.sessions.backends.{engine}", SESSION_CACHE_ALIAS="gone"
    ):
        result = run_command()

    assert result == ("", f"CommandError: {message}\n", 1)


def test_an_ids_file_that_is_a_directory(tmp_path: Path) -> None:
    assert run_command(f"--ids-from={tmp_path}") == (
        "",
        f"CommandError: Cannot read ids file '{tmp_path}': Is a directory.\n",
        1,
    )


def test_an_unknown_database() -> None:
    out, err, returncode = run_command("--database=nope")

    assert err.startswith(
        "CommandError: Error: argument --database: invalid choice: 'nope' (choose from "
    )
    assert (out, returncode) == ("", 1)


@override_settings(SESSION_ENGINE="django.contrib.sessions.backends.cached_db")
def test_cached_db_sessions_are_read_from_the_database() -> None:
    session_via_view(foo="bar")
    session_via_view(foo="bazbaz", n="1")
    cache.clear()  # The cache holds copies only; the database holds them all.

    out, err, returncode = run_command()

    assert (head(out), err, returncode) == (
        "Processed 2 sessions out of 2 total sessions\n"
        + TWO_SESSIONS_CLASSIC
        + "\nTotals:\n    Stored: 152 bytes in all, 76.00 bytes a session\n",
        "",
        0,
    )


def test_a_table_that_does_not_exist_is_one_clear_sentence() -> None:
    with override_settings(SESSION_ENGINE="tests.engines.unmigrated"):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith("CommandError: Cannot read sessions from the 'default' database: ")
    assert "unmigrated_session" in err
    assert err.endswith(".\n") and err.count("\n") == 1


def test_only_selects_and_nothing_changes(two_sessions: tuple[str, str], tmp_path: Path) -> None:
    corrupt_session("junk")
    session_of_size(3000)
    ids = tmp_path / "ids"
    ids.write_text("\n".join(two_sessions))
    before = list(Session.objects.order_by("pk").values_list())

    with CaptureQueriesContext(connection) as queries:
        for args in ([], ["--bigger-than=70", "--batch-size=1"], [f"--ids-from={ids}"]):
            assert run_command(*args)[2] == 0

    assert len(queries) > 3
    assert writes(queries.captured_queries) == []
    assert list(Session.objects.order_by("pk").values_list()) == before


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_queries_are_selects_one_per_batch(batch_size: int) -> None:
    for n in range(23):
        session_via_view(n=str(n))

    with CaptureQueriesContext(connection) as queries:
        out, _, _ = run_command(f"--batch-size={batch_size}")

    assert out.startswith("Processed 23 sessions out of 23 total sessions\n")
    # On SQLite, a look at how the table is kept, to page it by rowid; full
    # pages, then the short (or empty) page that ends; then a count and,
    # where the database tells, the size of the table on disk.
    layout = 1 if connection.vendor == "sqlite" else 0
    disk = 1 if connection.vendor in ("sqlite", "postgresql", "mysql") else 0
    assert len(queries) == layout + 23 // batch_size + 1 + 1 + disk
    assert writes(queries.captured_queries) == []


def test_no_value_and_no_full_key_is_shown(tmp_path: Path) -> None:
    keys = [
        session_via_view(secret="SENTINEL-VALUE-41", token="SENTINEL-VALUE-42"),
        corrupt_session(signed(b64_encode(b'{"x":"SENTINEL-VALUE-43"').decode())),
    ]
    listed = [*keys, "sentinelkeynotinthestore"]
    ids = tmp_path / "ids"
    ids.write_text("\n".join(listed))

    for args in ([], [f"--ids-from={ids}"]):
        out, err, returncode = run_command(*args)
        assert (returncode, err) == (0, "")
        assert "secret (1 times" in out  # Key names are shown...
        assert "SENTINEL" not in out  # ...their values never,
        assert not any(key in out for key in listed)  # nor the keys of sessions.


@pytest.mark.django_db(databases=["default", "replica"])
def test_database_reads_only_that_database() -> None:
    session_via_view(foo="bar")
    Session.objects.using("replica").create(
        session_key="replicated0000000000000000000000",
        session_data=SessionStore().encode({"foo": "bazbaz", "n": "1"}),
        expire_date=timezone.now(),
    )

    with CaptureQueriesContext(connection) as on_default:
        out, err, returncode = run_command("--database=replica")

    assert (head(out), err, returncode) == (
        "Processed 1 sessions out of 1 total sessions\n"
        "Average size was 83.00 bytes\n"
        "Saw the following keys:\n"
        "    foo (1 times, avg. size 14.00 bytes), max 14 bytes, total 14 bytes, app unknown\n"
        "    n (1 times, avg. size 7.00 bytes), max 7 bytes, total 7 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        "    Stored: 83 bytes in all, 83.00 bytes a session\n",
        "",
        0,
    )
    assert section(out, "Scope") == ["Only the sessions chosen by --database replica"]
    assert len(on_default) == 0
    with CaptureQueriesContext(connections["replica"]) as queries_on_replica:
        assert run_command()[0].startswith(
            "Processed 1 sessions out of 1 total sessions\nAverage size was 69.00 bytes\n"
        )
    assert len(queries_on_replica) == 0


def test_the_hyphenated_name_runs_the_same_command(two_sessions: tuple[str, str]) -> None:
    hyphenated = StringIO()

    call_command("analyze-sessions", "--bigger-than=69", stdout=hyphenated)

    assert hyphenated.getvalue() == run_command("--bigger-than=69")[0]
    assert hyphenated.getvalue().startswith("Processed 1 sessions out of 2 total sessions\n")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", ["analyze_sessions", "analyze-sessions"])
def test_django_admin_under_both_names(name: str) -> None:
    first = session_via_view(foo="bar")
    session_via_view(foo="bazbaz", n="1")

    result = django_admin(name, "--bigger-than=69")
    piped = django_admin(name, "--ids-from=-", stdin=f"{first}\nmissing\n")

    assert (result.stdout, result.stderr, result.returncode) == (
        run_command("--bigger-than=69")[0],
        "",
        0,
    )
    assert result.stdout.startswith("Processed 1 sessions out of 2 total sessions\n")
    assert (head(piped.stdout), piped.stderr, piped.returncode) == (
        "Processed 1 sessions out of 2 total sessions\n"
        "Average size was 69.00 bytes\n"
        "Saw the following keys:\n"
        "    foo (1 times, avg. size 11.00 bytes), max 11 bytes, total 11 bytes, app unknown\n"
        f"{KEY_SIZES_NOTE}\n"
        "\n"
        "Totals:\n"
        "    Stored: 69 bytes in all, 69.00 bytes a session\n",
        "",
        0,
    )
    assert section(piped.stdout, "Totals")[-1] == "Listed keys not found: 1 of 2"


@pytest.mark.django_db(transaction=True)
def test_django_admin_bad_input_exits_non_zero_without_a_traceback() -> None:
    result = django_admin("analyze-sessions", "--bigger-than=15XB")

    assert (result.stdout, result.stderr, result.returncode) == (
        "",
        "CommandError: Invalid size '15XB': give a number of bytes with an "
        "optional unit, for example 15000, 15KB, 15KiB, 1.5MB or 2M.\n",
        1,
    )


@pytest.mark.django_db(transaction=True)
def test_django_admin_reads_one_database_while_another_is_down() -> None:
    session_via_view(foo="bar")
    unreachable = "/nonexistent/replica.sqlite3" if connection.vendor == "sqlite" else "gone"

    result = django_admin("analyze-sessions", env={"ANALYZE_SESSIONS_REPLICA_NAME": unreachable})
    on_replica = django_admin(
        "analyze-sessions", "--database=replica", env={"ANALYZE_SESSIONS_REPLICA_NAME": unreachable}
    )

    assert (result.stdout.splitlines()[0], result.stderr, result.returncode) == (
        "Processed 1 sessions out of 1 total sessions",
        "",
        0,
    )
    assert (on_replica.stdout, on_replica.returncode) == ("", 1)
    if connection.vendor == "sqlite":
        # Read-only, a missing file is not made: it is said to be missing.
        assert on_replica.stderr == (
            f"CommandError: The SQLite database file '{unreachable}' of the 'replica' "
            "database does not exist.\n"
        )
        assert not os.path.exists(unreachable)
    else:
        assert on_replica.stderr.startswith(
            "CommandError: Cannot read sessions from the 'replica' database: "
        )
        assert on_replica.stderr.count("\n") == 1


def test_a_process_that_froze_its_objects_finds_them_frozen_after() -> None:
    session_via_view(n="1")
    gc.freeze()
    try:
        run_command()
        # Still frozen (fewer, as some were freed since): not undone.
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
    run_command()
    assert gc.get_freeze_count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_reader_that_stops_early_ends_the_run_quietly() -> None:
    # A report longer than a pipe holds (64 KiB), so that writing it meets
    # the closed pipe: the JSON of 3,000 keys, named by words (key_aaa,
    # key_aab...), not ids, so that each has an entry of some 200 bytes.
    store = SessionStore()
    for n in range(3000):
        store["key_" + "".join(chr(97 + n // 26**place % 26) for place in (2, 1, 0))] = n
    store.create()

    with subprocess.Popen(
        [DJANGO_ADMIN, "analyze-sessions", "--format=json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=django_admin_env(),
    ) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # As `| head -1` does.
        err = process.stderr.read()
        process.wait(timeout=60)

    assert first == b"{\n"
    assert (err, process.returncode) == (b"", 141)
