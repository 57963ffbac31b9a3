"""--save-json: one scan, the chosen format out, the JSON report kept, whole or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

from tests.helpers import (
    ADMINS,
    DJANGO_ADMIN,
    django_admin_env,
    mail_to_files,
    run_command,
    session_via_view,
)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def sessions() -> None:
    for n in range(6):
        session_via_view(cart="x" * (10 * n), n=str(n))


@pytest.fixture
def umask() -> Iterator[None]:
    previous = os.umask(0o027)
    yield
    os.umask(previous)


def without_date(document: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in document.items() if name != "generated_at"}


def test_the_text_goes_out_and_the_json_report_is_saved(tmp_path: Path, umask: None) -> None:
    path = tmp_path / "report.json"
    before = datetime.now(timezone.utc).replace(microsecond=0)

    out, err, returncode = run_command(f"--save-json={path}")
    json_out, _, _ = run_command("--format=json")

    after = datetime.now(timezone.utc)
    assert (err, returncode) == ("", 0)
    assert out == run_command()[0]
    saved = json.loads(path.read_text())
    assert without_date(saved) == without_date(json.loads(json_out))
    # Python 3.10 reads no Z.
    assert before <= datetime.fromisoformat(saved["generated_at"].replace("Z", "+00:00")) <= after
    assert saved["generated_at"].endswith("Z")
    assert path.stat().st_mode & 0o777 == 0o640  # As the umask of 027 makes new files.
    assert sorted(tmp_path.iterdir()) == [path]  # No temporary file left behind.


def test_mail_and_save(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    mailbox = tmp_path / "mail"
    with override_settings(ADMINS=ADMINS, **mail_to_files(mailbox)):
        out, err, returncode = run_command("--mail-admins", f"--save-json={path}")

    assert (out, err, returncode) == ("", "", 0)
    [sent] = mailbox.iterdir()
    assert "Processed 6 sessions out of 6 total sessions" in sent.read_text()
    assert json.loads(path.read_text())["sessions"]["processed"] == 6


def test_a_symbolic_link_is_replaced_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path = tmp_path / "report.json"
    path.symlink_to(victim)

    out, err, returncode = run_command("--format=csv", f"--save-json={path}")

    assert (err, returncode) == ("", 0)
    assert victim.read_text() == "keep me\n"
    assert not path.is_symlink()
    assert json.loads(path.read_text())["sessions"]["processed"] == 6


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("missing/report.json", "No such file or directory"),
        ("a-directory", "it is there, and is not a regular file, so it is not replaced"),
        ("a-fifo", "it is there, and is not a regular file, so it is not replaced"),
    ],
)
def test_a_report_that_cannot_be_saved_is_one_sentence_after_the_report(
    tmp_path: Path, where: str, reason: str
) -> None:
    (tmp_path / "a-directory").mkdir()
    os.mkfifo(tmp_path / "a-fifo")  # Never replaced: nor a device, as /dev/null.
    path = tmp_path / where
    listed = sorted(tmp_path.iterdir())

    out, err, returncode = run_command(f"--save-json={path}")

    assert out == run_command()[0]  # Printed first: nothing of the run is lost.
    assert (err, returncode) == (
        f"CommandError: Cannot save the JSON report to '{path}': {reason}.\n",
        1,
    )
    assert sorted(tmp_path.iterdir()) == listed
    assert list((tmp_path / "a-directory").iterdir()) == []


def test_a_reader_never_sees_half_a_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"old": True}) + "\n")
    renames: list[tuple[str, str, str]] = []
    rename = os.replace

    def recording_rename(source: Any, target: Any) -> None:
        # What is about to take the report's place: already whole, in its directory.
        renames.append((str(source), str(target), Path(source).read_text()))
        rename(source, target)

    monkeypatch.setattr("analyze_sessions.saving.os.replace", recording_rename)
    seen: list[str] = []
    stop = threading.Event()

    def read_all_the_time() -> None:
        while not stop.is_set():
            seen.append(path.read_text())

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for _ in range(5):
            assert run_command(f"--save-json={path}")[1:] == ("", 0)
    finally:
        stop.set()
        reader.join()

    assert len(renames) == 5
    for source, target, text in renames:
        assert target == str(path)
        assert Path(source).parent == path.parent
        assert json.loads(text)["sessions"]["processed"] == 6
    assert seen and all(json.loads(text) for text in seen)


def test_shards_saved_as_json_can_be_merged(tmp_path: Path) -> None:
    paths = [tmp_path / f"shard-{k}.json" for k in (1, 2)]
    for k, path in enumerate(paths, start=1):
        assert run_command(f"--shard={k}/2", f"--save-json={path}")[1:] == ("", 0)

    merged, err, returncode = run_command("--merge", *map(str, paths))

    assert (err, returncode) == ("", 0)
    assert merged.splitlines()[0] == "Processed 6 sessions out of 6 total sessions"


@pytest.mark.parametrize(
    ("args", "refusal"),
    [
        (
            ["--save-json=-"],
            "--save-json saves to a file: give its path (--format prints to standard output).",
        ),
        (
            ["--save-metrics="],
            "--save-metrics saves to a file: give its path (--format prints to standard output).",
        ),
        (
            ["--save-json=same", "--save-metrics=./same"],
            "--save-json and --save-metrics cannot save to the same file.",
        ),
    ],
)
def test_paths_that_cannot_be_saved_to_are_refused_before_the_scan(
    args: list[str], refusal: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert run_command(*args) == ("", f"CommandError: {refusal}\n", 1)
    assert list(tmp_path.iterdir()) == []


@override_settings(
    SESSION_ENGINE="tests.engines.jsonlines",
    ANALYZE_SESSIONS_SOURCES={
        "tests.engines.jsonlines": "tests.engines.broken_sources.FailsMidway"
    },
)
def test_a_run_that_fails_midway_leaves_last_weeks_files(tmp_path: Path) -> None:
    kept, metrics = tmp_path / "last.json", tmp_path / "sessions.prom"
    kept.write_text("last week's\n")
    metrics.write_text("last week's\n")

    out, err, returncode = run_command(f"--save-json={kept}", f"--save-metrics={metrics}")

    assert out.startswith("Processed 1 sessions out of ")
    assert err.endswith(
        "The report covers the sessions read before. The files it would save were left as "
        "they were.\n"
    )
    assert returncode == 1
    assert kept.read_text() == metrics.read_text() == "last week's\n"


@pytest.mark.django_db(transaction=True)  # Committed: the process reads it.
def test_the_files_are_saved_when_the_reader_goes_away(tmp_path: Path) -> None:
    # Keys enough that the JSON report fills the pipe, which the reader closes.
    store = SessionStore()
    store.update({a + b + c: 1 for a in "abcdefghij" for b in "abcdefghij" for c in "abcdefghij"})
    store.save()
    path = tmp_path / "report.json"
    process = subprocess.Popen(
        [DJANGO_ADMIN, "analyze_sessions", "--format=json", f"--save-json={path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=django_admin_env(),
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.readline()  # | head -1
    process.stdout.close()
    process.wait(timeout=120)
    with process.stderr:
        err = process.stderr.read()

    assert (err, process.returncode) == (b"", 141)  # As a Unix tool whose reader went away.
    assert json.loads(path.read_text())["sessions"]["processed"] == 7
