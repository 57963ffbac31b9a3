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

import _compat_pickle
import collections
import copyreg
import io
import pickle
import pickletools
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from analyze_sessions.sources import DEFAULT_MAX_SESSION_SIZE

# The classes, by module, that a session's values may be made of, beyond
# what pickle builds without naming a class (None, bools, numbers, str,
# bytes, tuples, lists, dicts, and sets in protocol 4 and later).
# None of them computes or allocates more than what the pickle spells out
# (no range, no Fraction, whose text can stand for a number of a billion
# digits), and those that could are guarded below.
ALLOWED: dict[str, frozenset[str]] = {
    # Protocols 0 to 3 name sets and the like, and defaultdict names its
    # factory; copyreg._reconstructor rebuilds objects pickled with
    # protocols 0 and 1, from allowed classes only (object is its base for
    # plain instances).
    "builtins": frozenset(
        {
            *("set", "frozenset", "list", "tuple", "dict", "bytes", "bytearray"),
            *("str", "int", "float", "bool", "complex", "slice", "object", "getattr"),
        }
    ),
    "copyreg": frozenset({"_reconstructor"}),
    "collections": frozenset({"OrderedDict", "deque", "Counter", "defaultdict"}),
    "datetime": frozenset({"date", "time", "datetime", "timedelta", "timezone"}),
    "decimal": frozenset({"Decimal"}),
    "uuid": frozenset({"UUID", "SafeUUID"}),
    "zoneinfo": frozenset({"ZoneInfo"}),
    # How protocols 0 to 2 write bytes.
    "_codecs": frozenset({"encode"}),
}


# A pickle builds an object of 50 bytes or more from one byte (an empty
# list, say): its objects are counted before any is built, at this many
# bytes each, with shared ones counted each time they are referred to, as
# hashing and writing them out will visit them.
BYTES_AN_OBJECT = 64
# However small the bound on sizes, this many objects (a megabyte or so)
# are allowed: a bound of a kilobyte is about what is stored, not memory.
MIN_OBJECTS = 10_000


def object_budget(max_size: int) -> int:
    """How many objects a session may build under the bound ``max_size`` on its size."""
    return max(max_size // BYTES_AN_OBJECT, MIN_OBJECTS)


# Deeper than any session nests, and far short of what hashing a tuple
# recurses through before the C stack runs out.
MAX_DEPTH = 200


class TooLarge(Exception):
    """The pickle would build more objects than its bound allows."""


class Refused(Exception):
    """The pickle names a class outside ``ALLOWED``; ``class_name`` says which."""

    def __init__(self, class_name: str) -> None:
        super().__init__(f"refused to unpickle {class_name}")
        self.class_name = class_name


_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def _class_name(module: str, name: str) -> str:
    """A refused class as the report may name it: only if it is a class's name at all."""
    dotted = f"{module}.{name}"
    if len(dotted) <= 100 and _DOTTED.fullmatch(dotted):
        return dotted
    return "(a name that is no class's)"


def _of_built_items(kind: type[Any]) -> Callable[..., Any]:
    """
    ``kind``, made only of items the pickle built one by one (and so were
    counted): never of a string's characters or bytes, which a few bytes of
    pickle would turn into millions of objects.
    """

    def make(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], (str, bytes, bytearray, memoryview)):
            raise Refused(f"{kind.__module__}.{kind.__qualname__} of a string")
        return kind(*args, **kwargs)

    return make


# The codecs a pickle may name to make text or bytes: written in C, each
# byte at a time (some text codecs take time that grows with the square).
_CODECS = frozenset({"latin1", "latin-1", "iso-8859-1", "utf-8", "utf8", "ascii"})


def _of_text(kind: type[Any]) -> Callable[..., Any]:
    """``kind`` (str, bytes, bytearray) with one of the plain codecs, or none."""

    def make(*args: Any) -> Any:
        if len(args) > 1 and (not isinstance(args[1], str) or args[1].lower() not in _CODECS):
            raise Refused(f"builtins.{kind.__name__} with another codec")
        if kind is not str and args and not isinstance(args[0], (str, bytes)):
            raise Refused(f"builtins.{kind.__name__} of a size")
        return kind(*args)

    return make


def _int(*args: Any) -> int:
    # int() of a Decimal of a million digits takes minutes: only of what
    # pickle writes numbers as (text of at most 4,300 digits, numbers).
    if args and not isinstance(args[0], (int, float, str, bytes)):
        raise Refused("builtins.int of anything but a number or its text")
    return int(*args)


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    # What protocols 0 to 2 write for bytes: _codecs.encode(text, "latin1").
    if not isinstance(text, str) or encoding != "latin1":
        raise Refused("_codecs.encode of anything but latin-1 text")
    return text.encode("latin-1")


def _reconstructor(cls: type[Any], base: type[Any], state: Any) -> Any:
    # With another base, state goes to its constructor: bytearray(size), say.
    if base is not object:
        raise Refused("copyreg._reconstructor of another base than object")
    return copyreg._reconstructor(cls, base, state)  # type: ignore[attr-defined]


_COLLECTIONS = (
    collections.OrderedDict,
    collections.deque,
    collections.Counter,
    collections.defaultdict,
)


def _getattr(owner: Any, name: str) -> Any:
    # A time zone pickles as getattr(ZoneInfo, "_unpickle"); getattr of
    # anything else reaches any object in the process.
    if owner is not zoneinfo.ZoneInfo or name != "_unpickle":
        raise Refused("builtins.getattr of anything but a time zone")
    return zoneinfo.ZoneInfo._unpickle  # type: ignore[attr-defined]


_GUARDED: dict[tuple[str, str], Callable[..., Any]] = {
    ("copyreg", "_reconstructor"): _reconstructor,
    ("_codecs", "encode"): _encode,
    ("builtins", "getattr"): _getattr,
    **{("builtins", kind.__name__): _of_text(kind) for kind in (str, bytes, bytearray)},
    ("builtins", "int"): _int,
    **{
        (kind.__module__, kind.__name__): _of_built_items(kind)
        for kind in (set, frozenset, list, tuple, dict, *_COLLECTIONS)
    },
}


class _SessionUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Protocols 0 to 2 write Python 2's names (__builtin__.long): read
        # them as pickle does, then check, and load, what they stand for.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if name not in ALLOWED.get(module, ()):
            raise Refused(_class_name(module, name))
        guarded = _GUARDED.get((module, name))
        return guarded if guarded is not None else super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("a persistent id")


def loads(data: bytes, max_size: int = DEFAULT_MAX_SESSION_SIZE) -> Any:
    """
    The value ``data`` pickles, built only from allowed types, in about
    ``max_size`` bytes of memory at most.

    Raises :class:`Refused` for a class outside ``ALLOWED`` or objects
    nested past ``MAX_DEPTH``, :class:`TooLarge` for more objects than
    ``max_size`` bytes hold, and whatever pickle raises for data that is not
    a pickle.
    """
    try:
        _check_shape(data, object_budget(max_size))
    except (Refused, TooLarge):
        raise
    except Exception:  # Opcodes it cannot follow are not unpickled unfollowed.
        raise Refused("a pickle this command cannot follow") from None
    return _SessionUnpickler(io.BytesIO(data)).load()


# How each opcode changes what the stack holds, told apart by what it does.
_BUILDERS = frozenset({"TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "LIST", "DICT", "FROZENSET"})
_ADDERS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def _layout(opcode: pickletools.OpcodeInfo) -> tuple[int, int | None, tuple[bool, ...]]:
    """
    What ``opcode`` takes from the stack (how many, or how many under the
    last MARK and all above it) and puts back (for each, whether a MARK).
    """
    before = [str(kind) for kind in opcode.stack_before]
    under = before.index("mark") if "mark" in before else None
    return len(before), under, tuple(str(kind) == "mark" for kind in opcode.stack_after)


_LAYOUTS = {opcode.name: _layout(opcode) for opcode in pickletools.opcodes}


def _check_shape(data: bytes, budget: int) -> None:
    """
    Follow the opcodes of ``data`` on a stack of [size, depth] cells, with
    nothing built: the objects each one stands for, shared ones counted
    every time they are referred to, and how deep they nest. A few hundred
    bytes of pickle can stand for a tuple that refers to itself two ways
    sixty levels down, which takes 2**60 steps to hash, or nest tuples
    deeper than the C stack goes: both are refused before the unpickler
    builds them. A memoized object shares its cell, so that what is added
    to a list after it was memoized counts where it is referred to.
    """
    stack: list[list[int]] = []
    marks: list[int] = []  # Where each MARK stands in the stack, as the unpickler keeps them.
    memo: dict[Any, list[int]] = {}
    for count, (opcode, argument, _) in enumerate(pickletools.genops(data), start=1):
        if count > budget:
            raise TooLarge
        name = opcode.name
        taken, under, after = _LAYOUTS[name]
        on_a_mark = bool(marks) and marks[-1] == len(stack)
        if name == "MARK":
            marks.append(len(stack))
        elif on_a_mark and name in ("POP", "DUP", "MEMOIZE", *_PUTS):
            # The unpickler acts on the MARK itself here: POP takes it away.
            if name != "POP":
                raise Refused("a pickle this command cannot follow")
            marks.pop()
        elif name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in _PUTS:
            memo[argument] = stack[-1]
        elif name in _GETS:
            stack.append(memo[argument])
        elif name == "DUP":
            stack.append(stack[-1])
        elif not taken:
            if after:  # A constant, or an empty container.
                stack.append([1, 0])
        else:
            if under is None:
                popped = stack[len(stack) - taken :]
                del stack[len(stack) - taken :]
            else:
                top = marks.pop()
                popped = stack[top - under :]
                del stack[top - under :]
            sizes = sum(size for size, _ in popped)
            if name in _ADDERS:  # The container stays, with more in it.
                cell = popped[0]
                cell[0] = sizes
                cell[1] = max(cell[1], 1 + max((depth for _, depth in popped[1:]), default=0))
            else:
                deepest = max((depth for _, depth in popped), default=0)
                # A container is a level deeper than what it holds; a call's
                # result is made of what it was given.
                cell = [1 + sizes, deepest + 1 if name in _BUILDERS else deepest]
            if after:
                stack.append(cell)
            if cell[0] > budget:
                raise TooLarge
            if cell[1] > MAX_DEPTH:
                raise Refused(f"objects nested more than {MAX_DEPTH} deep")
