"""The command's report options: formats, sections, sampling, mail, progress."""

from __future__ import annotations

import csv
import email
import io
import json
import zlib
from importlib import metadata
from pathlib import Path

import django
import jsonschema
import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from analyze_sessions.decoding import Decoder
from tests.helpers import (
    ADMINS,
    django_admin,
    mail_to_files,
    run_command,
    section,
    session_of_size,
    session_via_view,
    two_sessions,
)

pytestmark = pytest.mark.django_db

SCHEMA = Path(__file__).parent.parent / "analyze_sessions" / "report.schema.json"


def logged_in_session(username: str, **items: str) -> str:
    user = User.objects.create_user(username, password="secret")
    client = Client()
    client.force_login(user)
    client.get("/store/", items)
    return str(client.session.session_key)


def test_json_report_of_real_sessions() -> None:
    first, second = two_sessions()
    user_session = logged_in_session("ada", cart="x" * 100)

    out, err, returncode = run_command("--format=json", "--top=2")
    document = json.loads(out)
    stored = dict(Session.objects.values_list("session_key", "session_data"))
    sizes = {key: len(data) for key, data in stored.items()}

    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert (err, returncode) == ("", 0)
    assert document["sessions"] == {
        "total": 3,
        "processed": 3,
        "undecodable": 0,
        "not_found": None,
        "unreadable": {},
        "gone": 0,
    }
    assert document["stored_bytes"]["total"] == sum(sizes.values())
    assert document["stored_bytes"]["max"] == max(sizes.values())
    assert document["users"]["authenticated_sessions"] == 1
    assert document["users"]["top"] == [
        {
            "user_id": str(User.objects.get().pk),
            "sessions": 1,
            "stored_bytes": sizes[user_session],
        }
    ]
    assert [s["key_prefix"] for s in document["largest_sessions"]] == [
        key[:6] for key in sorted(sizes, key=lambda key: (-sizes[key], key))[:2]
    ]
    assert {line["key"]: line["total_bytes"] for line in document["keys"]}["foo"] == 25
    assert first not in out and second not in out


def test_csv_report() -> None:
    two_sessions()

    out, _, _ = run_command("--format=csv")

    assert list(csv.reader(io.StringIO(out))) == [
        ["key", "sessions", "total_bytes", "mean_bytes", "max_bytes", "share", "owner", "where"],
        ["foo", "2", "25", "12.50", "14", "0.6757", "", ""],  # 25 / 37
        ["n", "1", "7", "7.00", "7", "0.1892", "", ""],
    ]


def test_top_and_show_keys() -> None:
    first, second = two_sessions()

    out, _, _ = run_command("--top=1", "--show-keys")

    assert section(out, "Largest sessions")[0].startswith(f"83 bytes: {second}, expires ")
    assert len(section(out, "Largest sessions")) == 1
    assert first not in out


# The owner of the test site's cart, read from the view that writes it.
CART = "by tests (tests/views.py:17)"


def test_depth_breaks_values_down() -> None:
    client = Client()
    client.get("/cart/add/1/")
    client.get("/cart/add/22/")

    out, _, _ = run_command("--depth=2")

    # [{"product":1,"quantity":1}] less [] is 26 bytes, with 22 it is 27.
    assert section(out, "Nested (depth 2)") == [
        f"cart[] (1 times, avg. size 53.00 bytes), max 53 bytes, total 53 bytes, {CART}",
        f"cart[].quantity (1 times, avg. size 24.00 bytes), max 24 bytes, total 24 bytes, {CART}",
        f"cart[].product (1 times, avg. size 23.00 bytes), max 23 bytes, total 23 bytes, {CART}",
    ]


def test_human_sizes() -> None:
    session_of_size(3000)

    out, _, _ = run_command("--human")

    assert out.splitlines()[1].endswith(" bytes")  # Classic lines keep bytes.
    assert section(out, "Totals")[0].endswith(" KiB a session")


def test_sample_is_chosen_by_key_and_stated() -> None:
    keys = [session_via_view(n=str(n)) for n in range(40)]
    in_sample = [key for key in keys if zlib.crc32(key.encode()) < 0.5 * 2**32]

    out, _, _ = run_command("--sample=0.5")

    assert out.splitlines()[0] == f"Processed {len(in_sample)} sessions out of 40 total sessions"
    assert section(out, "Scope") == [
        "Only the sessions chosen by --sample 0.5 (by key: the numbers describe the sample)"
    ]
    assert run_command("--sample=0.5") == (out, "", 0)


def test_limit() -> None:
    for n in range(5):
        session_via_view(n=str(n))

    out, _, _ = run_command("--limit=3", "--batch-size=2")

    assert out.splitlines()[0] == "Processed 3 sessions out of 5 total sessions"
    assert section(out, "Scope") == [
        "Only the sessions chosen by --limit 3 (at most 3 sessions processed)"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sample=0"], "--sample must be a number above 0 and at most 1, not '0'."),
        (["--sample=1.5"], "--sample must be a number above 0 and at most 1, not '1.5'."),
        (["--limit=0"], "--limit must be a whole number from 1 to 1000000000000, not '0'."),
        (["--top=-1"], "--top must be a whole number from 0 to 1000, not '-1'."),
        (["--depth=11"], "--depth must be a whole number from 0 to 10, not '11'."),
    ],
)
def test_bad_report_options(args: list[str], message: str) -> None:
    assert run_command(*args) == ("", f"CommandError: {message}\n", 1)


@override_settings(ADMINS=ADMINS)
def test_mail_admins_sends_the_text_report(tmp_path: Path) -> None:
    first, second = two_sessions()
    with override_settings(**mail_to_files(tmp_path)):
        out, err, returncode = run_command("--mail-admins")
        report, _, _ = run_command()

    assert (out, err, returncode) == ("", "", 0)
    [message_file] = tmp_path.iterdir()
    message = email.message_from_bytes(message_file.read_bytes().split(b"\n" + b"-" * 79)[0])
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    body = payload.decode(message.get_content_charset() or "ascii")
    assert " ".join(message["Subject"].split()) == (
        "[Django] Sessions: 2 analyzed, 152 bytes stored, 0 expired, 0 undecodable"
    )
    assert message["To"] == "ops@example.com"
    assert body == report
    assert first not in body and second not in body


@override_settings(ADMINS=[])
def test_mail_admins_needs_admins() -> None:
    assert run_command("--mail-admins") == (
        "",
        "CommandError: --mail-admins needs someone to mail: the ADMINS setting is empty.\n",
        1,
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("verbosity", "shown"), [(1, True), (0, False)])
def test_progress_shows_on_a_terminal(verbosity: int, shown: bool) -> None:
    from django.core.management import call_command

    two_sessions()
    out, err = io.StringIO(), Terminal()

    call_command("analyze_sessions", stdout=out, stderr=err, verbosity=verbosity)

    assert ("Reading sessions" in err.getvalue()) is shown
    assert out.getvalue().startswith("Processed 2 sessions")


@pytest.mark.parametrize(
    ("args", "total"), [([], True), (["--bigger-than=1"], False), (["--shard=1/2"], False)]
)
def test_progress_has_a_total_where_the_scan_reads_the_whole_table(
    args: list[str], total: bool
) -> None:
    from django.core.management import call_command

    two_sessions()
    session_via_view(foo="bar")
    err = Terminal()

    call_command("analyze_sessions", *args, stdout=io.StringIO(), stderr=err)

    # tqdm writes "n/total" and the time left where it has a total.
    assert ("0/3 [" in err.getvalue()) is total
    assert "Reading sessions" in err.getvalue()


def test_no_progress_where_nobody_watches() -> None:
    two_sessions()

    assert run_command()[1] == ""


def test_an_interrupted_run_prints_what_it_read(monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(5):
        session_via_view(n=str(n))
    decode = Decoder.decode
    calls = []

    def interrupted(self: Decoder, raw: object) -> object:
        calls.append(raw)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return decode(self, raw)  # type: ignore[arg-type]

    monkeypatch.setattr(Decoder, "decode", interrupted)

    out, err, returncode = run_command()

    # No count after Ctrl-C: whoever pressed it wants the report now.
    assert out.splitlines()[0] == (
        "Processed 2 sessions out of an unknown number of total sessions"
    )
    assert section(out, "Scope") == ["Partial: interrupted after 2 sessions"]
    assert (err, returncode) == (
        "CommandError: Interrupted: the report covers the sessions read before.\n",
        130,
    )


def test_version_is_the_apps_own() -> None:
    # As installed: the version its packaging gives, not Django's.
    installed = metadata.version("django-analyze-sessions")
    assert installed != django.get_version()

    finished = django_admin("analyze-sessions", "--version")

    assert (finished.stdout, finished.stderr, finished.returncode) == (f"{installed}\n", "", 0)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--bigger-thn=1"], "error: unrecognized arguments: --bigger-thn=1"),
        (["--format=xml"], "error: argument --format: invalid choice: 'xml'"),
    ],
)
def test_an_option_that_is_not_one_is_told_as_django_tells_it(args: list[str], error: str) -> None:
    finished = django_admin("analyze-sessions", *args)

    assert finished.stdout == ""
    assert finished.stderr.startswith("usage: django-admin analyze-sessions ")
    assert error in finished.stderr.splitlines()[-1]
    assert finished.returncode == 2


def test_top_zero_given_as_a_number_lists_no_session() -> None:
    from django.core.management import call_command

    two_sessions()
    out = io.StringIO()

    call_command("analyze_sessions", top=0, stdout=out)

    assert "Largest sessions:" not in out.getvalue()
    assert "Largest sessions:" in run_command()[0]


def test_ctrl_c_while_the_rows_are_counted_is_an_interruption(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.core.management import CommandError, call_command

    from analyze_sessions.sources.database import DatabaseSource

    two_sessions()

    def interrupted(self: DatabaseSource) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(DatabaseSource, "total_sessions", interrupted)
    out = io.StringIO()

    with pytest.raises(CommandError) as stopped:
        call_command("analyze_sessions", stdout=out, stderr=Terminal())

    assert stopped.value.returncode == 130
    assert str(stopped.value) == "Interrupted: the report covers the sessions read before."
    assert out.getvalue().startswith(
        "Processed 0 sessions out of an unknown number of total sessions\n"
    )


def test_a_path_in_a_warning_is_escaped(tmp_path: Path) -> None:
    path = tmp_path / "ids\x1b[31m\nfake"
    path.write_text("")

    assert run_command(f"--ids-from={path}")[1] == (
        f"The ids file '{tmp_path}/ids\\x1b[31m\\nfake' lists no session keys, so none is "
        f"analyzed.\n"
    )
