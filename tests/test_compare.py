"""
--compare: two runs a week apart on a store that changed in between,
against numbers computed from the store itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.contrib.sessions.serializers import JSONSerializer

from tests.helpers import run_command, section

pytestmark = pytest.mark.django_db

SCHEMA = Path(__file__).parent.parent / "analyze_sessions" / "report.schema.json"
WEEK_AGO = "2026-11-20T10:30:00Z"
# Keys whose names hold a token, and the pattern the report groups them under.
TOKENS = ("3a59507b24c1", "9f0e77d2aa41", "c4b1e0f7d9e2")


def save(**values: Any) -> str:
    store = SessionStore()
    store.update(values)
    store.save()
    assert store.session_key is not None
    return str(store.session_key)


def pattern(key: str) -> str:
    return "search_*" if key.startswith("search_") else key


def measured() -> tuple[int, int, dict[str, int]]:
    """Sessions, stored bytes and bytes by key pattern, from the store itself."""
    sessions = list(Session.objects.all())
    by_key: dict[str, int] = {}
    for session in sessions:
        for key, value in session.get_decoded().items():
            size = len(JSONSerializer().dumps({key: value})) - 2
            by_key[pattern(key)] = by_key.get(pattern(key), 0) + size
    return len(sessions), sum(len(s.session_data) for s in sessions), by_key


def last_week(tmp_path: Path) -> tuple[Path, tuple[int, int, dict[str, int]]]:
    """Last week's store, its report saved as cron saves it, dated a week ago."""
    for n in range(6):
        save(cart=["item"] * (n + 1), preferences={"theme": "dark"})
    for token in TOKENS:
        save(**{f"search_{token}": "shoes" * 20, "cart": ["item"]})
    path = tmp_path / "last.json"
    assert run_command("--format=csv", f"--save-json={path}")[1:] == ("", 0)
    document = json.loads(path.read_text())
    document["generated_at"] = WEEK_AGO
    path.write_text(json.dumps(document))
    return path, measured()


def this_week() -> None:
    """What a week did: sessions gone, a key dropped, one new, and a spike of bots."""
    for session in Session.objects.order_by("session_key")[:2]:
        session.delete()
    for session in Session.objects.all():
        decoded = session.get_decoded()
        decoded.pop("preferences", None)
        Session.objects.save(session.session_key, decoded, session.expire_date)
    for n in range(12):
        save(bot_trail=["/"] * 40, visit=n)


def change(before: int, after: int) -> dict[str, Any]:
    percent = None if before == 0 else round((after - before) * 100 / before, 1)
    return {"before": before, "after": after, "change": after - before, "percent": percent}


def test_a_week_later_the_changes_are_those_of_the_store(tmp_path: Path) -> None:
    path, (sessions_then, stored_then, keys_then) = last_week(tmp_path)
    this_week()
    sessions_now, stored_now, keys_now = measured()

    out, err, returncode = run_command(f"--compare={path}", "--format=json")
    text, text_err, text_returncode = run_command(f"--compare={path}")

    assert (err, returncode, text_err, text_returncode) == ("", 0, "", 0)
    document = json.loads(out)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    compared = document["compared_to"]
    assert (compared["generated_at"], compared["partial"]) == (WEEK_AGO, False)
    changes = compared["changes"]
    assert changes["sessions"] == change(sessions_then, sessions_now)
    assert changes["stored_bytes"] == change(stored_then, stored_now)
    assert changes["expired_sessions"] == change(0, 0)
    assert changes["undecodable_sessions"] == change(0, 0)
    both = keys_then.keys() & keys_now.keys()
    grew = sorted(
        ((key, keys_now[key] - keys_then[key]) for key in both if keys_now[key] > keys_then[key]),
        key=lambda item: -item[1],
    )
    shrank = sorted(
        ((key, keys_now[key] - keys_then[key]) for key in both if keys_now[key] < keys_then[key]),
        key=lambda item: item[1],
    )
    assert [(line["key"], line["change"]) for line in changes["keys_grew"]] == grew
    assert [(line["key"], line["change"]) for line in changes["keys_shrank"]] == shrank
    new = sorted(keys_now.keys() - keys_then.keys(), key=lambda key: -keys_now[key])
    gone = sorted(keys_then.keys() - keys_now.keys(), key=lambda key: -keys_then[key])
    assert gone == ["preferences"]
    assert [line["key"] for line in changes["new_keys"]["largest"]] == new
    assert [line["after"] for line in changes["new_keys"]["largest"]] == [
        keys_now[key] for key in new
    ]
    assert changes["new_keys"]["count"] == 2 and new == ["bot_trail", "visit"]
    assert changes["gone_keys"] == {
        "count": 1,
        "largest": [
            {
                "key": "preferences",
                "grouped": False,
                "before": keys_then["preferences"],
                "after": 0,
                "change": -keys_then["preferences"],
            }
        ],
    }
    # The text says the same, under the earlier run's date.
    since = section(text, "Since 2026-11-20 10:30 UTC")
    after, before = sessions_now, sessions_then
    assert since[0] == (
        f"Sessions: {after}, +{after - before} "
        f"({changes['sessions']['percent']:+.1f}%) from {before}"
    )
    assert since[1].startswith(f"Stored: {stored_now} bytes, ")
    assert "New keys: 2" in since
    assert f"    bot_trail: {keys_now['bot_trail']} bytes" in since
    assert "Gone keys: 1" in since


def test_a_report_without_a_date_is_of_an_unknown_date(tmp_path: Path) -> None:
    path, _ = last_week(tmp_path)
    document = json.loads(path.read_text())
    del document["generated_at"]
    document["partial"] = True
    path.write_text(json.dumps(document))

    out, err, returncode = run_command(f"--compare={path}")
    data, _, _ = run_command(f"--compare={path}", "--format=json")

    assert (err, returncode) == ("", 0)
    assert section(out, "Since the earlier report (of an unknown date), a partial one")
    assert json.loads(data)["compared_to"]["generated_at"] is None


def test_a_report_of_schema_version_1_is_compared_by_pattern(tmp_path: Path) -> None:
    path, (_, _, keys_then) = last_week(tmp_path)
    document = json.loads(path.read_text())
    # As version 1 wrote it: a line per key, the tokens' too, and no apps.
    document["schema_version"] = 1
    del document["owners"]
    document["keys"] = [
        {"key": key, "sessions": 1, "total_bytes": bytes_, "mean_bytes": bytes_, "max_bytes": 1}
        for session in Session.objects.all()
        for key, bytes_ in (
            (key, len(JSONSerializer().dumps({key: value})) - 2)
            for key, value in session.get_decoded().items()
        )
    ]
    path.write_text(json.dumps(document))

    out, err, returncode = run_command(f"--compare={path}", "--format=json")
    text, _, _ = run_command(f"--compare={path}")

    assert (err, returncode) == ("", 0)
    changes = json.loads(out)["compared_to"]["changes"]
    # Nothing changed: the tokens' keys are search_* in both.
    assert changes["keys_grew"] == changes["keys_shrank"] == []
    assert changes["new_keys"] == changes["gone_keys"] == {"count": 0, "largest": []}
    assert changes["owners_grew"] is changes["owners_shrank"] is None
    since = section(text, "Since 2026-11-20 10:30 UTC")
    assert "Apps: the earlier report (schema version 1) does not name them" in since
    assert [line for line in since if any(token in line for token in TOKENS)] == []


def test_names_in_a_forged_report_are_shown_escaped(tmp_path: Path) -> None:
    path, _ = last_week(tmp_path)
    document = json.loads(path.read_text())
    document["keys"].append(
        {"key": "evil\n    Sessions: 0\x1b[2J", "total_bytes": 10**6, "grouped": True}
    )
    path.write_text(json.dumps(document))

    out, err, returncode = run_command(f"--compare={path}")

    assert (err, returncode) == ("", 0)
    since = section(out, "Since 2026-11-20 10:30 UTC")
    assert "\x1b" not in out
    assert [line for line in since if "evil" in line] == [
        "    evil\\n    Sessions: 0\\x1b[2J: 1000000 bytes"
    ]


@pytest.mark.parametrize(
    ("shape", "args", "refusal"),
    [
        (
            lambda d: d.update(engine="django.contrib.sessions.backends.file"),
            [],
            "it is a report of another session engine than 'django.contrib.sessions.backends.db'.",
        ),
        (
            lambda d: None,
            ["--bigger-than=10"],
            "its sessions were chosen with other options (--bigger-than), so the numbers "
            "would not measure the same sessions.",
        ),
        (
            lambda d: d["filters"].update(sample=0.5, depth=2),
            [],
            "its sessions were chosen with other options (--sample, --depth), so the numbers "
            "would not measure the same sessions.",
        ),
        (
            lambda d: d["keys"][0].update(total_bytes=-1),
            [],
            "it is not a JSON report of schema version 1 or 2 (keys[0].total_bytes is not as "
            "a report has it).",
        ),
        (
            lambda d: d["sessions"].update(processed=2.0),
            [],
            "it is not a JSON report of schema version 1 or 2 (sessions.processed is not as a "
            "report has it).",
        ),
        (
            lambda d: d["stored_bytes"].update(total=10**400),
            [],
            "it is not a JSON report of schema version 1 or 2 (stored_bytes.total is not as a "
            "report has it).",
        ),
        (
            lambda d: d.update(generated_at="2026-02-30T25:61:61Z"),
            [],
            "its generated_at is no date and time the calendar has.",
        ),
        (
            lambda d: d.update(schema_version=3),
            [],
            "it is not a JSON report of schema version 1 or 2 (schema_version is not as a "
            "report has it).",
        ),
    ],
)
def test_reports_that_cannot_be_compared_with_are_one_sentence(
    tmp_path: Path, shape: Any, args: list[str], refusal: str
) -> None:
    path, _ = last_week(tmp_path)
    document = json.loads(path.read_text())
    shape(document)
    path.write_text(json.dumps(document))

    out, err, returncode = run_command(f"--compare={path}", *args)

    assert (out, err, returncode) == (
        "",
        f"CommandError: Cannot compare with '{path}': {refusal}\n",
        1,
    )


def test_files_that_are_no_report_are_one_sentence(tmp_path: Path) -> None:
    text_file = tmp_path / "report.txt"
    text_file.write_text("Processed 3 sessions out of 3 total sessions\n")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    assert run_command(f"--compare={text_file}") == (
        "",
        f"CommandError: Cannot compare with '{text_file}': it is not a JSON report (made with "
        "--format json or --save-json).\n",
        1,
    )
    assert run_command(f"--compare={fifo}") == (
        "",
        f"CommandError: Cannot read report '{fifo}': it is not a regular file.\n",
        1,
    )
    assert run_command(f"--compare={tmp_path}/missing.json") == (
        "",
        f"CommandError: Cannot read report '{tmp_path}/missing.json': No such file or directory.\n",
        1,
    )
    assert run_command(f"--compare={text_file}", "--format=csv") == (
        "",
        "CommandError: --compare says what changed in the text and JSON reports: --format csv "
        "shows this run only.\n",
        1,
    )


def test_merged_shards_are_compared_too(tmp_path: Path) -> None:
    path, (sessions_then, _, _) = last_week(tmp_path)
    this_week()
    shards = [tmp_path / f"shard-{k}.json" for k in (1, 2)]
    for k, shard in enumerate(shards, start=1):
        assert run_command(f"--shard={k}/2", f"--save-json={shard}")[1:] == ("", 0)

    out, err, returncode = run_command("--merge", *map(str, shards), f"--compare={path}")

    assert (err, returncode) == ("", 0)
    sessions_now = Session.objects.count()
    assert section(out, "Since 2026-11-20 10:30 UTC")[0].startswith(
        f"Sessions: {sessions_now}, +{sessions_now - sessions_then} "
    )
