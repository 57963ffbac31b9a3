"""Run raw sessions through the decoder into the stats: in one process, or several."""

from __future__ import annotations

import gc
import multiprocessing
import signal
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.sessions.backends.base import SessionBase
from django.db import DEFAULT_DB_ALIAS, connections

from analyze_sessions.decoding import Decoder
from analyze_sessions.shards import EVERY_KEY, KeyRange
from analyze_sessions.sources import RawSession, Source, SourceError, open_source
from analyze_sessions.stats import Stats


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
) -> bool:
    """
    Decode the sessions of ``batches`` into ``stats``.

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
            for raw in batch:
                add(decode(raw))
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


@dataclass
class Outcome:
    """What reading a range of keys gave."""

    stats: Stats
    total_sessions: int | None = None
    keys_listed: int | None = None
    keys_not_found: int | None = None
    partial: bool = False
    failure: str | None = None

    def merge(self, other: Outcome) -> None:
        self.stats.merge(other.stats)
        self.total_sessions = _add(self.total_sessions, other.total_sessions)
        self.keys_listed = _add(self.keys_listed, other.keys_listed)
        self.keys_not_found = _add(self.keys_not_found, other.keys_not_found)
        self.partial = self.partial or other.partial
        self.failure = self.failure or other.failure


def open_plan(plan: Plan, keys: KeyRange = EVERY_KEY) -> Source:
    return open_source(
        plan.engine,
        plan.store_class,
        scanning=plan.keys is None,
        model_label=plan.model_label,
        using=plan.using,
        bigger_than=plan.bigger_than,
        batch_size=plan.batch_size,
        sleep_time=plan.sleep_time,
        key_range=keys,
    )


def read(
    plan: Plan,
    source: Source,
    on_batch: Callable[[int], None] | None = None,
) -> Outcome:
    """Read ``source`` as ``plan`` says; a store that fails leaves a partial outcome."""
    decoder = Decoder(plan.store_class, expiry=getattr(source, "expiry", None), depth=plan.depth)
    outcome = Outcome(Stats(now=plan.now, top=plan.top))
    try:
        outcome.partial = analyze(
            source.scan() if plan.keys is None else source.lookup(plan.keys),
            decoder,
            outcome.stats,
            sample=plan.sample,
            limit=plan.limit,
            on_batch=on_batch,
        )
        # Whoever pressed Ctrl-C wants the report now, not a count first.
        if not outcome.partial:
            outcome.total_sessions = source.total_sessions()
    except KeyboardInterrupt:
        outcome.partial = True
    except SourceError as error:
        # The store went away: what was read is still worth reporting.
        outcome.failure, outcome.partial = str(error), True
    if plan.keys is not None:
        outcome.keys_listed, outcome.keys_not_found = source.keys_listed, source.keys_not_found
    return outcome


def read_in_parallel(plan: Plan, ranges: list[KeyRange]) -> Outcome:
    """
    Read each range of keys in a worker process of its own, and merge what
    they read. The workers are forked, so they share the parent's settings;
    each opens its own database connection. Ctrl-C tells them to stop after
    their batch, and what they read is still merged.
    """
    global _plan, _stop
    context = multiprocessing.get_context("fork")
    _plan, _stop = plan, context.Event()
    connections.close_all()  # A forked worker must not share one.
    interrupted = False
    with context.Pool(len(ranges), initializer=_ignore_interrupts) as pool:
        result = pool.map_async(_read_range, ranges, chunksize=1)
        while not result.ready():
            try:
                result.wait(0.2)
            except KeyboardInterrupt:
                interrupted = True
                _stop.set()
        outcomes = result.get()
    merged = outcomes[0]
    for outcome in outcomes[1:]:
        merged.merge(outcome)
    merged.partial = merged.partial or interrupted
    return merged


_plan: Plan | None = None
_stop: Any = None


def _ignore_interrupts() -> None:
    # Ctrl-C reaches the whole process group; the parent decides what it means.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_range(keys: KeyRange) -> Outcome:
    assert _plan is not None

    def stop_if_asked(sessions: int) -> None:
        if _stop.is_set():
            raise KeyboardInterrupt

    try:
        return read(_plan, open_plan(_plan, keys), on_batch=stop_if_asked)
    finally:
        connections.close_all()


def _add(first: int | None, second: int | None) -> int | None:
    return None if first is None or second is None else first + second
