"""Which names a listing gave already, in a few bytes each."""

from __future__ import annotations

import hashlib
import os
from array import array


class SeenNames:
    """
    The names seen so far, each kept as an 8-byte digest in an open
    addressing table never more than two thirds full: 12 bytes a name on
    average, where a set of the names themselves takes over a hundred.

    The digest is a BLAKE2 hash keyed with random bytes drawn for each
    table, so that whoever writes the names cannot make two of them one:
    two names have one digest with odds of one in 2**64.
    """

    __slots__ = ("_key", "_table", "_mask", "_count")

    def __init__(self, slots: int = 1024) -> None:
        self._key = os.urandom(16)
        self._table = _zeros(slots)
        self._mask = slots - 1
        self._count = 0
        assert slots & self._mask == 0, "A power of two, for the mask."

    def __len__(self) -> int:
        return self._count

    def add(self, name: bytes) -> bool:
        """Note ``name``: whether it is new."""
        digest = hashlib.blake2b(name, digest_size=8, key=self._key).digest()
        # 0 marks an empty slot: the one digest of 0 is kept as 1.
        value = int.from_bytes(digest, "little") or 1
        if not self._insert(value):
            return False
        self._count += 1
        if 3 * self._count > 2 * len(self._table):
            self._grow()
        return True

    def _insert(self, value: int) -> bool:
        table, mask = self._table, self._mask
        slot = value & mask
        while True:
            found = table[slot]
            if found == 0:
                table[slot] = value
                return True
            if found == value:
                return False
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old = self._table
        self._table = _zeros(2 * len(old))
        self._mask = len(self._table) - 1
        for value in old:
            if value:
                self._insert(value)


def _zeros(slots: int) -> array[int]:
    # Repeated, rather than made from bytes of zeros: no second copy is made.
    return array("Q", [0]) * slots
