"""
Unpickle cache values without running code that anyone who can write to
the cache chose.

Caches keep sessions as pickles, and whoever can write to the cache (Redis,
memcached, the cache table, the cache directory) can put any pickle under a
session's name: a plain ``pickle.loads()`` of it runs whatever it names, in
the process that analyzes, often as root from cron. This unpickler builds
only the types a session can hold; any other class is refused by name.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

# The classes, by module, that a session's values may be made of, beyond
# what pickle builds without naming a class (None, bools, numbers, str,
# bytes, tuples, lists, dicts, and sets in protocol 4 and later).
ALLOWED: dict[str, frozenset[str]] = {
    # Protocols 0 to 3 name sets and the like; copyreg._reconstructor
    # rebuilds objects pickled with protocols 0 and 1, from allowed
    # classes only (object is its base for plain instances).
    "builtins": frozenset({"set", "frozenset", "bytearray", "complex", "range", "slice", "object"}),
    "copyreg": frozenset({"_reconstructor"}),
    "collections": frozenset({"OrderedDict", "deque", "Counter", "defaultdict"}),
    "datetime": frozenset({"date", "time", "datetime", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "fractions": frozenset({"Fraction"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "zoneinfo": frozenset({"ZoneInfo._unpickle"}),
}
# Python 2's name for builtins, which protocols 0 to 2 write.
ALLOWED["__builtin__"] = ALLOWED["builtins"]


class Refused(Exception):
    """The pickle names a class outside ``ALLOWED``; ``class_name`` says which."""

    def __init__(self, class_name: str) -> None:
        super().__init__(f"refused to unpickle {class_name}")
        self.class_name = class_name


class _SessionUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if name in ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise Refused(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")


def loads(data: bytes) -> Any:
    """
    The value ``data`` pickles, built only from allowed types.

    Raises :class:`Refused` for a class outside ``ALLOWED``, and whatever
    pickle raises for data that is not a pickle.
    """
    return _SessionUnpickler(io.BytesIO(data)).load()
