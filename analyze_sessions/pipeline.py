"""Run raw sessions through the decoder into the stats: in one process, or several."""

from __future__ import annotations

import gc
import multiprocessing
import signal
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.db import DEFAULT_DB_ALIAS, connections

from analyze_sessions.decoding import DecodedSession, Decoder
from analyze_sessions.owners import NO_OWNERS, Owners
from analyze_sessions.sandbox import Sandbox
from analyze_sessions.shards import EVERY_KEY, KeyRange
from analyze_sessions.sources import (
    DEFAULT_MAX_SESSION_SIZE,
    RawSession,
    Source,
    SourceError,
    SourceOptions,
    UnsupportedEngine,
    open_source,
)
from analyze_sessions.stats import Outcome, Stats


def sandbox_memory(max_size: int) -> int:
    """What decoding a session of at most ``max_size`` bytes may take: a few times that."""
    return 4 * max_size + 64 * 1024 * 1024


def sampled(key: str, rate: float) -> bool:
    """Whether the session ``key`` is in a sample of ``rate``: the same on every run."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) < rate * 2**32


def analyze(
    batches: Iterable[list[RawSession]],
    decoder: Decoder,
    stats: Stats,
    *,
    sample: float | None = None,
    limit: int | None = None,
    on_batch: Callable[[int], None] | None = None,
    sandbox: Sandbox | None = None,
) -> bool:
    """
    Decode the sessions of ``batches`` into ``stats``: in ``sandbox`` if
    given (for values anyone who can write to a cache chose), else here.

    Only a ``sample`` of them, chosen by key, and at most ``limit``. Returns
    whether the run was interrupted (Ctrl-C): ``stats`` then holds what was
    read before.
    """
    add, decode = stats.add, decoder.decode
    # What lives before the scan (Django, the site, the settings) lives until
    # it ends: out of the collector's way, it is not walked again and again
    # while millions of short-lived objects come and go. A process that froze
    # its objects itself (a server that forks workers) keeps them so.
    freezing = gc.get_freeze_count() == 0
    if freezing:
        gc.freeze()
    try:
        for batch in batches:
            read = len(batch)
            if sample is not None:
                batch = [raw for raw in batch if sampled(raw.key, sample)]
            if limit is not None:
                batch = batch[: max(0, limit - stats.processed)]
            # A batch decoded, then counted: each step's code and data stay
            # in the processor's caches for a thousand sessions, where
            # taking turns a session at a time costs a tenth more.
            decoded: list[DecodedSession] = []
            try:
                if sandbox is None:
                    for raw in batch:
                        decoded.append(decode(raw))
                else:
                    decoded = sandbox.decode(batch)
            finally:  # Ctrl-C: what was decoded is counted.
                for session in decoded:
                    add(session)
            if on_batch is not None:
                on_batch(read)
            if limit is not None and stats.processed >= limit:
                return False
    except KeyboardInterrupt:
        return True
    finally:
        if freezing:
            gc.unfreeze()
    return False


@dataclass
class Plan:
    """What to read, and how: everything a run, or one of its jobs, needs."""

    engine: str
    store_class: type[SessionBase]
    model_label: str | None = None
    using: str = DEFAULT_DB_ALIAS
    bigger_than: int | None = None
    batch_size: int = 1000
    sleep_time: float = 0.0
    keys: set[str] | None = None
    sample: float | None = None
    limit: int | None = None
    depth: int = 0
    top: int = 10
    now: datetime | None = None
    max_size: int = DEFAULT_MAX_SESSION_SIZE
    show_keys: bool = False
    owners: Owners = NO_OWNERS

    def stats(self) -> Stats:
        """Empty stats, to count what this plan reads."""
        return Stats(now=self.now, top=self.top, show_keys=self.show_keys, owner_of=self.owners)


def open_plan(plan: Plan, keys: KeyRange = EVERY_KEY) -> Source:
    options = SourceOptions(
        scanning=plan.keys is None,
        model_label=plan.model_label,
        using=plan.using,
        bigger_than=plan.bigger_than,
        batch_size=plan.batch_size,
        sleep_time=plan.sleep_time,
        key_range=keys,
        max_size=plan.max_size,
    )
    return open_source(plan.engine, plan.store_class, options)


def read(
    plan: Plan,
    source: Source,
    on_batch: Callable[[int], None] | None = None,
) -> Outcome:
    """Read ``source`` as ``plan`` says; a store that fails leaves a partial outcome."""
    # A cache hands its values over packed, to be unpacked in a sandbox.
    unpack = getattr(source, "unpack", None)
    decoder = Decoder(
        plan.store_class,
        expiry=getattr(source, "expiry", None),
        depth=plan.depth,
        max_size=plan.max_size,
        unpack=unpack,
    )
    sandbox = None if unpack is None else Sandbox(decoder, sandbox_memory(plan.max_size))
    outcome = Outcome(plan.stats())
    try:
        outcome.partial = analyze(
            source.scan() if plan.keys is None else source.lookup(plan.keys),
            decoder,
            outcome.stats,
            sample=plan.sample,
            limit=plan.limit,
            on_batch=on_batch,
            sandbox=sandbox,
        )
        # Whoever pressed Ctrl-C wants the report now, not a count first.
        if not outcome.partial:
            outcome.total_sessions = source.total_sessions()
    except KeyboardInterrupt:
        outcome.partial = True
    except SourceError as error:
        # The store went away: what was read is still worth reporting.
        outcome.failure, outcome.partial = str(error), True
    finally:
        if sandbox is not None:
            sandbox.close()
    if plan.keys is not None:
        outcome.keys_listed, outcome.keys_not_found = source.keys_listed, source.keys_not_found
    outcome.unreadable = Counter(source.unreadable)
    outcome.sessions_gone = source.sessions_gone
    outcome.unreadable_expiry = getattr(source, "unreadable_expiry", 0)
    return outcome


def read_in_parallel(
    plan: Plan, ranges: list[KeyRange], rowids: list[tuple[int, int | None]] | None = None
) -> Outcome:
    """
    Read each range of keys in a worker process of its own, and merge what
    they read; on SQLite, with ``rowids``, each part of the table's rowids
    within each range (see DatabaseSource.rowid_parts). The workers are
    forked, so they share the parent's settings; each opens its own
    database connection.

    Ctrl-C tells them to stop after their batch, and what they read is
    still merged. A worker that dies without its result (killed by the
    out-of-memory killer, say) stops the others the same way: the outcome
    is then partial, and its failure says which job was lost.
    """
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    connections.close_all()  # A forked worker must not share one.
    jobs: dict[Connection, tuple[int, Any]] = {}
    for index, keys in enumerate(ranges):
        receiver, sender = context.Pipe(duplex=False)
        part = None if rowids is None else rowids[index]
        worker = context.Process(target=_job, args=(plan, keys, part, stop, sender), daemon=True)
        worker.start()
        sender.close()  # The worker's end: the parent sees EOF once the worker is gone.
        jobs[receiver] = (index, worker)
    outcomes: list[Outcome] = []
    lost: list[str] = []
    interrupted = False
    while jobs:
        try:
            ready: list[Any] = wait(list(jobs), timeout=0.2)
            for receiver in ready:
                index, worker = jobs.pop(receiver)
                try:
                    outcomes.append(receiver.recv())
                except EOFError:
                    worker.join()
                    lost.append(_lost(index, len(ranges), worker.exitcode))
                    stop.set()
                receiver.close()
        except KeyboardInterrupt:
            interrupted = True
            stop.set()
    merged = outcomes[0] if outcomes else Outcome(plan.stats())
    for outcome in outcomes[1:]:
        merged.merge(outcome)
    merged.partial = merged.partial or interrupted or bool(lost)
    if lost:
        merged.failure = f"{'; '.join(lost)}: the other jobs were stopped."
    return merged


def _job(
    plan: Plan, keys: KeyRange, rowids: tuple[int, int | None] | None, stop: Any, sender: Connection
) -> None:
    """One worker: read ``keys`` (of ``rowids``), and send the outcome to the parent."""
    # Ctrl-C reaches the whole process group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def stop_if_asked(sessions: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt

    try:
        source = open_plan(plan, keys)
        if rowids is not None:
            source.rowids = rowids  # type: ignore[attr-defined]  # A DatabaseSource.
        try:
            outcome = read(plan, source, on_batch=stop_if_asked)
        finally:
            source.close()
    except (UnsupportedEngine, SourceError) as error:
        outcome = Outcome(plan.stats(), partial=True, failure=str(error))
    finally:
        connections.close_all()
    sender.send(outcome)
    sender.close()


def _lost(index: int, jobs: int, exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-exitcode}"
    else:
        how = f"exited with status {exitcode}"
    return f"Job {index + 1} of {jobs} {how} before it gave its result"
