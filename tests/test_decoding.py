from __future__ import annotations

import json
import tracemalloc
import zlib
from datetime import datetime, timezone
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.core.signing import b64_encode
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from analyze_sessions.decoding import (
    BAD_ENCODING,
    BAD_PAYLOAD,
    BAD_SIGNATURE,
    TOO_LARGE,
    DecodedSession,
    Decoder,
    entry_spans,
)
from analyze_sessions.sources import RawSession
from analyze_sessions.unpickling import Refused
from tests.helpers import signed
from tests.session_engines import LegacySessionStore, RenamedSessionStore

EXPIRES = datetime(2100, 1, 1, tzinfo=timezone.utc)
KEY = "k" * 32


def decode(data: str, store_class: type = SessionStore) -> DecodedSession:
    return Decoder(store_class).decode(RawSession(KEY, data, EXPIRES, len(data)))


def test_entry_sizes_of_a_session_the_store_encoded() -> None:
    data = SessionStore().encode({"foo": "bar", "cart": [1, 22], "n": None})

    decoded = decode(data)

    # The payload is {"foo":"bar","cart":[1,22],"n":null}: 36 bytes.
    assert decoded == DecodedSession(
        stored_size=len(data),
        payload_size=36,
        entries={"foo": 11, "cart": 13, "n": 8},
        expires_at=EXPIRES,
        key=KEY,
        age=django_settings.SESSION_COOKIE_AGE,  # It sets no age of its own.
    )
    # Entries plus the braces and the separating commas make the payload.
    assert sum(decoded.entries.values()) + 2 + 2 == decoded.payload_size


def test_entry_sizes_of_a_compressed_session_are_measured_uncompressed() -> None:
    data = SessionStore().encode({"big": "x" * 10_000})
    assert data.startswith(".")  # Compressed, as the store chose to.

    decoded = decode(data)

    assert decoded.stored_size == len(data) < 200
    assert decoded.payload_size == len('{"big":""}') + 10_000
    assert decoded.entries == {"big": len('"big":""') + 10_000}


def test_json_another_program_wrote_is_read_as_django_reads_it_and_measured_as_it_stands() -> None:
    # Not how Django writes JSON (it escapes what is not ASCII, and has no
    # spaces), but what it reads all the same, each byte a character: "café"
    # comes out "cafÃ©".
    payload = '{"café":"crème","cart":[1, 2]}'.encode()
    data = signed(b64_encode(payload).decode())

    decoded = decode(data)

    assert set(decoded.entries) == set(SessionStore().decode(data)) == {"caf\u00c3\u00a9", "cart"}
    assert decoded.payload_size == len(payload) == 32
    # '"café":"crème"' is 16 bytes in UTF-8, '"cart":[1, 2]' 13.
    assert decoded.entries == {"caf\u00c3\u00a9": 16, "cart": 13}


@pytest.mark.parametrize(
    ("payload", "entries"),
    [
        # Keys with escapes: a/b written "a\/b", and q" written "q\"".
        (b'{"a\\/b":1,"c":22}', {"a/b": 8, "c": 6}),
        (b'{"q\\"":[1]}', {'q"': 9}),
        # Spaces, where Django writes none: entries measured written again.
        (b'{"a": 1, "b" :2}', {"a": 5, "b": 5}),
        # NaN, which json reads and msgspec does not.
        (b'{"a":NaN,"b":1}', {"a": 7, "b": 5}),
    ],
)
def test_json_whose_entries_cannot_be_spanned_unparsed_is_measured_in_full(
    payload: bytes, entries: dict[str, int]
) -> None:
    decoded = decode(signed(b64_encode(payload).decode()))

    assert decoded.failure is None
    assert decoded.entries == entries
    assert decoded.payload_size == len(payload)


def test_a_key_written_twice_is_measured_as_django_reads_it() -> None:
    # json keeps the last value; the entry is what writing it again takes.
    payload = b'{"a":1,"a":22,"b":3}'

    decoded = decode(signed(b64_encode(payload).decode()))

    assert decoded.entries == {"a": len('"a":22'), "b": len('"b":3')}


@pytest.mark.parametrize(
    ("value", "user_id"),
    [('"42"', "42"), ("42", "42"), ('{"id":"42"}', None), ('"4 2"', None), ("null", None)],
)
def test_the_user_id_is_read_from_its_value_alone(value: str, user_id: str | None) -> None:
    payload = f'{{"cart":[1,2],"_auth_user_id":{value},"n":null}}'.encode()

    decoded = decode(signed(b64_encode(payload).decode()))

    assert decoded.user_id == user_id
    assert decoded.entries == {
        "cart": len('"cart":[1,2]'),
        "_auth_user_id": len(f'"_auth_user_id":{value}'),
        "n": len('"n":null'),
    }


def test_entry_spans_are_those_of_the_payload() -> None:
    payload = b'{"foo":"bar","cart":[1,{"x":[]}],"_auth_user_id":"7","e":{}}'

    spans = entry_spans(payload)

    assert spans is not None
    entries, read = spans
    assert entries == {"foo": 11, "cart": 19, "_auth_user_id": 19, "e": 6}
    assert sum(entries.values()) + 2 + 3 == len(payload)
    assert read == {"_auth_user_id": "7"}  # The one value of these read.
    assert entry_spans(b'{"_session_expiry":600,"a":1}') == (
        {"_session_expiry": 21, "a": 5},
        {"_session_expiry": 600},
    )
    assert entry_spans(b"{}") == ({}, {})
    # What is not ASCII is escaped, as Django writes it.
    assert entry_spans(b'{"a":"\\u00e9"}') == ({"a": 12}, {})
    # Not an object, not ASCII, not JSON: measured the other way, or refused.
    for other in (b"[1]", '{"é":1}'.encode(), b'{"a":1', b""):
        assert entry_spans(other) is None


def test_the_stored_size_is_the_one_the_source_measured() -> None:
    data = SessionStore().encode({"foo": "bar"})
    raw = RawSession("k" * 32, data, None, 1234)

    assert Decoder(SessionStore).decode(raw).stored_size == 1234
    # The size worked out by hand in test_command.py: {"foo":"bar"} is 13
    # bytes, 18 characters of base64, then ":", a 6-character timestamp, ":"
    # and a 43-character signature.
    assert len(data) == 18 + 1 + 6 + 1 + 43


@override_settings(SECRET_KEY="analyze-sessions-tests-retired", SECRET_KEY_FALLBACKS=[])
def _encoded_with_retired_key(session: dict[str, str]) -> str:
    return SessionStore().encode(session)


def test_session_signed_with_a_fallback_key_decodes() -> None:
    data = _encoded_with_retired_key({"foo": "bar"})

    assert decode(data).entries == {"foo": 11}


def test_session_signed_with_an_unknown_key_is_a_bad_signature() -> None:
    data = _encoded_with_retired_key({"foo": "bar"})

    with override_settings(SECRET_KEY_FALLBACKS=[]):
        decoded = decode(data)

    # Well-formed, but signed with a key nobody configured: dead weight.
    assert decoded == DecodedSession(
        stored_size=len(data), failure=BAD_SIGNATURE, expires_at=EXPIRES, key=KEY, unknown_key=True
    )


def test_the_engine_salt_is_used() -> None:
    renamed = RenamedSessionStore().encode({"foo": "bar"})
    default = SessionStore().encode({"foo": "bar"})

    assert decode(renamed, RenamedSessionStore).entries == {"foo": 11}
    assert decode(default, RenamedSessionStore).failure == BAD_SIGNATURE
    assert decode(renamed).failure == BAD_SIGNATURE


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        ("", BAD_SIGNATURE),
        ("not a session", BAD_SIGNATURE),
        ("a:b:c", BAD_SIGNATURE),
        ("日本語:データ:です", BAD_SIGNATURE),
        (signed("abcde"), BAD_ENCODING),  # Base64 cannot be 1 more than 4n long.
        (signed(".abcd"), BAD_ENCODING),  # Marked compressed, but is not.
        (signed(b64_encode(b"not json").decode()), BAD_PAYLOAD),
        (signed(b64_encode(b"[1, 2]").decode()), BAD_PAYLOAD),  # Not a dict.
        (signed(b64_encode(b"\xff\xfe").decode()), BAD_PAYLOAD),
        (signed(""), BAD_PAYLOAD),
    ],
)
def test_undecodable_sessions_are_classified(data: str, failure: str) -> None:
    assert decode(data) == DecodedSession(
        stored_size=len(data), failure=failure, expires_at=EXPIRES, key=KEY
    )


def test_a_payload_nested_too_deep_for_the_serializer_is_a_bad_payload() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    data = signed(b64_encode(f'{{"a":{deep}}}'.encode()).decode())

    assert decode(data).failure == BAD_PAYLOAD


def test_an_engine_that_decodes_its_own_way_is_used() -> None:
    data = 'legacy:{"foo":"bar","tags":{"__set__":[1]}}'

    assert decode(data).failure == BAD_SIGNATURE
    # The engine reads it, but the configured JSON serializer cannot write
    # a set, so its entries cannot be measured.
    assert decode(data, LegacySessionStore).failure == BAD_PAYLOAD
    assert decode('legacy:{"foo":"bar"}', LegacySessionStore) == DecodedSession(
        stored_size=20,
        payload_size=13,
        entries={"foo": 11},
        expires_at=EXPIRES,
        key=KEY,
        age=django_settings.SESSION_COOKIE_AGE,
    )
    assert decode(LegacySessionStore().encode({"n": 1}), LegacySessionStore).entries == {"n": 5}


@pytest.mark.parametrize(
    ("data", "failure"),
    [
        ("garbage", BAD_SIGNATURE),  # The engine returns {}, as Django's does.
        ("legacy:not json", BAD_SIGNATURE),  # The engine raises.
        (signed("abcde", salt="django.contrib.sessions.LegacySessionStore"), BAD_ENCODING),
    ],
)
def test_an_engine_that_cannot_read_a_session_does_not_hide_why(data: str, failure: str) -> None:
    assert decode(data, LegacySessionStore).failure == failure


def test_the_user_a_session_is_logged_in_as() -> None:
    data = SessionStore().encode({"_auth_user_id": 42, "foo": "bar"})

    assert decode(data).user_id == "42"
    assert decode(SessionStore().encode({"foo": "bar"})).user_id is None


def test_nested_values_are_measured_as_entries_are() -> None:
    session = {
        "cart": [{"id": 1, "qty": 2}, {"id": 22, "qty": 1}],
        "wizard": {"step": "2", "step_data": {"address": {"city": "Lyon"}}},
        "n": 1,
    }
    data = SessionStore().encode(session)
    store_class = SessionStore

    shallow = Decoder(store_class, depth=1).decode(RawSession(KEY, data, None, len(data)))
    deep = Decoder(store_class, depth=2).decode(RawSession(KEY, data, None, len(data)))

    # [{"id":1,"qty":2}] less [] is 16 bytes, [{"id":22,"qty":1}] 17;
    # "step":"2" is 10 bytes, "step_data":{"address":{"city":"Lyon"}} 39.
    assert shallow.nested == {"cart[]": 33, "wizard.step": 10, "wizard.step_data": 39}
    assert deep.nested == {
        **shallow.nested,
        "cart[].id": 6 + 7,
        "cart[].qty": 7 + 7,
        "wizard.step_data.address": 25,  # "address":{"city":"Lyon"}
    }
    assert decode(data).nested == {}


def bomb(expanded: int) -> str:
    """A session signed with the site's key whose payload expands to ``expanded`` bytes."""
    payload = b'{"a":"' + b"0" * (expanded - 8) + b'"}'
    return signed("." + b64_encode(zlib.compress(payload, 9)).decode())


def test_a_decompression_bomb_is_too_large_and_never_expanded() -> None:
    data = bomb(64 * 1024 * 1024)  # 64 MiB from some 90 KB.

    tracemalloc.start()
    try:
        decoded = Decoder(SessionStore, max_size=1024 * 1024).decode(
            RawSession(KEY, data, EXPIRES, len(data))
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (decoded.failure, decoded.stored_size, decoded.entries) == (TOO_LARGE, len(data), {})
    assert peak < 4 * 1024 * 1024


def test_a_payload_at_the_bound_is_decoded_and_one_past_it_is_not() -> None:
    at_the_bound = bomb(4096)

    assert Decoder(SessionStore, max_size=4096).decode(
        RawSession(KEY, at_the_bound, EXPIRES, 1)
    ).entries == {"a": 4096 - 2}
    assert (
        Decoder(SessionStore, max_size=4095)
        .decode(RawSession(KEY, at_the_bound, EXPIRES, 1))
        .failure
        == TOO_LARGE
    )


def test_stored_data_past_the_bound_is_too_large_before_it_is_verified() -> None:
    data = SessionStore().encode({"a": "b" * 5000})

    decoded = Decoder(SessionStore, max_size=len(data) - 1).decode(
        RawSession(KEY, data, EXPIRES, len(data))
    )

    assert (decoded.failure, decoded.stored_size) == (TOO_LARGE, len(data))


def test_a_session_the_store_did_not_read_is_too_large() -> None:
    decoded = Decoder(SessionStore).decode(RawSession(KEY, None, EXPIRES, 50_000_000))

    assert (decoded.failure, decoded.stored_size, decoded.expires_at) == (
        TOO_LARGE,
        50_000_000,
        EXPIRES,
    )


def test_a_refused_pickle_is_a_bad_payload_named_by_its_class() -> None:
    decoded = Decoder(SessionStore).decode(RawSession(KEY, Refused("posix.system"), None, 40))

    assert (decoded.failure, decoded.refused_class) == (BAD_PAYLOAD, "posix.system")


def test_a_cached_value_that_would_write_out_huge_is_too_large() -> None:
    # A pickle of a few kilobytes can hold one long string ten thousand times.
    long = "x" * 1_000_000
    itself: list[object] = []
    itself.append(itself)
    decoder = Decoder(CacheSessionStore)

    assert decoder.decode(RawSession(KEY, {"a": [long] * 10_000}, None, 1)).failure == TOO_LARGE
    assert decoder.decode(RawSession(KEY, {"a": itself}, None, 1)).failure == TOO_LARGE


def test_a_cached_value_that_shares_a_part_is_measured_whole() -> None:
    shared = ["y" * 10] * 5

    decoded = Decoder(CacheSessionStore).decode(
        RawSession(KEY, {"first": shared, "second": shared}, None, 1)
    )

    # "first":["yyyyyyyyyy",...] is 8 + 1 + 5 * 12 + 4 + 1 = 74 bytes.
    assert (decoded.failure, decoded.entries) == (None, {"first": 74, "second": 75})


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (42, "42"),
        ("42", "42"),
        ("3f2504e0-4f89-11d3-9a0c-0305e82c3301", "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
        # What Django could load no user by, and no report should show.
        ({"CANARY": ["SECRET"]}, None),
        ("CANARY" * 100, None),
        ("evil\x1b[31m", None),
        (True, None),
    ],
)
def test_only_an_id_is_a_user_id(value: object, shown: str | None) -> None:
    decoded = Decoder(CacheSessionStore).decode(RawSession(KEY, {"_auth_user_id": value}, None, 1))

    assert decoded.user_id == shown


def test_json_that_would_parse_to_more_objects_than_its_bound_is_too_large() -> None:
    # A payload of 256 KiB that parses to 87,000 dicts: counted by its
    # commas and openings, 174,003 items, at 64 bytes each.
    payload = b'{"a":[' + b"{}," * 87_000 + b"{}]}"
    data = signed("." + b64_encode(zlib.compress(payload)).decode())
    raw = RawSession(KEY, data, EXPIRES, len(data))

    too_small, enough = 174_002 * 64, 174_003 * 64
    assert Decoder(SessionStore, max_size=too_small).decode(raw).failure == TOO_LARGE
    assert Decoder(SessionStore, max_size=enough).decode(raw).failure is None


def test_a_long_key_is_cut_short_in_nested_paths() -> None:
    # A key of megabytes with children: each path would repeat it whole.
    long_key = "K" * 4_000_000
    data = SessionStore().encode({long_key: {str(n): 0 for n in range(3)}})

    decoded = Decoder(SessionStore, depth=2).decode(RawSession(KEY, data, EXPIRES, len(data)))

    # "0":0 is 5 bytes.
    cut = "K" * 100 + "\u2026"
    assert decoded.nested == {f"{cut}.{n}": 5 for n in range(3)}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(derandomize=True, max_examples=300)
@given(st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=6))
def test_entries_spanned_unparsed_are_those_the_serializer_writes(
    session: dict[str, Any],
) -> None:
    payload = json.dumps(session, separators=(",", ":")).encode("latin-1")
    serializer = signing.JSONSerializer()
    empty = len(serializer.dumps({}))

    spans = entry_spans(payload)

    # Keys written with escapes are measured the other way.
    if all(json.dumps(key) == f'"{key}"' for key in session):
        assert spans is not None
    if spans is not None:
        assert spans[0] == {
            key: len(serializer.dumps({key: value})) - empty for key, value in session.items()
        }
