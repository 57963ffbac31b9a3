"""
--tasks N: the shards read by real workers of the site's task queue:
django-tasks-db's ``db_worker`` processes on the test database, and a
Celery worker on a Redis started for the run, where Celery installs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.models import Session
from django.core.signing import BadSignature
from django.db import connection, connections
from django.utils import timezone
from django_tasks_db.models import DBTaskResult

from analyze_sessions.queued import SHARD_OPTIONS, Collected, report_signer
from analyze_sessions.shards import in_range, key_range
from tests.helpers import (
    DJANGO_ADMIN,
    django_admin,
    django_admin_env,
    run_command,
    section,
    session_via_view,
)
from tests.test_parallel import make_store

pytestmark = pytest.mark.django_db(transaction=True)

CELERY_INSTALLED = all(find_spec(name) for name in ("celery", "django_tasks_celery"))
CELERY_MISSING = (
    "Celery's task backend (django-tasks-celery) is for Django 6.0 and later on Python "
    "3.12+: run e.g. ./runtests -e py313-django61-sqlite"
)

Workers = Callable[..., list[subprocess.Popen[str]]]
# A test whose workers fail ends, rather than waits an hour.
WITHIN = ("--task-timeout=60",)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """
    Start real ``db_worker`` processes on the test database; stop them after
    the test, and show what they printed if the test failed.
    """
    started: list[subprocess.Popen[str]] = []

    def start(count: int = 2, env: dict[str, str] | None = None) -> list[subprocess.Popen[str]]:
        batch = []
        for _ in range(count):
            worker_id = f"worker-{len(started) + 1}"
            with open(tmp_path / f"{worker_id}.log", "w") as log:
                process = subprocess.Popen(
                    [
                        DJANGO_ADMIN,
                        "db_worker",
                        "--interval=0.1",
                        "--no-startup-delay",
                        "--no-reload",
                        f"--worker-id={worker_id}",
                        # The checks connect to every database, and the test
                        # site's replica is made only for the tests that use it.
                        "--skip-checks",
                    ],
                    env=django_admin_env(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            started.append(process)
            batch.append(process)
        return batch

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for log in sorted(tmp_path.glob("worker-*.log")):
        print(f"{log.name}:\n{log.read_text()}")  # Shown by pytest if the test failed.


def without_date(document: dict[str, Any]) -> dict[str, Any]:
    """A report without the time of its run, which no two runs share."""
    document = {name: value for name, value in document.items() if name != "generated_at"}
    if "state" in document:
        document["state"] = {
            name: value for name, value in document["state"].items() if name != "now"
        }
    return document


def store_rows() -> list[tuple[str, str, Any]]:
    return sorted(Session.objects.values_list("session_key", "session_data", "expire_date"))


def test_four_tasks_give_the_report_one_process_gives(workers: Workers) -> None:
    make_store()
    session = Session.objects.get(session_key=session_via_view(n="old"))
    session.expire_date = timezone.now() - timedelta(days=3)
    session.save()
    rows = store_rows()
    alone_json = json.loads(run_command("--format=json", "--top=50")[0])
    alone_text = run_command("--top=50")[0]
    workers(2)

    out, err, code = run_command("--tasks=4", "--format=json", "--top=50", *WITHIN)
    text, text_err, text_code = run_command("--tasks=4", "--top=50", *WITHIN)

    assert (err, code, text_err, text_code) == ("", 0, "", 0)
    assert without_date(json.loads(out)) == without_date(alone_json)
    assert alone_json["sessions"]["processed"] == len(rows) == 44
    assert alone_json["expired"]["sessions"] == 1
    assert text == alone_text
    # Each shard was one task, run once, by a worker; and the store is as it was.
    tasks = DBTaskResult.objects.filter(task_path="analyze_sessions.tasks.analyze_shard")
    assert sorted(tuple(task.args_kwargs["args"][:2]) for task in tasks) == sorted(
        [(1, 4), (2, 4), (3, 4), (4, 4)] * 2
    )
    assert {task.status for task in tasks} == {"SUCCESSFUL"}
    assert {worker for task in tasks for worker in task.worker_ids} <= {"worker-1", "worker-2"}
    assert store_rows() == rows


def test_what_a_task_is_given_and_gives_back(workers: Workers) -> None:
    make_store()
    workers(1)

    run_command("--tasks=2", "--bigger-than=100", "--depth=1", "--sample=.5", *WITHIN)

    tasks = DBTaskResult.objects.order_by("args_kwargs__args")
    options = tasks[0].args_kwargs["args"][2]
    assert set(options) == set(SHARD_OPTIONS) and "show_keys" not in options
    assert options["bigger_than"] == "100" and options["top"] is None
    assert re.fullmatch("[0-9a-f]{32}", options["run"])
    # The shard's report as --shard K/N --format json gives it, signed for the
    # run: compared after the run, when the store is the same.
    for task in tasks:
        k, n, options = task.args_kwargs["args"]
        shard = json.loads(
            run_command(
                f"--shard={k}/{n}",
                "--format=json",
                "--bigger-than=100",
                "--depth=1",
                "--sample=0.5",
            )[0]
        )
        text = report_signer(k, n, options).unsign(task.return_value)
        assert without_date(json.loads(text)) == without_date(shard)
        for other in (
            report_signer(3 - k, n, options),
            report_signer(k, n, {**options, "top": "9"}),
        ):
            with pytest.raises(BadSignature):
                other.unsign(task.return_value)


def test_a_killed_worker_leaves_a_partial_report_and_one_sentence(workers: Workers) -> None:
    for n in range(30):
        session_via_view(n=str(n))
    [one] = workers(1)
    args = ["--tasks=2", "--task-timeout=12", "--batch-size=1", "--sleep-time=0.1"]
    with run_in_background(*args) as process:
        deadline = time.monotonic() + 60
        while not (running := list(DBTaskResult.objects.filter(status="RUNNING"))):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        one.kill()  # As the out-of-memory killer would, mid-shard.
        workers(1)  # Takes the other shard.
        out, err = process.communicate(timeout=60)

    [task] = running
    k = task.args_kwargs["args"][0]
    keys = Session.objects.values_list("session_key", flat=True)
    finished = 30 - sum(in_range(key, key_range(k - 1, 2)) for key in keys)
    assert err == (
        f"CommandError: Shard {k}/2 did not finish within 12 seconds (--task-timeout). The "
        f"report covers the shards that finished.\n"
    )
    assert process.returncode == 1
    assert out.startswith(f"Processed {finished} sessions out of ")
    assert section(out, "Scope") == [
        f"Partial: shard {k}/2 did not finish; {finished} sessions from the others"
    ]
    assert 0 < finished < 30


def test_a_failed_task_is_named_with_its_sentence(workers: Workers) -> None:
    session_via_view(n="1")
    # A worker with other settings than this machine: its engine keeps no sessions.
    workers(1, env={"ANALYZE_SESSIONS_ENGINE": "django.contrib.sessions.backends.signed_cookies"})

    out, err, code = run_command("--tasks=2", *WITHIN)

    assert code == 1 and out == ""
    assert re.fullmatch(
        r"CommandError: Shards 1/2, 2/2 failed: Session engine "
        r"'django\.contrib\.sessions\.backends\.signed_cookies' keeps sessions in [^;]*\. "
        r"No shard finished, so there is no report\.\n",
        err,
    )


def test_a_worker_with_another_engine_is_not_merged(workers: Workers) -> None:
    session_via_view(n="1")
    workers(1, env={"ANALYZE_SESSIONS_ENGINE": "django.contrib.sessions.backends.cached_db"})

    out, err, code = run_command("--tasks=1", *WITHIN)

    assert (out, code) == ("", 1)
    assert err == (
        "CommandError: Shard 1/1: cannot merge the report: its worker's SESSION_ENGINE is "
        "'django.contrib.sessions.backends.cached_db', not "
        "'django.contrib.sessions.backends.db' as here. No shard finished, so there is no "
        "report.\n"
    )


def forge(task: DBTaskResult[Any, Any], value: Any) -> None:
    """Write ``value`` as the task's result, as anyone who can write to the queue could."""
    DBTaskResult.objects.filter(id=task.id).update(
        status="SUCCESSFUL", return_value=value, finished_at=timezone.now()
    )


def enqueued_by(process: subprocess.Popen[str], count: int) -> dict[int, DBTaskResult[Any, Any]]:
    """The tasks ``process`` enqueued, by shard, once it has enqueued ``count``."""
    deadline = time.monotonic() + 30
    while DBTaskResult.objects.filter(status="READY").count() < count:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    return {
        task.args_kwargs["args"][0]: task for task in DBTaskResult.objects.filter(status="READY")
    }


def run_in_background(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [DJANGO_ADMIN, "analyze-sessions", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=django_admin_env(),
    )


def test_forged_results_are_refused_one_by_one(workers: Workers) -> None:
    make_store()
    alone = run_command("--format=json", "--shard=1/5")[0]
    with run_in_background("--tasks=5", "--task-timeout=30") as process:
        tasks = enqueued_by(process, 5)
        options = tasks[1].args_kwargs["args"][2]
        forge(tasks[2], {"schema_version": 2})
        # Signed as a worker would sign it: by whoever has the site's key.
        forge(tasks[3], report_signer(3, 5, options).sign("{"))
        forge(tasks[4], report_signer(4, 5, options).sign(alone))  # Shard 1's report.
        forge(tasks[5], alone)  # By anyone else.
        workers(1)  # Reads shard 1 alone: the others are no longer ready.
        out, err = process.communicate(timeout=60)

    assert err == (
        "CommandError: Shard 2/5: cannot merge the report: its task gave back no report; "
        "shard 3/5: cannot merge the report: it is not a JSON report of a shard (made with "
        "--shard and --format json); shard 4/5: cannot merge the report: it is the report "
        "of another shard; shard 5/5: cannot merge the report: it is not signed for this run "
        "with this site's SECRET_KEY (the worker's is another, or the report is not its "
        "worker's). The report covers the shards that finished.\n"
    )
    assert process.returncode == 1
    processed = json.loads(alone)["sessions"]["processed"]
    assert out.startswith(f"Processed {processed} sessions")
    assert section(out, "Scope") == [
        f"Partial: shards 2/5, 3/5, 4/5, 5/5 did not finish; {processed} sessions from the others"
    ]


def test_the_results_of_an_earlier_run_are_not_taken(workers: Workers) -> None:
    make_store()
    [worker] = workers(1)
    assert run_command("--tasks=2", *WITHIN)[2] == 0
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)
    earlier = {
        task.args_kwargs["args"][0]: task.return_value for task in DBTaskResult.objects.all()
    }

    with run_in_background("--tasks=2", "--task-timeout=30") as process:
        for k, task in enqueued_by(process, 2).items():
            forge(task, earlier[k])  # Real reports, of this store, signed: for another run.
        out, err = process.communicate(timeout=60)

    assert (out, process.returncode) == ("", 1)
    assert err == (
        "CommandError: Shards 1/2, 2/2: cannot merge the report: it is not signed for this run "
        "with this site's SECRET_KEY (the worker's is another, or the report is not its "
        "worker's). No shard finished, so there is no report.\n"
    )


def test_a_task_whose_options_were_changed_in_the_queue_is_not_merged(workers: Workers) -> None:
    make_store()
    with run_in_background("--tasks=1", "--task-timeout=30") as process:
        [task] = enqueued_by(process, 1).values()
        # Every session counted too large: the worker reads and signs what it was given.
        task.args_kwargs["args"][2]["max_session_size"] = "1K"
        task.save(update_fields=["args_kwargs"])
        workers(1)
        out, err = process.communicate(timeout=60)

    assert (out, process.returncode) == ("", 1)
    assert err.startswith(
        "CommandError: Shard 1/1: cannot merge the report: it is not signed for this run"
    )


# Another site's key, and the key this site has retired (a worker left behind).
@pytest.mark.parametrize("key", ["another site's", "analyze-sessions-tests-retired"])
def test_a_worker_with_another_secret_key_is_not_merged(workers: Workers, key: str) -> None:
    session_via_view(n="1")
    workers(1, env={"ANALYZE_SESSIONS_SECRET_KEY": key})

    out, err, code = run_command("--tasks=1", *WITHIN)

    assert (out, code) == ("", 1)
    assert "Shard 1/1: cannot merge the report: it is not signed for this run" in err


def test_a_row_that_cannot_be_read_holds_up_no_other_shard(workers: Workers) -> None:
    make_store()
    with run_in_background("--tasks=2", "--task-timeout=60") as process:
        tasks = enqueued_by(process, 2)
        # Reading a result imports the task it names: this one prints as it is imported.
        DBTaskResult.objects.filter(id=tasks[1].id).update(task_path="this.anything")
        workers(1)
        deadline = time.monotonic() + 30
        while not DBTaskResult.objects.filter(id=tasks[2].id, status="SUCCESSFUL").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1)  # The command tries shard 1's row again and again meanwhile.
        DBTaskResult.objects.filter(id=tasks[1].id).delete()  # Pruned, say.
        out, err = process.communicate(timeout=60)

    processed = json.loads(run_command("--format=json", "--shard=2/2")[0])["sessions"]["processed"]
    assert out.startswith(f"Processed {processed} sessions out of ")
    assert "Zen of Python" not in out + err
    assert err == (
        "CommandError: Shard 1/2: the task's result was deleted from the queue. The report "
        "covers the shards that finished.\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tasks=2", "--task-backend=immediate"], "cannot give back a task's result"),
        (["--tasks=2", "--task-backend=nowhere"], "There is no task backend 'nowhere'"),
        (["--tasks=2", f"--task-backend={'x' * 3000}"], f"backend '{'x' * 40}\u2026' that"),
        (["--tasks=0"], "--tasks must be a whole number from 1 to 1000, not '0'"),
        (["--tasks=1001"], "--tasks must be a whole number from 1 to 1000"),
        (["--tasks=2", "--task-timeout=0"], "--task-timeout must be more than 0 seconds"),
        (["--tasks=2", "--task-timeout=nan"], "--task-timeout must be a number of seconds"),
        (["--tasks=2", "--shard=1/2"], "--tasks cannot go with --shard: --tasks makes the "),
        (
            ["--tasks=2", "--jobs=2", "--limit=3"],
            "--tasks cannot go with --jobs, --limit: each task reads its shard in one process; "
            "each task would stop at a limit of its own.",
        ),
        (["--tasks=2", "--ids-from=-"], "--ids-from: the workers cannot read this machine's"),
        (["--task-timeout=5"], "--task-timeout applies with --tasks only"),
        (["--task-backend=immediate"], "--task-backend applies with --tasks only"),
        (["--merge", "a.json", "--tasks=2"], "--merge reads no sessions, so --tasks cannot"),
        (["--merge", "a.json", "--task-timeout=5"], "--task-timeout applies with --tasks only"),
        (["--tasks=2", "--show-keys"], "--tasks cannot go with --show-keys: the shards' reports"),
        (["--tasks=2", "--bigger-than=x"], "Invalid size 'x'"),
    ],
)
def test_refused_before_anything_is_enqueued(args: list[str], message: str) -> None:
    out, err, code = run_command(*args)

    assert (out, code) == ("", 1)
    assert err.startswith("CommandError: ") and message in err, err
    assert err.count("\n") == 1
    assert not DBTaskResult.objects.exists()


@pytest.mark.skipif(not CELERY_INSTALLED, reason=CELERY_MISSING)
def test_a_queue_that_cannot_be_reached_is_one_sentence() -> None:
    session_via_view(n="1")

    result = django_admin(
        "analyze-sessions",
        "--tasks=2",
        "--task-backend=celery",
        env={"ANALYZE_SESSIONS_CELERY_REDIS": "redis://:secret-password@127.0.0.1:1/0"},
    )

    # Celery's result store is reached first: it is down too.
    assert result.returncode == 1
    assert result.stderr == (
        "CommandError: Cannot enqueue shard 1/2 on the task backend 'celery' (RuntimeError).\n"
    )


@pytest.mark.skipif(not CELERY_INSTALLED, reason=CELERY_MISSING)
# Celery's worker checks the models on every database: the replica's too.
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_celery_workers_give_the_report_one_process_gives(redis_location: str) -> None:
    make_store()
    alone = json.loads(run_command("--format=json")[0])
    env = {
        # The run's Redis, in a database of Celery's own.
        "ANALYZE_SESSIONS_CELERY_REDIS": f"{redis_location.rsplit('/', 1)[0]}/9",
        "ANALYZE_SESSIONS_REPLICA_NAME": connections["replica"].settings_dict["NAME"],
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "--app=tests.celery_app",
            "worker",
            "--pool=solo",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--loglevel=WARNING",
        ],
        env=django_admin_env(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        result = django_admin(
            "analyze-sessions",
            "--tasks=3",
            "--task-backend=celery",
            "--format=json",
            *WITHIN,
            env=env,
        )
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        worker_err = worker.communicate()[1]

    assert (result.stderr, result.returncode) == ("", 0), worker_err
    assert without_date(json.loads(result.stdout)) == without_date(alone)


def test_the_task_refuses_what_the_command_would_not_send() -> None:
    from analyze_sessions.tasks import ShardFailed, analyze_shard

    cases: list[tuple[Any, ...]] = [
        (0, 2, {}),
        (3, 2, {}),
        (True, 2, {}),
        (1, 2, {"ids_from": "/etc/shadow"}),
        (1, 2, {"save_json": "/etc/cron.d/x"}),
        (1, 2, {"top": 5}),
        (1, 2, {"database": None}),
        (1, 2, {"show_keys": True}),
        (1, 2, {"database": "default"}),
        (1, 2, {"run": "not one of --tasks"}),
        (1, 2, []),
    ]
    for args in cases:
        with pytest.raises(ShardFailed):
            analyze_shard.call(*args)


def test_many_reasons_make_one_sentence_of_bounded_length() -> None:
    collected = Collected(1000)
    for k in range(1, 1001):
        collected.problem(k, f" failed: reason number {k % 300}" if k < 990 else " did not finish")

    sentence = collected.sentence()

    # The five reasons of most shards, ten shards named for each, then the rest.
    assert sentence.startswith(
        "Shards 990/1000, 991/1000, 992/1000, 993/1000, 994/1000, 995/1000, 996/1000, "
        "997/1000, 998/1000, 999/1000 and 1 more did not finish; shards 1/1000, 301/1000, "
        "601/1000, 901/1000 failed: reason number 1; shards 2/1000, "
    )
    assert sentence.count(";") == 5 and len(sentence) < 1000
    assert sentence.endswith(" and 963 more did not finish for other reasons.")


def test_ctrl_c_waits_until_a_report_is_merged() -> None:
    from analyze_sessions.queued import _Deadline

    merged = []
    # As in a terminal: a run in the background of a script ignores Ctrl-C.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), _Deadline(60) as deadline, deadline.merging():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # The signal has come: the merge goes on.
            merged.append(True)
        assert merged == [True]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.skipif(not CELERY_INSTALLED, reason=CELERY_MISSING)
def test_a_queue_that_never_answers_is_given_up_at_the_timeout() -> None:
    session_via_view(n="1")
    held = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def hold() -> None:  # Takes every connection, and never answers.
            with contextlib.suppress(OSError):
                while True:
                    held.append(server.accept()[0])

        threading.Thread(target=hold, daemon=True).start()
        started = time.monotonic()
        result = django_admin(
            "analyze-sessions",
            "--tasks=1",
            "--task-backend=celery",
            "--task-timeout=1",
            env={"ANALYZE_SESSIONS_CELERY_REDIS": f"redis://127.0.0.1:{port}/0"},
            timeout=60,
        )
    for client in held:
        client.close()

    assert held and time.monotonic() - started < 30
    assert (result.stdout, result.returncode) == ("", 1)
    assert result.stderr == (
        "CommandError: Cannot enqueue shard 1/1 on the task backend 'celery' within 1 second "
        "(--task-timeout).\n"
    )


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="Run with ANALYZE_SESSIONS_DB=postgres (./runtests -e py313-django61-postgres).",
)
def test_a_connection_to_the_queue_lost_while_waiting_is_opened_again(workers: Workers) -> None:
    make_store()
    with run_in_background("--tasks=2", "--task-timeout=60") as process:
        enqueued_by(process, 2)
        with connection.cursor() as cursor:  # As a restart or a failover would.
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            assert cursor.fetchall()
        workers(1)
        out, err = process.communicate(timeout=90)

    assert (err, process.returncode) == ("", 0)
    assert out.startswith("Processed 43 sessions out of 43 total sessions\n")


def test_the_deadline_leaves_the_callers_timer_and_an_ignored_ctrl_c() -> None:
    from analyze_sessions.queued import _Deadline

    signal.setitimer(signal.ITIMER_REAL, 100)
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _Deadline(60):
            os.kill(os.getpid(), signal.SIGINT)  # Under nohup: nothing happens.
            time.sleep(0.1)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert 99 < signal.getitimer(signal.ITIMER_REAL)[0] <= 100
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGINT, ignored)


def test_what_a_ctrl_c_leaves_is_said() -> None:
    collected = Collected(4)
    assert collected.interruption() == "no shard was enqueued for sure"
    collected.enqueued = 1
    assert collected.interruption() == (
        "shard 1/4 was enqueued, and may still run; perhaps the next one too"
    )
    collected.enqueued = 4
    assert collected.interruption() == "the shards' tasks may still run on the workers"
    collected.finished.add(2)
    assert collected.interruption() == "the other shards' tasks may still run on the workers"
