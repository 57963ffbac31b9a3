"""
Shards read by the workers of the site's task queue (``--tasks N``): each
enqueued as ``analyze_sessions.tasks.analyze_shard``, waited for, checked as
``--merge`` checks a shard's report, and merged as each comes back.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.signing import BadSignature, Signer
from django.db import close_old_connections

from analyze_sessions.shards import (
    MAX_REPORT_SIZE,
    ShardReportError,
    bounded_report,
    shard_report,
)
from analyze_sessions.shown import printable
from analyze_sessions.stats import Outcome

# The options a shard's task takes, and their types: those that choose and
# read the sessions, and what the report keeps, as the command gives them,
# then the run they are for. None reads or writes a file on the worker, nor
# keeps whole session keys where others may read them (--show-keys), whoever
# enqueued the task. Those that may be None are None unless given.
SHARD_OPTIONS: dict[str, type] = {
    "bigger_than": str,
    "model": str,
    "sample": str,
    "depth": str,
    "top": str,
    "max_session_size": str,
    "batch_size": str,
    "sleep_time": str,
    "database": str,
    "run": str,
}
MAY_BE_NONE = frozenset({"bigger_than", "model", "sample", "top", "max_session_size"})
# How long to wait between two looks at the results: a twentieth of the
# wait so far, so that a result is seen at most 5% late, from 0.05 s to 2 s
# (an hour's wait asks little of the queue); and, with many shards, at
# least this long for each still awaited.
FIRST_POLL = 0.05
LONGEST_POLL = 2.0
POLL_SHARE = 0.05
POLL_PER_SHARD = 0.01
# How long the queue may fail to give a shard's result before it is given up.
QUEUE_DOWN_FOR = 60.0
_FAILED_SHARD = "analyze_sessions.tasks.ShardFailed"
# The most reasons a run's last sentence gives, the most shards it names
# for each, and the longest a failed task's own sentence is quoted.
MOST_REASONS = 5
MOST_NAMED = 10
LONGEST_QUOTED = 300


def report_signer(k: int, n: int, options: dict[str, Any]) -> Signer:
    """
    What signs shard ``k`` of ``n``'s report, read with ``options`` for the
    run ``options["run"]``, with the site's secret key and no retired one:
    a result that anyone who can write to the queue wrote, or changed the
    options of, or that a run before left, or that a worker with a key the
    site has retired made, is not one of this run's.
    """
    given = json.dumps(options, sort_keys=True, ensure_ascii=True)
    digest = hashlib.sha256(given.encode()).hexdigest()
    return Signer(salt=f"analyze_sessions.tasks.analyze_shard:{k}/{n}:{digest}", fallback_keys=[])


def _alias(alias: str) -> str:
    """A task backend's alias as a sentence quotes it: escaped, and cut short if long."""
    shown = printable(alias)
    return shown if len(shown) <= 40 else f"{shown[:40]}\u2026"


class TaskQueueError(Exception):
    """The task queue cannot run the shards; the message says why, in one sentence."""


@dataclass
class Collected:
    """What came back of the shards: merged, and what became of those that did not."""

    count: int
    outcome: Outcome | None = None
    disk: dict[str, Any] | None = None  # What the shards share: the table's size on disk.
    finished: set[int] = field(default_factory=set)
    # What became of the shards that did not finish, each said once: the
    # words that follow the shards' names, and the shards (K) they apply to.
    problems: dict[str, list[int]] = field(default_factory=dict)
    interrupted: bool = False
    enqueued: int = 0

    @property
    def unfinished(self) -> list[int]:
        return [k for k in range(1, self.count + 1) if k not in self.finished]

    def interruption(self) -> str:
        """What a Ctrl-C left: the tasks already enqueued still run."""
        if self.enqueued == self.count:
            others = "other shards'" if self.finished else "shards'"
            return f"the {others} tasks may still run on the workers"
        if not self.enqueued:
            return "no shard was enqueued for sure"
        shards = shard_list(list(range(1, self.enqueued + 1)), self.count)
        was = "was" if self.enqueued == 1 else "were"
        return f"{shards} {was} enqueued, and may still run; perhaps the next one too"

    def problem(self, k: int, words: str) -> None:
        self.problems.setdefault(words, []).append(k)

    def sentence(self) -> str:
        """What became of the shards that did not finish, in one sentence, or ""."""
        reasons = sorted(self.problems.items(), key=lambda item: -len(item[1]))
        parts = [f"{shard_list(ks, self.count)}{words}" for words, ks in reasons[:MOST_REASONS]]
        others = sorted(k for _, ks in reasons[MOST_REASONS:] for k in ks)
        if others:
            parts.append(f"{shard_list(others, self.count)} did not finish for other reasons")
        text = "; ".join(parts)
        return f"{text[:1].upper()}{text[1:]}." if text else ""


def shard_list(ks: list[int], count: int, most: int = MOST_NAMED) -> str:
    """``shards 2/4, 3/4``: at most ``most`` named, and how many more."""
    named = ", ".join(f"{k}/{count}" for k in sorted(ks)[:most])
    more = f" and {len(ks) - most} more" if len(ks) > most else ""
    return f"{'shard' if len(ks) == 1 else 'shards'} {named}{more}"


def task_backend(alias: str) -> Any:
    """The task backend named ``alias``, if it can run the shards and return their reports."""
    try:
        from analyze_sessions.tasks import analyze_shard
    except ImportError:
        raise TaskQueueError(
            "--tasks needs Django's task framework: Django 6.0 or later, or the "
            "django-tasks package on Django 5.2."
        ) from None
    except Exception as error:  # The default backend refused the task: its settings.
        raise TaskQueueError(
            f"--tasks cannot define its task on the default task backend "
            f"({type(error).__name__}): check the TASKS setting."
        ) from None
    try:
        shard_task = analyze_shard.using(backend=alias)
        backend = shard_task.get_backend()
    except ImproperlyConfigured:  # No such alias, or a backend that cannot be loaded.
        raise TaskQueueError(
            f"There is no task backend '{_alias(alias)}' that can be loaded: --task-backend "
            f"names one of the TASKS setting."
        ) from None
    except Exception as error:
        raise TaskQueueError(
            f"The task backend '{_alias(alias)}' refused the shard's task ({type(error).__name__})."
        ) from None
    try:
        returns_results = bool(backend.supports_get_result)
    except Exception:
        returns_results = False
    if not returns_results:
        raise TaskQueueError(
            f"The task backend '{_alias(alias)}' ({type(backend).__name__}) cannot give "
            f"back a task's result, so --tasks cannot gather the shards' reports: use a "
            f"backend that can, such as django-tasks-db's DatabaseBackend."
        )
    return shard_task


def run_shards(
    shard_task: Any,
    count: int,
    options: dict[str, Any],
    *,
    engine: str,
    filters: dict[str, Any],
    top: int,
    timeout: float,
    progress: Callable[[int], object] | None = None,
) -> Collected:
    """
    Enqueue the ``count`` shards' tasks, and wait for them until ``timeout``
    seconds have passed: the merged outcome of those that finished, and
    what became of the others. Ctrl-C stops the wait, not the tasks.
    """
    collected = Collected(count)
    options = {**options, "run": secrets.token_hex(16)}
    expected = Expected(options, engine, filters, top)
    with _Deadline(timeout) as deadline:
        try:
            results = _enqueue(shard_task, count, options, collected)
            _wait(results, collected, expected, deadline, progress)
        except KeyboardInterrupt:
            collected.interrupted = True
        except DeadlinePassed:  # Inside the queue's own code, which blocked that long.
            if collected.enqueued < count:
                raise TaskQueueError(
                    f"Cannot enqueue shard {collected.enqueued + 1}/{count} on the task backend "
                    f"'{_alias(shard_task.backend)}' within {deadline.shown}."
                    f"{_enqueued_before(collected.enqueued, count)}"
                ) from None
            told = {k for ks in collected.problems.values() for k in ks}
            for k in collected.unfinished:
                if k not in told:
                    collected.problem(k, f" did not finish within {deadline.shown}")
    return collected


@dataclass
class Expected:
    """What each shard's report must be: signed for this run, of this store, read as asked."""

    options: dict[str, Any]  # As the tasks are given them, the run's included.
    engine: str
    filters: dict[str, Any]
    top: int


class DeadlinePassed(BaseException):
    """
    --task-timeout passed while the queue's code was blocked: not an
    Exception, which that code could take for its own and retry.
    """


class _Deadline:
    """
    --task-timeout, for the whole run: between looks at the queue, and,
    through SIGALRM where the process can take it (the main thread, on
    POSIX), inside the queue's own code, which may block on a server that
    never answers; every second after the deadline, should that code take
    the first alarm for its own. Ctrl-C (unless ignored) and the alarm wait
    while a report is merged, so that no report is half merged. The
    caller's handlers and timer are put back after.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.ends = time.monotonic() + timeout
        self.shown = f"{timeout:g} second{'' if timeout == 1 else 's'} (--task-timeout)"
        self.signals = threading.current_thread() is threading.main_thread() and hasattr(
            signal, "setitimer"
        )
        self._merging = False
        self._pending: BaseException | None = None
        self._saved: list[tuple[int, Any]] = []
        self._timer = (0.0, 0.0)

    def left(self) -> float:
        return self.ends - time.monotonic()

    def __enter__(self) -> _Deadline:
        if self.signals:
            self._saved.append((signal.SIGALRM, signal.signal(signal.SIGALRM, self._signalled)))
            if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # Under nohup, say.
                self._saved.append((signal.SIGINT, signal.signal(signal.SIGINT, self._signalled)))
            # A little after the deadline: the wait itself sees it first.
            self._timer = signal.setitimer(signal.ITIMER_REAL, self.timeout + 1, 1)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.signals:
            signal.setitimer(signal.ITIMER_REAL, 0)
            for number, handler in reversed(self._saved):
                signal.signal(number, handler)
            delay, interval = self._timer
            if delay:  # The caller's timer, less the time this took; at once if it is past.
                spent = self.timeout - self.left()
                signal.setitimer(signal.ITIMER_REAL, max(delay - spent, 0.001), interval)

    def _signalled(self, number: int, frame: object) -> None:
        error = KeyboardInterrupt() if number == signal.SIGINT else DeadlinePassed()
        if self._merging:
            self._pending = self._pending or error
            return
        raise error

    @contextlib.contextmanager
    def merging(self) -> Iterator[None]:
        self._merging = True
        try:
            yield
        finally:
            self._merging = False
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending


def _enqueue(
    shard_task: Any, count: int, options: dict[str, Any], collected: Collected
) -> dict[int, Any]:
    results: dict[int, Any] = {}
    for k in range(1, count + 1):
        try:
            with _quiet():
                results[k] = shard_task.enqueue(k, count, options)
        except Exception as error:  # Whatever the queue raises: its type only.
            raise TaskQueueError(
                f"Cannot enqueue shard {k}/{count} on the task backend "
                f"'{_alias(shard_task.backend)}' ({type(error).__name__})."
                f"{_enqueued_before(k - 1, count)}"
            ) from None
        collected.enqueued = k
    return results


def _enqueued_before(enqueued: int, count: int) -> str:
    if not enqueued:
        return ""
    shards = (
        f"Shard 1/{count} was" if enqueued == 1 else f"Shards 1/{count} to {enqueued}/{count} were"
    )
    return f" {shards} enqueued before, and may still run."


def _wait(
    results: dict[int, Any],
    collected: Collected,
    expected: Expected,
    deadline: _Deadline,
    progress: Callable[[int], object] | None,
) -> None:
    started = time.monotonic()
    # Since when each shard's result could not be read, and why.
    unreadable: dict[int, tuple[float, str]] = {}
    while results:
        for k, result in list(results.items()):
            try:
                with _quiet():
                    result.refresh()
                    status = str(result.status)
            except Exception as error:  # Never the queue's words: they may hold a URL.
                if type(error).__name__ == "TaskResultDoesNotExist":  # Pruned, or deleted.
                    del results[k]
                    collected.problem(k, ": the task's result was deleted from the queue")
                    continue
                # A broken database connection is opened again at the next look.
                close_old_connections()
                since, _ = unreadable.setdefault(k, (time.monotonic(), type(error).__name__))
                if time.monotonic() - since > QUEUE_DOWN_FOR:
                    del results[k]
                    collected.problem(
                        k,
                        f": the queue could not give the task's result for a minute "
                        f"({unreadable[k][1]})",
                    )
                continue
            unreadable.pop(k, None)
            if status == "SUCCESSFUL":
                del results[k]
                with deadline.merging():
                    _take(k, result, collected, expected)
            elif status == "FAILED":
                del results[k]
                collected.problem(k, f" failed{_why(result)}")
            else:
                continue
            if progress is not None:
                progress(1)
        if not results:
            return
        left = deadline.left()
        if left <= 0:
            for k in results:
                collected.problem(k, f" did not finish within {deadline.shown}")
            return
        pause = min(max(FIRST_POLL, POLL_SHARE * (time.monotonic() - started)), LONGEST_POLL)
        time.sleep(min(max(pause, POLL_PER_SHARD * len(results)), left))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """
    The queue's code, which may print: reading a result imports the task
    it names (django-tasks-db's does), and a forged one may name any module.
    What it prints would land in the report. In the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # Standard output is the whole process's: another thread's too.
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def _take(k: int, result: Any, collected: Collected, expected: Expected) -> None:
    """Check shard ``k``'s report, and merge it into what came back before."""
    count = collected.count
    named = "the report"
    try:
        signed = result.return_value
        if type(signed) is not str:
            raise ShardReportError(f"Cannot merge {named}: its task gave back no report.")
        try:
            text = report_signer(k, count, expected.options).unsign(signed)
        except BadSignature:
            raise ShardReportError(
                f"Cannot merge {named}: it is not signed for this run with this site's "
                f"SECRET_KEY (the worker's is another, or the report is not its worker's)."
            ) from None
        data = text.encode("utf-8", "surrogatepass")
        report = shard_report(
            bounded_report(data, MAX_REPORT_SIZE, named=named, doing="merge", report="report"),
            named=named,
        )
        document = report.document
        if document["filters"]["shard"] != f"{k}/{count}":
            raise ShardReportError(f"Cannot merge {named}: it is the report of another shard.")
        if document["engine"] != expected.engine:
            raise ShardReportError(
                f"Cannot merge {named}: its worker's SESSION_ENGINE is "
                f"'{printable(document['engine'])}', not '{printable(expected.engine)}' as here."
            )
        asked = {**expected.filters, "shard": document["filters"]["shard"]}
        if document["filters"] != asked or report.outcome.stats.top != expected.top:
            raise ShardReportError(
                f"Cannot merge {named}: it was read with other options than the ones asked."
            )
        if document["partial"]:
            raise ShardReportError(f"Cannot merge {named}: it covers part of its shard only.")
        # The signature, the engine and the filters make the shards one run's.
        if collected.outcome is None:
            collected.outcome, collected.disk = report.outcome, document.get("disk")
        else:
            collected.outcome.merge(report.outcome)
    except ShardReportError as error:
        sentence = str(error).rstrip(".")
        collected.problem(k, f": {sentence[:1].lower()}{sentence[1:]}")
        return
    collected.finished.add(k)


def _why(result: Any) -> str:
    """
    Why a shard's task failed: the command's own sentence, where it gave
    one; otherwise the exception's type, never its message, which may
    quote a row. Either comes from the queue, where it may be forged: it
    is shown escaped, and cut short.
    """
    try:
        error = result.errors[-1]
        path = str(error.exception_class_path)
        traceback = str(error.traceback)
    except Exception:
        return ""
    marker = f"{_FAILED_SHARD}: "
    if path == _FAILED_SHARD and marker in traceback:
        sentence = traceback.rsplit(marker, 1)[1].strip()
        if len(sentence) > LONGEST_QUOTED:
            sentence = sentence[:LONGEST_QUOTED] + "\u2026"
        return f": {printable(sentence).rstrip('.')}"
    return f" ({printable(path.rsplit('.', 1)[-1])[:100]})"
