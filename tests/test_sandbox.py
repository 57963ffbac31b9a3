"""Cache values are decoded in a child process that a hostile one cannot take the run down with."""

from __future__ import annotations

import ctypes
import json
import pickle
import time
from typing import Any

import pytest
import redis
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore
from django.test import override_settings

from analyze_sessions.decoding import TOO_COSTLY, TOO_LARGE, Decoder
from analyze_sessions.sandbox import Sandbox
from analyze_sessions.sources import Packed, RawSession
from tests.helpers import run_command, session_via_view, within


def unpack(payload: bytes) -> Any:
    """Stands for a value built to hurt: each kind of harm, by name."""
    if payload == b"crash":
        ctypes.string_at(0)  # A real SIGSEGV, as hashing a tuple too deep gives.
    if payload == b"hang":
        time.sleep(3600)
    if payload == b"gigabytes":
        return {"a": bytearray(4 * 1024**3)}
    return {"foo": payload.decode()}


def raws(*payloads: bytes) -> list[RawSession]:
    return [RawSession(f"key{n}", Packed(data), None, 10) for n, data in enumerate(payloads)]


@pytest.fixture
def sandbox(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(Sandbox, "SECONDS_A_SESSION", 1.0)
    monkeypatch.setattr(Sandbox, "SECONDS_TO_SPARE", 1.0)
    decoder = Decoder(CacheSessionStore, unpack=unpack)
    sandbox = Sandbox(decoder, memory=256 * 1024 * 1024)
    yield sandbox
    sandbox.close()


@pytest.mark.parametrize("harm", [b"crash", b"hang"])
def test_a_session_that_takes_the_child_down_is_too_costly_and_the_others_are_decoded(
    sandbox: Sandbox, harm: bytes
) -> None:
    with within(30):
        decoded = sandbox.decode(raws(b"bar", harm, b"bazbaz"))
        again = sandbox.decode(raws(b"after"))  # A new child, for the next batch.

    assert [session.failure for session in decoded] == [None, TOO_COSTLY, None]
    assert [session.entries for session in decoded] == [{"foo": 11}, {}, {"foo": 14}]
    assert [session.key for session in decoded] == ["key0", "key1", "key2"]
    assert again[0].entries == {"foo": 13}


def test_a_session_past_the_memory_bound_is_too_large(sandbox: Sandbox) -> None:
    decoded = sandbox.decode(raws(b"bar", b"gigabytes"))

    assert [session.failure for session in decoded] == [None, TOO_LARGE]


def colliding_integers(count: int) -> list[int]:
    """Integers that all hash alike (hashes of integers are theirs modulo 2**61 - 1)."""
    return [7 + n * (2**61 - 1) for n in range(1, count + 1)]


@pytest.mark.django_db
def test_a_cached_set_whose_hashes_collide_is_too_costly_and_the_run_goes_on(
    redis_location: str, redis_server: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Sandbox, "SECONDS_A_SESSION", 1.0)
    monkeypatch.setattr(Sandbox, "SECONDS_TO_SPARE", 1.0)
    cache = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_location}
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.cache", CACHES={"default": cache}
    ):
        session_via_view(foo="bar")
        # {"cart": {...}}, two megabytes that take minutes to build, each
        # member compared with all before it; written opcode by opcode, as
        # building the set here would take those minutes too.
        members = b"".join(pickle.dumps(n, 2)[2:-1] for n in colliding_integers(200_000))
        forged = b"\x80\x04}\x8c\x04cart\x8f(" + members + b"\x90s."
        name = f":1:{CacheSessionStore.cache_key_prefix}{'c' * 32}"
        redis_server.set(name, forged)

        with within(60):
            out, err, returncode = run_command("--format=json")

    document = json.loads(out)
    assert (err, returncode) == ("", 0)
    assert document["sessions"]["processed"] == 2
    assert document["undecodable"]["reasons"] == {"too costly": 1}
    assert [line["key"] for line in document["keys"]] == ["foo"]
