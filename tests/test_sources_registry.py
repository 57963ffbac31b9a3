"""
ANALYZE_SESSIONS_SOURCES: an engine the command does not know, analyzed
through the source class the setting names for it, and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.serializers import JSONSerializer
from django.core import signing
from django.test import override_settings
from django.utils.module_loading import import_string

from analyze_sessions.shards import in_range, key_range
from analyze_sessions.sources import BUILT_IN_SOURCES
from tests.engines.jsonlines import SessionStore
from tests.helpers import run_command, section, session_via_view

ENGINE = "tests.engines.jsonlines"
SOURCES = {ENGINE: "tests.engines.jsonlines.JsonLinesSource"}
SALT = "django.contrib.sessions.SessionStore"


@pytest.fixture(autouse=True)
def engine(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sessions.jsonl"
    with override_settings(SESSION_ENGINE=ENGINE, JSONLINES_SESSIONS_FILE=str(path)):
        yield path


def rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def entry_size(key: str, value: Any) -> int:
    return len(JSONSerializer().dumps({key: value})) - len(JSONSerializer().dumps({}))


def make_sessions() -> None:
    for n in range(4):
        store = SessionStore()
        store["cart"] = list(range(n))
        store.save()
    # Through the site's own views and middleware too.
    session_via_view(search="shoes", page="2")
    with override_settings(SECRET_KEY="retired-" * 8):
        store = SessionStore()
        store["cart"] = ["old"]
        store.save()


@pytest.mark.django_db
def test_the_setting_alone_lets_the_command_read_an_engine_of_its_own(engine: Path) -> None:
    make_sessions()

    refused, refused_err, refused_returncode = run_command()
    with override_settings(ANALYZE_SESSIONS_SOURCES=SOURCES):
        out, err, returncode = run_command("--format=json")

    assert (refused, refused_returncode) == ("", 1)
    assert "ANALYZE_SESSIONS_SOURCES setting maps to a source class" in refused_err
    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    held = rows(engine)
    sessions = []
    for row in held:
        try:
            sessions.append(signing.loads(row["data"], salt=SALT, serializer=JSONSerializer))
        except signing.BadSignature:
            pass
    expected_keys: dict[str, int] = {}
    for session in sessions:
        for key, value in session.items():
            expected_keys[key] = expected_keys.get(key, 0) + entry_size(key, value)
    assert document["engine"] == ENGINE
    assert document["sessions"]["total"] == document["sessions"]["processed"] == len(held) == 6
    assert document["stored_bytes"]["total"] == sum(len(row["data"]) for row in held)
    assert document["undecodable"]["reasons"] == {"bad signature": 1}
    assert len(sessions) == 5
    assert {key["key"]: key["total_bytes"] for key in document["keys"]} == expected_keys


@pytest.mark.django_db
@override_settings(ANALYZE_SESSIONS_SOURCES=SOURCES)
def test_listed_keys_sizes_and_shards_go_through_the_source(engine: Path, tmp_path: Path) -> None:
    make_sessions()
    held = rows(engine)
    sizes = sorted(len(row["data"]) for row in held)
    listed = tmp_path / "keys.txt"
    listed.write_text(f"{held[0]['key']}\n{held[1]['key']}\n{'z' * 32}\n")

    by_keys = json.loads(run_command("--format=json", f"--ids-from={listed}")[0])
    by_size = json.loads(run_command("--format=json", f"--bigger-than={sizes[2]}")[0])
    shards = [json.loads(run_command("--format=json", f"--shard={k}/2")[0]) for k in (1, 2)]

    assert by_keys["sessions"]["processed"] == 2
    assert by_keys["sessions"]["not_found"] == 1
    assert by_size["sessions"]["processed"] == sum(size > sizes[2] for size in sizes)
    for k, shard in enumerate(shards):
        mine = [row for row in held if in_range(row["key"], key_range(k, 2))]
        assert shard["sessions"]["processed"] == len(mine)
        assert shard["stored_bytes"]["total"] == sum(len(row["data"]) for row in mine)


@pytest.mark.parametrize(
    ("setting", "refusal"),
    [
        (
            {ENGINE: "tests.engines.jsonlines.NoSuchSource"},
            "CommandError: Cannot load the source class 'tests.engines.jsonlines.NoSuchSource' "
            "for session engine 'tests.engines.jsonlines' that ANALYZE_SESSIONS_SOURCES names: ",
        ),
        (
            {ENGINE: "tests.engines.jsonlines.SessionStore"},
            "CommandError: 'tests.engines.jsonlines.SessionStore', the source class "
            "ANALYZE_SESSIONS_SOURCES names for session engine 'tests.engines.jsonlines', has "
            'no open() class method: see "Sessions kept elsewhere" in README.\n',
        ),
        (
            [ENGINE],
            "CommandError: The ANALYZE_SESSIONS_SOURCES setting must map engines' module paths "
            "to the dotted paths of source classes, both strings.\n",
        ),
        (
            {ENGINE: "analyze_sessions.sources.files.FileSource"},
            "CommandError: Session engine 'tests.engines.jsonlines' cannot be read as Django's "
            "file engine, as ANALYZE_SESSIONS_SOURCES says: its SessionStore is not made from "
            "that engine's.\n",
        ),
    ],
)
def test_a_setting_that_names_no_source_is_one_sentence(setting: Any, refusal: str) -> None:
    with override_settings(ANALYZE_SESSIONS_SOURCES=setting):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err.startswith(refusal) and err.count("\n") == 1


def test_the_built_in_sources_are_registered_as_a_site_would_register_one() -> None:
    assert set(BUILT_IN_SOURCES) >= {
        "django.contrib.sessions.backends.db",
        "django.contrib.sessions.backends.file",
        "django.contrib.sessions.backends.cache",
        "redis_sessions.session",
    }
    for path in BUILT_IN_SOURCES.values():
        assert callable(import_string(path).open)
    assert not hasattr(settings, "ANALYZE_SESSIONS_SOURCES")


@pytest.mark.django_db
@override_settings(
    SESSION_ENGINE="django.contrib.sessions.backends.cached_db",
    ANALYZE_SESSIONS_SOURCES={
        "django.contrib.sessions.backends.db": "tests.engines.jsonlines.JsonLinesSource"
    },
)
def test_a_site_can_put_its_own_source_in_place_of_a_built_in_one(engine: Path) -> None:
    # cached_db's SessionStore is made from db's: the site's source for db reads it.
    with override_settings(SESSION_ENGINE=ENGINE):
        make_sessions()

    out, err, returncode = run_command("--format=json")

    assert (err, returncode) == ("", 0)
    document = json.loads(out)
    assert document["engine"] == "django.contrib.sessions.backends.cached_db"
    assert document["sessions"]["processed"] == 6


BROKEN = "tests.engines.broken_sources"
YIELDED_WRONG = (
    "yielded something other than lists of RawSession(key, data, expires_at, stored_size), "
    "of the types README gives."
)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("source", "processed", "failure"),
    [
        ("Working", 2, None),
        (
            "OpenRaises",
            None,
            "failed to open the sessions of session engine '{engine}' (RuntimeError).",
        ),
        (
            "NotAClassMethod",
            None,
            "failed to open the sessions of session engine '{engine}' (TypeError).",
        ),
        (
            "OpensNothing",
            None,
            "did not open a source for session engine '{engine}': what its open() returned has "
            "no scan(), lookup(), total_sessions(), close().",
        ),
        ("YieldsNone", None, YIELDED_WRONG),
        ("YieldsWrongTypes", None, YIELDED_WRONG),
        ("YieldsDicts", None, YIELDED_WRONG),
        ("FailsMidway", 1, "failed to read its sessions (ConnectionError)."),
        ("ExitsMidway", 1, "failed to read its sessions (SystemExit)."),
        ("SaysTooMuch", None, "failed to read its sessions (SourceError)."),
        ("CountsWrong", 2, "counted its sessions as something other than a number."),
    ],
)
def test_a_site_source_that_fails_is_one_sentence_that_quotes_nothing_it_said(
    source: str, processed: int | None, failure: str | None
) -> None:
    path = f"{BROKEN}.{source}"
    with override_settings(ANALYZE_SESSIONS_SOURCES={ENGINE: path}):
        out, err, returncode = run_command()

    assert "hunter2" not in out + err
    if processed is None:
        assert out == ""
    else:
        assert out.startswith(f"Processed {processed} sessions out of ")
    if failure is None:
        assert (err, returncode) == ("", 0)
        return
    sentence = f"The source class '{path}' {failure.format(engine=ENGINE)}"
    if processed:
        sentence += " The report covers the sessions read before."
    assert (err, returncode) == (f"CommandError: {sentence}\n", 1)


def test_a_site_source_module_that_fails_to_import_is_one_sentence() -> None:
    path = "tests.engines.import_raises.Source"
    with override_settings(ANALYZE_SESSIONS_SOURCES={ENGINE: path}):
        out, err, returncode = run_command()

    assert (out, returncode) == ("", 1)
    assert err == (
        f"CommandError: Cannot load the source class '{path}' for session engine '{ENGINE}' "
        "that ANALYZE_SESSIONS_SOURCES names: importing it raised RuntimeError.\n"
    )


@pytest.mark.django_db
def test_a_site_source_is_kept_to_the_shard_asked_for() -> None:
    path = f"{BROKEN}.IgnoresShards"
    with override_settings(ANALYZE_SESSIONS_SOURCES={ENGINE: path}):
        shards = [json.loads(run_command("--format=json", f"--shard={k}/2")[0]) for k in (1, 2)]

    keys = [letter * 32 for letter in "a0z9m"]
    for k, shard in enumerate(shards):
        assert shard["sessions"]["processed"] == sum(in_range(key, key_range(k, 2)) for key in keys)
    assert sum(shard["sessions"]["processed"] for shard in shards) == 5


@pytest.mark.django_db
def test_reasons_a_site_source_gives_are_shown_only_as_plain_words() -> None:
    with override_settings(ANALYZE_SESSIONS_SOURCES={ENGINE: f"{BROKEN}.OddReasons"}):
        out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert "hunter2" not in out
    assert section(out, "Totals")[2].startswith(
        "Unreadable: 4 sessions (other reason: 3, symbolic link: 1)"
    )


# Committed: the jobs' own connections read it.
@pytest.mark.django_db(transaction=True)
@override_settings(
    ANALYZE_SESSIONS_SOURCES={
        "django.contrib.sessions.backends.db": "analyze_sessions.sources.database.DatabaseSource"
    }
)
def test_the_commands_own_source_named_in_the_setting_is_itself() -> None:
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.db"):
        for n in range(4):
            session_via_view(n=str(n))

        out, err, returncode = run_command("--jobs=2")

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 4 sessions out of 4 total sessions\n")
    assert section(out, "On disk")


@pytest.mark.django_db
def test_reasons_past_the_twentieth_are_counted_together() -> None:
    with override_settings(ANALYZE_SESSIONS_SOURCES={ENGINE: f"{BROKEN}.ManyReasons"}):
        out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    unreadable = section(out, "Totals")[2]
    assert unreadable.startswith("Unreadable: 25000 sessions (other reason: 5000, reason 0: 1000")
