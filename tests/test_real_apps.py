"""
The report of a site whose sessions come from real apps' views: tokens in key
names never shown, the keys of one pattern on one line, each key's app named.

The site: visitors who started logging in with GitHub (through the social
auth app, and through allauth) and never came back, some more than once;
users logged in through allauth's form, one stopped at its authenticator
code; checkout wizards left half way; carts and flash messages of the test
site's own views; and a kiosk's sessions, expired. Every number is checked
against the sessions as Django loads them, measured here with ``json``.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import Client, override_settings

from tests import sites
from tests.helpers import ADMINS, mail_to_files, run_command, section

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
SOCIAL_STATE = re.compile(r"github_oauth2_state_([A-Za-z0-9]{32})")


@pytest.fixture
def site() -> list[str]:
    """Make the site's sessions; return their keys."""
    ada = User.objects.create_user("ada", "ada@example.com", PASSWORD)
    grace = User.objects.create_user("grace", "grace@example.com", PASSWORD)
    sites.enable_totp(grace)
    keys = []
    for visitor in range(24):
        client = Client()
        for _ in range(1 + visitor % 3):
            sites.abandoned_social_auth_login(client, next_url="/orders/" if visitor % 2 else None)
        if visitor % 4 == 0:
            sites.cart(client, visitor, visitor + 1)
        keys.append(sites.session_key(client))
    for visitor in range(12):
        client = Client()
        for _ in range(1 + visitor % 2):
            sites.abandoned_allauth_login(client)
        keys.append(sites.session_key(client))
    for _ in range(3):
        client = Client()
        sites.allauth_password_login(client, ada, PASSWORD)
        sites.flashed(client, "Your order has shipped.")
        keys.append(sites.wizard_steps(client, 2))
    keys.append(sites.allauth_mfa_started(Client(), grace, PASSWORD))
    with override_settings(SESSION_COOKIE_AGE=-60):  # The kiosk's: expired, still stored.
        for product in range(4):
            keys.append(sites.cart(Client(), product))
    return keys


def sessions() -> list[tuple[str, dict[str, Any], datetime]]:
    """Every session as Django decodes it, expired or not, with its expiry."""
    return [
        (row.session_key, SessionStore().decode(row.session_data), row.expire_date)
        for row in Session.objects.all()
    ]


def entry_size(key: str, value: Any) -> int:
    """What a key and its value take in the JSON payload, measured here."""
    return len(json.dumps({key: value}, separators=(",", ":"))) - len("{}")


def tokens() -> set[str]:
    """The tokens in the sessions' key names, and in the keys of their dicts."""
    found = set()
    for _, session, _ in sessions():
        for key in session:
            if match := SOCIAL_STATE.fullmatch(key):
                found.add(match[1])
        found.update(session.get("socialaccount_states", {}))
        found.update(session.get("github_oauth2_transaction_index", {}))
    return found


def outputs(mailbox: Path, *options: str) -> Iterator[tuple[str, str]]:
    """Every format's output, and the mail's (written to ``mailbox``), with ``options``."""
    for report_format in ("text", "json", "csv"):
        out, err, returncode = run_command(f"--format={report_format}", *options)
        assert (err, returncode) == ("", 0)
        yield report_format, out
    out, err, returncode = run_command("--shard=1/1", "--format=json", *options)
    assert (err, returncode) == ("", 0)
    yield "shard", out
    with override_settings(ADMINS=ADMINS, **mail_to_files(mailbox)):
        assert run_command("--mail-admins", *options) == ("", "", 0)
    (message,) = mailbox.iterdir()
    yield "mail", message.read_text()


@pytest.mark.parametrize("depth", ["0", "2"])
def test_no_token_in_any_output(site: list[str], depth: str, tmp_path: Path) -> None:
    secrets = tokens()
    # 8 visitors each started 1, 2 and 3 social auth logins, 6 each 1 and 2
    # allauth ones: 48 + 18 tokens.
    assert len(secrets) == 48 + 18

    for name, out in outputs(tmp_path, f"--depth={depth}"):
        assert "github_oauth2_state_*" in out, name  # The output is read as written.
        shown = [secret for secret in secrets if secret in out]
        assert shown == [], f"{name} shows {len(shown)} tokens"
        # Nor any 12 characters of one.
        pieces = {secret[i : i + 12] for secret in secrets for i in range(len(secret) - 11)}
        assert not any(piece in out for piece in pieces), name


def test_show_keys_shows_every_key_by_name(site: list[str]) -> None:
    out, _, _ = run_command("--format=json", "--show-keys")
    shown = {line["key"] for line in json.loads(out)["keys"]}

    states = {f"github_oauth2_state_{token}" for token in tokens() if len(token) == 32}
    assert states <= shown
    assert not any("*" in key for key in shown)


def key_line(report: dict[str, Any], key: str) -> dict[str, Any]:
    lines: list[dict[str, Any]] = [line for line in report["keys"] if line["key"] == key]
    (line,) = lines
    return line


def test_keys_of_one_pattern_are_one_exact_line(site: list[str]) -> None:
    # By hand: each session once, with the bytes of all its state keys.
    sessions_with_states, total, most = 0, 0, 0
    for _, session, _ in sessions():
        states = [entry_size(k, v) for k, v in session.items() if SOCIAL_STATE.fullmatch(k)]
        if states:
            sessions_with_states += 1
            total += sum(states)
            most = max(most, sum(states))
    allauth = [s["socialaccount_states"] for _, s, _ in sessions() if "socialaccount_states" in s]

    out, _, _ = run_command("--format=json")
    report = json.loads(out)

    assert key_line(report, "github_oauth2_state_*") | {"mean_bytes": None, "share": None} == {
        "key": "github_oauth2_state_*",
        "sessions": sessions_with_states,
        "total_bytes": total,
        "max_bytes": most,
        "mean_bytes": None,
        "share": None,
        "grouped": True,
        "owner": "social_django",
        "where": None,
    }
    assert sessions_with_states == 24
    plain = key_line(report, "socialaccount_states")
    assert (plain["sessions"], plain["total_bytes"], plain["grouped"]) == (
        12,
        sum(entry_size("socialaccount_states", states) for states in allauth),
        False,
    )
    # Every key's bytes, grouped or not, still add up to the entries'.
    assert sum(line["total_bytes"] for line in report["keys"]) == sum(
        entry_size(k, v) for _, session, _ in sessions() for k, v in session.items()
    )

    text, _, _ = run_command()
    assert [line for line in text.splitlines() if "github_oauth2_state_" in line] == [
        f"    github_oauth2_state_* ({sessions_with_states} times, avg. size "
        f"{total / sessions_with_states:.2f} bytes), max {most} bytes, total {total} bytes, "
        f"by social_django"
    ]


def test_nested_paths_group_their_tokens(site: list[str]) -> None:
    out, _, _ = run_command("--format=json", "--depth=1")
    paths = {line["key"]: line for line in json.loads(out)["nested"]}

    assert "socialaccount_states.*" in paths
    assert paths["socialaccount_states.*"]["sessions"] == 12
    assert paths["socialaccount_states.*"]["owner"] == "allauth.socialaccount"
    assert paths["github_oauth2_transaction_index.*"]["sessions"] == 24


def test_owners_of_well_known_keys_and_of_the_sites_own(site: list[str]) -> None:
    out, _, _ = run_command("--format=json")
    report = json.loads(out)
    owners = {line["key"]: line["owner"] for line in report["keys"]}

    assert owners["github_oauth2_state_*"] == "social_django"
    assert owners["github_oauth2_transaction_index"] == "social_django"
    assert owners["socialaccount_states"] == "allauth.socialaccount"
    assert owners["account_authentication_methods"] == "allauth.account"
    assert owners["account_login"] == "allauth.account"
    assert owners["_auth_user_id"] == "django.contrib.auth"
    assert owners["_messages"] == "django.contrib.messages"
    assert owners["_session_expiry"] == "django.contrib.sessions"
    assert owners["wizard_checkout_wizard"] == "formtools"
    # The test site's own view, found in its source, with file and line.
    assert owners["cart"] == "tests"
    assert key_line(report, "cart")["where"].startswith("tests/views.py:")
    known = sum(line["total_bytes"] for line in report["owners"] if line["owner"] is not None)
    assert known >= 0.9 * report["payload_bytes"]["total"]

    by_app = section(run_command()[0], "By app")
    social = next(line for line in by_app if line.startswith("social_django: "))
    assert social.startswith("social_django: 24 sessions, ")


def test_largest_sessions_say_whether_they_expired(site: list[str]) -> None:
    expired = {key for key, _, expires in sessions() if expires < datetime.now(timezone.utc)}
    assert len(expired) == 4

    out, _, _ = run_command("--format=json", "--top=1000", "--show-keys")
    largest = json.loads(out)["largest_sessions"]

    assert len(largest) == Session.objects.count()
    assert {s["key_prefix"] for s in largest if s["expired"]} == expired
    text = section(run_command("--top=1000")[0], "Largest sessions")
    assert sum(", expired " in line for line in text) == 4


def test_csv_names_owners_and_no_tokens(site: list[str]) -> None:
    out, _, _ = run_command("--format=csv")
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(out))}

    assert rows["github_oauth2_state_*"]["owner"] == "social_django"
    assert rows["cart"]["where"].startswith("tests/views.py:")
