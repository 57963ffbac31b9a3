"""Run raw sessions through the decoder into the stats, as far as asked."""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

from analyze_sessions.decoding import Decoder
from analyze_sessions.sources import RawSession
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
    try:
        for batch in batches:
            for raw in batch:
                if limit is not None and stats.processed >= limit:
                    return False
                if sample is None or sampled(raw.key, sample):
                    stats.add(decoder.decode(raw))
            if on_batch is not None:
                on_batch(len(batch))
            if limit is not None and stats.processed >= limit:
                return False
    except KeyboardInterrupt:
        return True
    return False
