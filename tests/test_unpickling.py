"""The unpickler of cache values builds what a session holds, and nothing that runs or bloats."""

from __future__ import annotations

import collections
import copyreg
import datetime
import decimal
import fractions
import os
import pickle
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from analyze_sessions import unpickling
from tests.helpers import within


class Reduces:
    """Pickles as ``function(*arguments)``, as a forged cache value would."""

    def __init__(self, function: Any, *arguments: Any) -> None:
        self.function, self.arguments = function, arguments

    def __reduce__(self) -> tuple[Any, ...]:
        return self.function, self.arguments


PROTOCOLS = range(pickle.HIGHEST_PROTOCOL + 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_pickle_that_would_write_a_file_is_refused(protocol: int, tmp_path: Path) -> None:
    planted = tmp_path / "planted"

    for forged in (Reduces(open, str(planted), "w"), Reduces(os.system, f"touch {planted}")):
        with pytest.raises(unpickling.Refused):
            unpickling.loads(pickle.dumps({"cart": forged}, protocol))

    assert not planted.exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("forged", "refused"),
    [
        # A few bytes each, for hundreds of megabytes or a billion digits.
        (Reduces(bytearray, 300 * 2**20), "builtins.bytearray of a size"),
        (Reduces(bytes, 300 * 2**20), "builtins.bytes of a size"),
        (Reduces(set, range(30_000_000)), "builtins.range"),
        (Reduces(collections.deque, b"x" * 1000), "collections.deque of a string"),
        (Reduces(list, "x" * 1000), "builtins.list of a string"),
        (Reduces(fractions.Fraction, "1e100000000"), "fractions.Fraction"),
        (
            Reduces(copyreg._reconstructor, bytearray, bytearray, 300 * 2**20),  # type: ignore[attr-defined]
            "copyreg._reconstructor of another base than object",
        ),
        # getattr reaches any object in the process from any class.
        (
            Reduces(getattr, object, "__subclasses__"),
            "builtins.getattr of anything but a time zone",
        ),
    ],
)
def test_a_pickle_that_would_bloat_or_reach_out_is_refused(
    protocol: int, forged: Reduces, refused: str
) -> None:
    with pytest.raises(unpickling.Refused) as raised:
        unpickling.loads(pickle.dumps(forged, protocol))

    assert raised.value.class_name == refused


def test_a_pickle_of_more_objects_than_its_bound_is_too_large() -> None:
    # Two bytes a list, 100,000 of them: past 64 KiB, so its opcodes are
    # counted (PROTO, EMPTY_LIST, then EMPTY_LIST and APPEND each, STOP).
    many = b"\x80\x02]" + b"]a" * 100_000 + b"."
    opcodes = 3 + 2 * 100_000

    with pytest.raises(unpickling.TooLarge):
        unpickling.loads(many, max_size=(opcodes - 1) * unpickling.BYTES_AN_OBJECT)
    assert len(unpickling.loads(many, max_size=opcodes * unpickling.BYTES_AN_OBJECT)) == 100_000
    # However small the bound, a session of a few objects is built.
    assert unpickling.loads(pickle.dumps({"foo": "bar"}), max_size=30) == {"foo": "bar"}


SESSION_VALUES = {
    "set": {1, 2},
    "frozenset": frozenset("ab"),
    "ordered": collections.OrderedDict(a=1),
    "deque": collections.deque([1, 2]),
    "counter": collections.Counter(a=2),
    "defaultdict": collections.defaultdict(list, {"x": [1]}),
    "counts": collections.defaultdict(int),
    "bytearray": bytearray(b"ab"),
    "bytes": b"\x00\xff",
    "paris": datetime.datetime(2026, 11, 27, 9, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    "utc": datetime.datetime(2026, 11, 27, 9, tzinfo=datetime.timezone.utc),
    "date": datetime.date(2026, 11, 27),
    "time": datetime.time(9, 30),
    "delta": datetime.timedelta(days=3),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "price": decimal.Decimal("19.99"),
    "complex": 1j,
    "tuple": (1, "a"),
    "big": 10**30,
}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_what_a_session_holds_is_built_whatever_the_protocol(protocol: int) -> None:
    assert unpickling.loads(pickle.dumps(SESSION_VALUES, protocol)) == SESSION_VALUES


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.frozensets(st.integers(), max_size=4)
        | st.tuples(children, children)
    ),
    max_leaves=12,
)


@given(json_like, st.sampled_from(list(PROTOCOLS)))
def test_any_plain_value_is_built_as_pickle_builds_it(value: Any, protocol: int) -> None:
    data = pickle.dumps(value, protocol)

    assert unpickling.loads(data) == pickle.loads(data)


def hash_bomb() -> bytes:
    """256 bytes: {t: 1}, where t holds itself two ways, sixty levels down (2**60 to hash)."""
    nested: tuple[object, ...] = ()
    for _ in range(60):
        nested = (nested, nested)
    return b"\x80\x04}" + pickle.dumps(nested, 4)[2:-1] + b"K\x01s."


@pytest.mark.parametrize(
    ("forged", "refusal"),
    [
        # Hashing it as a dict's key would take for ever.
        (hash_bomb(), unpickling.TooLarge),
        # Hashing them would run out of the C stack: a crash, not an error.
        (b"\x80\x04}" + b")" + b"\x85" * 200_000 + b"K\x01s.", unpickling.Refused),
        (b"\x80\x04}(" + b")" + b"\x85" * 200_000 + b"\x91K\x01s.", unpickling.Refused),
        # A list inside a list, 100,000 times, each opened by a MARK.
        (b"\x80\x04" + b"(" * 100_000 + b"l" * 100_000 + b".", unpickling.Refused),
    ],
)
def test_a_pickle_that_would_hang_or_crash_is_refused_before_it_is_built(
    forged: bytes, refusal: type[Exception]
) -> None:
    with within(10), pytest.raises(refusal):
        unpickling.loads(forged)


def test_references_to_one_object_count_each_time() -> None:
    # 1,160 bytes that stand for a million strings once written out.
    shared: object = "A" * 1000
    for _ in range(6):
        shared = [shared] * 10

    with pytest.raises(unpickling.TooLarge):
        unpickling.loads(pickle.dumps({"boom": shared}, 4))


def test_a_refused_name_is_shown_only_if_it_is_a_class_name() -> None:
    module, name = b"CANARY\x1b[31m.X", b"A=1"
    forged = (
        b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name
    ) + b"\x93."  # STACK_GLOBAL: the class the module and name say.

    with pytest.raises(unpickling.Refused) as raised:
        unpickling.loads(forged)

    assert raised.value.class_name == "(a name that is no class's)"
