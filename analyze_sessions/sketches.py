"""
Users counted in memory that stays flat: exactly up to a bound, then in
mergeable sketches.

- Distinct users: a HyperLogLog of 2**14 registers, whose estimate is
  within 1.6% of the truth 95 times in 100 (twice its relative standard
  error, 1.04 / 2**7).
- The users with most stored bytes: a Space-Saving summary of
  ``HEAVY_USERS`` counters. Any user with more than 1 / ``HEAVY_USERS`` of
  the bytes is in it, and each counter overstates a user's bytes by at most
  its ``error``, which is at most that share.

Both are sketches of this module's own, not Apache DataSketches': a
shard's state carries them to --merge, and theirs would be binary images
decoded by C++ from a file anyone could forge, where these are numbers a
JSON Schema checks.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from dataclasses import dataclass
from typing import Any

# Users kept one by one, exactly, before the sketches take over.
EXACT_USERS = 10_000
HEAVY_USERS = 1_000
REGISTER_BITS = 14
REGISTERS = 2**REGISTER_BITS
# Twice the HyperLogLog's relative standard error: 95% of estimates are closer.
DISTINCT_ERROR = 2 * 1.04 / math.sqrt(REGISTERS)
_ALPHA = 0.7213 / (1 + 1.079 / REGISTERS)
_MASK = 2**64 - 1


@dataclass(slots=True)
class UserStats:
    """The sessions one user is logged in with; ``error``: bytes they may be overstated by."""

    sessions: int = 0
    stored_bytes: int = 0
    error: int = 0

    def merge(self, other: UserStats) -> None:
        self.sessions += other.sessions
        self.stored_bytes += other.stored_bytes
        self.error += other.error


class Users:
    """
    The users sessions are logged in as: each kept exactly while there are
    at most EXACT_USERS of them, then sketched (see the module's docstring).
    """

    __slots__ = ("exact", "registers", "heavy", "_heap")

    def __init__(self) -> None:
        self.exact: dict[str, UserStats] | None = {}
        self.registers: bytearray | None = None
        self.heavy: dict[str, UserStats] = {}
        # (stored bytes, user) of the heavy users, the least first; an entry
        # whose bytes are no longer the user's is passed over.
        self._heap: list[tuple[int, str]] = []

    @property
    def estimated(self) -> bool:
        return self.exact is None

    def add(self, user_id: str, stored_size: int, sessions: int = 1, error: int = 0) -> None:
        exact = self.exact
        if exact is not None:
            user = exact.get(user_id)
            if user is None:
                if len(exact) < EXACT_USERS:
                    exact[user_id] = UserStats(sessions, stored_size, error)
                    return
                self._sketch()
                self.add(user_id, stored_size, sessions, error)
                return
            user.sessions += sessions
            user.stored_bytes += stored_size
            user.error += error
            return
        self._count(user_id)
        self._weigh(user_id, stored_size, sessions, error)

    def merge(self, other: Users) -> None:
        if other.exact is not None:
            for user_id, user in other.exact.items():
                self.add(user_id, user.stored_bytes, user.sessions, user.error)
            return
        if self.exact is not None:
            self._sketch()
        assert self.registers is not None and other.registers is not None
        for index, rank in enumerate(other.registers):
            if rank > self.registers[index]:
                self.registers[index] = rank
        for user_id, user in other.heavy.items():
            self._weigh(user_id, user.stored_bytes, user.sessions, user.error)

    def distinct(self) -> int:
        """How many distinct users: exact, or the HyperLogLog's estimate."""
        if self.exact is not None:
            return len(self.exact)
        assert self.registers is not None
        estimate = _ALPHA * REGISTERS**2 / sum(2.0**-rank for rank in self.registers)
        zeros = self.registers.count(0)
        if estimate <= 2.5 * REGISTERS and zeros:
            estimate = REGISTERS * math.log(REGISTERS / zeros)  # Linear counting.
        return int(round(estimate))

    def top(self, count: int) -> list[tuple[str, UserStats]]:
        """The ``count`` users with most stored bytes, then by id."""
        users = self.exact if self.exact is not None else self.heavy
        ranked = sorted(users.items(), key=lambda item: (-item[1].stored_bytes, item[0]))
        return ranked[:count]

    def state(self) -> dict[str, Any]:
        if self.exact is not None:
            return {"exact": {user_id: _triple(user) for user_id, user in self.exact.items()}}
        assert self.registers is not None
        return {
            "registers": list(self.registers),
            "heavy": {user_id: _triple(user) for user_id, user in self.heavy.items()},
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Users:
        """The users state() gave; ValueError where no run could have written it."""
        users = cls()
        if "exact" in state:
            if len(state["exact"]) > EXACT_USERS:
                raise ValueError("More users kept one by one than are.")
            users.exact = {user_id: UserStats(*v) for user_id, v in state["exact"].items()}
            return users
        registers = state["registers"]
        if len(registers) != REGISTERS or not all(
            0 <= rank <= 64 - REGISTER_BITS + 1 for rank in registers
        ):
            raise ValueError("Registers no HyperLogLog of this size holds.")
        if len(state["heavy"]) > HEAVY_USERS:
            raise ValueError("More heavy users than are kept.")
        users.exact = None
        users.registers = bytearray(registers)
        for user_id, value in state["heavy"].items():
            users._weigh(user_id, *_ordered(*value))
        return users

    def _sketch(self) -> None:
        """Go from users kept one by one to the sketches."""
        exact, self.exact = self.exact or {}, None
        self.registers = bytearray(REGISTERS)
        for user_id, user in exact.items():
            self._count(user_id)
            self._weigh(user_id, user.stored_bytes, user.sessions, user.error)

    def _count(self, user_id: str) -> None:
        assert self.registers is not None
        hashed = int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "big")
        index = hashed >> (64 - REGISTER_BITS)
        rest = (hashed << REGISTER_BITS) & _MASK
        rank = 64 - REGISTER_BITS + 1 if rest == 0 else 65 - rest.bit_length()
        if rank > self.registers[index]:
            self.registers[index] = rank

    def _weigh(self, user_id: str, stored_size: int, sessions: int, error: int) -> None:
        """Space-Saving: count ``user_id`` in place of the least user, once all are taken."""
        heavy = self.heavy
        user = heavy.get(user_id)
        if user is None:
            if len(heavy) >= HEAVY_USERS:
                least_id = self._least()
                least = heavy.pop(least_id)
                # The newcomer may have had all the least one's bytes before.
                user = UserStats(least.sessions, least.stored_bytes, least.stored_bytes)
            else:
                user = UserStats()
            heavy[user_id] = user
        user.sessions += sessions
        user.stored_bytes += stored_size
        user.error += error
        heapq.heappush(self._heap, (user.stored_bytes, user_id))
        if len(self._heap) > 4 * HEAVY_USERS:
            # Past entries outnumber the users: start again from theirs.
            self._heap = [(user.stored_bytes, user_id) for user_id, user in heavy.items()]
            heapq.heapify(self._heap)

    def _least(self) -> str:
        while True:
            stored_bytes, user_id = self._heap[0]
            user = self.heavy.get(user_id)
            if user is not None and user.stored_bytes == stored_bytes:
                return user_id
            heapq.heappop(self._heap)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Users):
            return NotImplemented
        return self.state() == other.state()


def _triple(user: UserStats) -> list[int]:
    return [user.sessions, user.stored_bytes, user.error]


def _ordered(sessions: int, stored_bytes: int, error: int) -> tuple[int, int, int]:
    return stored_bytes, sessions, error
