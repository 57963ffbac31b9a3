"""Reports of shards: read, checked against the schema, and merged only when they fit."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.test import override_settings

from analyze_sessions.shards import ShardReportError, in_range, key_range, read_shard_report
from tests.helpers import run_command, section, session_via_view, within

pytestmark = pytest.mark.django_db

CANARY = "CANARY-8b1e5f"


def shard_reports(tmp_path: Path, *args: str) -> list[Path]:
    """The JSON reports of shards 1/2 and 2/2 of the sessions there are, run with ``args``."""
    paths = []
    for shard in ("1/2", "2/2"):
        out, err, returncode = run_command(f"--shard={shard}", "--format=json", *args)
        assert (err, returncode) == ("", 0)
        path = tmp_path / f"shard-{shard[0]}{'-'.join(args)}.json"
        path.write_text(out)
        paths.append(path)
    return paths


def changed(path: Path, change: Callable[[dict[str, Any]], object]) -> Path:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))
    return path


def disk(**forged: Any) -> dict[str, Any]:
    return {"index_bytes": 0, **forged}


def merge(*paths: Path) -> tuple[str, str, int]:
    return run_command("--merge", *map(str, paths))


def refusal(path: Path, where: str) -> tuple[str, str, int]:
    return (
        "",
        f"CommandError: Cannot merge '{path}': it is not a report of a shard that this "
        f"version can merge ({where} is not as the report's schema says).\n",
        1,
    )


@pytest.fixture
def reports(tmp_path: Path) -> list[Path]:
    # Keys are random: sessions are made until each of the two shards has some.
    keys: list[str] = []
    while len(keys) < 6 or not all(
        any(in_range(key, key_range(shard, 2)) for key in keys) for shard in (0, 1)
    ):
        n = len(keys)
        keys.append(session_via_view(n=str(n), **{f"key_{n}": "v"}))
    return shard_reports(tmp_path)


def test_the_shards_of_one_run_merge(reports: list[Path]) -> None:
    out, err, returncode = merge(*reports)

    assert (err, returncode) == ("", 0)
    assert out == run_command()[0]


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.pop("filters"), "the report as a whole"),
        (lambda d: d["filters"].update(shard="x/y"), "filters.shard"),
        (
            lambda d: d["state"]["totals"].update(processed="6"),
            "state.totals.processed",
        ),
        (
            lambda d: d["state"]["totals"].update(stored_bytes=-1),
            "state.totals.stored_bytes",
        ),
        (lambda d: d["state"].update(top=10**6), "state.top"),
        (lambda d: d["state"]["sizes"]["buckets"].update(x=1), "state.sizes.buckets"),
        (lambda d: d["state"].pop("unreadable"), "state"),
        # A key's name is the report's own, and may be a secret: never shown.
        (
            lambda d: d["state"]["keys"].update({CANARY: [1, "x", 2]}),
            "state.keys.*[1]",
        ),
        (lambda d: d["state"]["users"]["exact"].update({CANARY: [-1, 2, 0]}), "state.users"),
        (
            lambda d: d.update(disk={"table": "t", "total_bytes": -1, "index_bytes": 0}),
            "disk.total_bytes",
        ),
        (
            lambda d: d.update(disk={"table": "t" * 201, "total_bytes": 1, "index_bytes": 0}),
            "disk.table",
        ),
    ],
)
def test_a_forged_report_is_refused_by_the_schema(
    reports: list[Path], change: Callable[[dict[str, Any]], object], where: str
) -> None:
    forged = changed(reports[1], change)

    result = merge(reports[0], forged)

    assert result == refusal(forged, where)
    assert CANARY not in "".join(map(str, result))


def set_state(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["state"].update(changes)


def set_sizes(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["state"]["sizes"].update(changes)


def first_largest_expiring(moment: str) -> Callable[[dict[str, Any]], object]:
    return lambda d: d["state"]["largest"][0].__setitem__(2, moment)


@pytest.mark.parametrize(
    "change",
    [
        set_state(now="not a date"),
        # Past the calendar's end once in UTC.
        first_largest_expiring("9999-12-31T23:59:59-05:00"),
        # More of the largest sessions than were kept, down to none kept.
        set_state(top=0),
        # Sizes that do not describe the sessions processed.
        set_sizes(count=99),
        lambda d: d["state"]["sizes"]["exact"].append(1),
        set_sizes(powers={"7": 99}),
        set_sizes(minimum=10**6),
        set_sizes(minimum=None),
        lambda d: d["state"]["sizes"].update(
            exact=None, buckets={"1": d["state"]["sizes"]["count"] + 1}
        ),
    ],
)
def test_a_state_that_does_not_hold_together_is_refused(
    reports: list[Path], change: Callable[[dict[str, Any]], object]
) -> None:
    forged = changed(reports[1], change)

    assert merge(reports[0], forged) == (
        "",
        f"CommandError: Cannot merge '{forged}': it is not a report of a shard that this "
        "version can merge (its state does not hold together).\n",
        1,
    )


@pytest.mark.parametrize(
    "content",
    ["[" * 100_000, "{" * 100_000, '{"a": ' + "9" * 5000 + "}", "not json", "\udcff"],
)
def test_what_is_not_json_is_refused(reports: list[Path], tmp_path: Path, content: str) -> None:
    path = tmp_path / "forged.json"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))

    assert merge(reports[0], path) == (
        "",
        f"CommandError: Cannot merge '{path}': it is not a JSON report of a shard (made with "
        "--shard and --format json).\n",
        1,
    )


def test_endless_and_special_files_are_refused(reports: list[Path], tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # Nobody writes to it: reading it would wait for ever.

    for path in ("/dev/zero", str(fifo), str(tmp_path)):
        with within(20):
            out, err, returncode = run_command("--merge", str(reports[0]), path)
        assert (out, err, returncode) == (
            "",
            f"CommandError: Cannot read report '{path}': it is not a regular file.\n",
            1,
        )


def test_a_report_larger_than_any_report_is_refused(reports: list[Path]) -> None:
    size = reports[0].stat().st_size

    with pytest.raises(ShardReportError) as refused:
        read_shard_report(str(reports[0]), max_size=size - 1)

    assert str(refused.value) == (
        f"Cannot merge '{reports[0]}': it is larger than any report of a shard can be (0 MiB)."
    )
    assert read_shard_report(str(reports[0]), max_size=size).shard == (0, 2)


def test_shards_made_with_other_filters_are_refused(reports: list[Path], tmp_path: Path) -> None:
    bigger = shard_reports(tmp_path, "--bigger-than=160")

    assert merge(reports[0], bigger[1]) == (
        "",
        f"CommandError: Cannot merge '{bigger[1]}' with '{reports[0]}': they differ in "
        "bigger_than, so they are not shards of one run.\n",
        1,
    )


def test_shards_of_another_engine_are_refused(reports: list[Path], tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(directory)
    ):
        session_via_view(n="1")
        files = shard_reports(tmp_path, "--depth=0")
        from django.contrib.sessions.backends.file import SessionStore as FileSessionStore

        if hasattr(FileSessionStore, "_storage_path"):
            del FileSessionStore._storage_path

    assert merge(reports[0], files[1]) == (
        "",
        f"CommandError: Cannot merge '{files[1]}' with '{reports[0]}': they differ in "
        "engine, so they are not shards of one run.\n",
        1,
    )


def test_a_report_of_more_items_than_any_shard_holds_is_refused(
    reports: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    items = sum(reports[1].read_bytes().count(c) for c in (b",", b"[", b"{"))
    monkeypatch.setattr("analyze_sessions.shards.MAX_REPORT_ITEMS", items - 1)

    assert merge(reports[1], reports[0])[1] == (
        f"CommandError: Cannot merge '{reports[1]}': it holds more than any report of a shard "
        f"can ({items - 1} items).\n"
    )


def test_a_report_of_another_schema_version_is_refused_by_name(reports: list[Path]) -> None:
    first, second = reports
    older = changed(first, lambda document: document.update(schema_version=1))

    assert merge(older, second) == (
        "",
        f"CommandError: Cannot merge '{older}': it is a report of schema version 1, and this "
        f"version merges version 2 only: run its shard again with this version.\n",
        1,
    )


def test_shard_states_hold_patterns_not_tokens(tmp_path: Path) -> None:
    token = "Xq7ZkLmP2vRtY9wBcD4hJ8sNpQ3fGa6e"
    session_via_view(**{f"github_oauth2_state_{token}": "1", "next": "/"})
    session_via_view(**{f"github_oauth2_state_{token[::-1]}": "1"})

    paths = shard_reports(tmp_path)
    merged, _, _ = merge(*paths)

    texts = [path.read_text() for path in paths] + [merged]
    # The sessions fall in either shard, or both in one.
    assert sum(text.count('"github_oauth2_state_*"') for text in texts[:2]) >= 2
    assert not any(token in text or token[::-1] in text for text in texts)
    assert "    github_oauth2_state_* (2 times, avg. size " in merged


def test_shards_that_show_keys_merge_only_with_show_keys(tmp_path: Path) -> None:
    token = "Xq7ZkLmP2vRtY9wBcD4hJ8sNpQ3fGa6e"
    for n in range(6):
        session_via_view(**{f"github_oauth2_state_{n}{token}": "1"})
    shown = shard_reports(tmp_path, "--show-keys")
    grouped = shard_reports(tmp_path)

    for first, second in ((shown[0], grouped[1]), (grouped[0], shown[1])):
        out, err, returncode = merge(first, second)
        assert (out, returncode) == ("", 1)
        assert "--show-keys" in err and token not in err
    out, err, returncode = merge(*shown)
    assert "CommandError: Cannot merge" in err and "made with --show-keys" in err
    assert token not in out
    out, err, returncode = run_command("--merge", *map(str, shown), "--show-keys")
    assert (err, returncode) == ("", 0)
    key_lines = [line for line in out.splitlines() if line.startswith("    github_oauth2_state_")]
    assert len(key_lines) == 6 and all(token in line for line in key_lines)


def test_a_shards_text_report_says_its_total_is_the_shards(reports: list[Path]) -> None:
    everything = run_command()[0].splitlines()[0]
    keys = Session.objects.values_list("session_key", flat=True)
    in_first = [key for key in keys if in_range(key, key_range(0, 2))]

    out, err, returncode = run_command("--shard=1/2")

    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == (
        f"Processed {len(in_first)} sessions out of {len(in_first)} total sessions"
    )
    assert everything.endswith(f"out of {Session.objects.count()} total sessions")
    assert section(out, "Scope") == [
        "Only the sessions chosen by --shard 1/2 (the total is the shard's)"
    ]


def test_merge_applies_the_options_that_shape_the_report(reports: list[Path]) -> None:
    for shaping in (["--top=2"], ["--top=0"], ["--human"], ["--format=csv"], ["--format=json"]):
        merged = run_command("--merge", *map(str, reports), *shaping)
        assert merged[1:] == ("", 0)
        if shaping == ["--format=json"]:
            assert (
                json.loads(merged[0])["sessions"]
                == json.loads(run_command(*shaping)[0])["sessions"]
            )
        else:
            assert merged[0] == run_command(*shaping)[0], shaping
    assert (
        len(section(run_command("--merge", *map(str, reports), "--top=2")[0], "Largest sessions"))
        == 2
    )


def test_merge_keeps_no_more_of_the_largest_than_the_shards_kept(reports: list[Path]) -> None:
    assert run_command("--merge", *map(str, reports), "--top=11") == (
        "",
        "CommandError: The shards kept their 10 largest sessions and users (--top 10 when "
        "they were read): --top can be at most 10 with --merge.\n",
        1,
    )


@pytest.mark.parametrize(
    ("reading", "named"),
    [
        (["--bigger-than=banana", "--jobs=0"], "--bigger-than, --jobs"),
        (["--sample=0.5"], "--sample"),
        (["--database=replica", "--depth=2", "--limit=3"], "--limit, --depth, --database"),
    ],
)
def test_merge_refuses_the_options_that_read_sessions(
    reports: list[Path], reading: list[str], named: str
) -> None:
    assert run_command("--merge", *map(str, reports), *reading) == (
        "",
        f"CommandError: --merge reads no sessions, so {named} cannot apply: the shards were "
        f"read with their own options.\n",
        1,
    )


def test_forged_filters_are_shown_escaped_and_never_measured(reports: list[Path]) -> None:
    # The shards agree, as merging asks, on filters no run could have written.
    forged = {"bigger_than": "x", "sample": "0.5", "limit": "3\x1b[31m\nFAKE LINE"}
    for path in reports:
        changed(path, lambda document: document["filters"].update(forged))

    out, err, returncode = merge(*reports)

    assert (err, returncode) == ("", 0)
    assert "\x1b" not in out and "\nFAKE LINE" not in out
    assert section(out, "Scope") == [
        "Only the sessions chosen by --bigger-than x bytes, --sample 0.5 (by key: the "
        "numbers describe the sample), --limit 3\\x1b[31m\\nFAKE LINE (at most "
        "3\\x1b[31m\\nFAKE LINE sessions processed)"
    ]


def test_merge_takes_the_defaults_of_reading_options_however_given(reports: list[Path]) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("analyze_sessions", merge=list(map(str, reports)), jobs=1, depth=0, stdout=out)

    assert out.getvalue() == run_command()[0]
