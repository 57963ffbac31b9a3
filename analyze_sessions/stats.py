"""Accumulators for decoded sessions, mergeable so batches can be counted apart."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from analyze_sessions.decoding import DecodedSession


@dataclass
class KeyStats:
    """How often one session key was seen, and the bytes its entries took."""

    sessions: int = 0
    total_bytes: int = 0
    max_bytes: int = 0

    def add(self, entry_size: int) -> None:
        self.sessions += 1
        self.total_bytes += entry_size
        self.max_bytes = max(self.max_bytes, entry_size)

    def merge(self, other: KeyStats) -> None:
        self.sessions += other.sessions
        self.total_bytes += other.total_bytes
        self.max_bytes = max(self.max_bytes, other.max_bytes)


@dataclass
class Stats:
    """Totals over the sessions processed so far, decodable or not."""

    processed: int = 0
    stored_bytes: int = 0
    payload_bytes: int = 0
    keys: dict[str, KeyStats] = field(default_factory=dict)
    undecodable: Counter[str] = field(default_factory=Counter)
    undecodable_bytes: int = 0

    def add(self, session: DecodedSession) -> None:
        self.processed += 1
        self.stored_bytes += session.stored_size
        if session.failure is not None:
            self.undecodable[session.failure] += 1
            self.undecodable_bytes += session.stored_size
            return
        self.payload_bytes += session.payload_size
        for key, entry_size in session.entries.items():
            if key not in self.keys:
                self.keys[key] = KeyStats()
            self.keys[key].add(entry_size)

    def merge(self, other: Stats) -> None:
        """Add ``other``'s totals to these, as if its sessions were added here."""
        self.processed += other.processed
        self.stored_bytes += other.stored_bytes
        self.payload_bytes += other.payload_bytes
        for key, key_stats in other.keys.items():
            self.keys.setdefault(key, KeyStats()).merge(key_stats)
        self.undecodable.update(other.undecodable)
        self.undecodable_bytes += other.undecodable_bytes
