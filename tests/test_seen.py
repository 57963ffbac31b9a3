"""The names a listing gave already, kept in a few bytes each."""

from __future__ import annotations

import tracemalloc

from analyze_sessions.seen import SeenNames


def test_each_name_is_new_once_however_often_it_comes() -> None:
    seen = SeenNames(slots=8)  # Grown many times over.
    names = [f"session:{n}".encode() for n in range(5000)]
    assert [seen.add(name) for name in names] == [True] * 5000
    assert [seen.add(name) for name in reversed(names)] == [False] * 5000
    assert len(seen) == 5000
    assert seen.add(b"session:5000") and not seen.add(b"session:5000")


def test_names_that_differ_in_one_byte_are_told_apart() -> None:
    seen = SeenNames()
    names = [bytes([a, b]) for a in range(256) for b in range(256)]
    assert all(seen.add(name) for name in names)
    assert len(seen) == 65536


def test_a_name_takes_a_few_bytes_however_long() -> None:
    names = [f"shop:3:django.contrib.sessions.cache{n:032d}".encode() for n in range(200_000)]
    tracemalloc.start()
    try:
        seen = SeenNames()
        for name in names:
            seen.add(name)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A table of 2**19 slots of 8 bytes, and the half-sized one it grew
    # from, while it was copied: 48 bytes a name at the peak, and none of
    # the names' own 75 bytes.
    assert peak <= 8 * 2**19 * 1.5 + 64 * 1024
    assert len(seen) == 200_000
