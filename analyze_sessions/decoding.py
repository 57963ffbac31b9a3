"""Verify and decode raw sessions as the site's session engine would."""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import json.decoder
import json.scanner
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any

import msgspec
from django.contrib.sessions.backends.base import SessionBase
from django.core import signing
from django.utils.encoding import force_bytes

from analyze_sessions.sources import DEFAULT_MAX_SESSION_SIZE, Packed, RawSession
from analyze_sessions.unpickling import Refused, object_budget

BAD_SIGNATURE = "bad signature"
BAD_ENCODING = "bad encoding"
BAD_PAYLOAD = "bad payload"
TOO_LARGE = "too large"
# Crashed the process that decoded it, or ran past its time (see sandbox.py).
TOO_COSTLY = "too costly"
FAILURES = (BAD_SIGNATURE, BAD_ENCODING, BAD_PAYLOAD, TOO_LARGE, TOO_COSTLY)

# What Django's signing writes: base64 (marked "." when compressed), a
# base62 timestamp, and a base64 HMAC (SHA-256, or SHA-1 from old Djangos).
_SIGNED_SHAPE = re.compile(
    r"\.?[A-Za-z0-9_-]*:[0-9A-Za-z]{1,12}:(?:[A-Za-z0-9_-]{43}|[A-Za-z0-9_-]{27})"
)
# Where django.contrib.auth keeps the id of the user a session is logged in as.
USER_ID_KEY = "_auth_user_id"
# Where a session that sets its own age keeps it (SessionBase.set_expiry()).
EXPIRY_KEY = "_session_expiry"
# The most seconds a session's own age is taken as: more than any calendar spans.
MAX_AGE = 2**40
# The values the report reads: all others are measured, never parsed.
_READ_KEYS = (USER_ID_KEY, EXPIRY_KEY)


# Not frozen: a frozen dataclass takes three times as long to make, once a
# session, and nothing changes one once made.
@dataclass(slots=True)
class DecodedSession:
    """
    What the report needs to know of one session, and nothing of its values.

    ``entries`` maps each key of the session to its entry size, and
    ``nested`` each path into its dict and list values (``cart[]``,
    ``wizard.step_data``) to the bytes it takes there. An undecodable session
    has a ``failure`` (one of ``FAILURES``) and no entries; ``unknown_key``
    says it is well-formed but signed with a key that is not configured,
    and ``refused_class`` names the class a cached pickle held that a
    session cannot hold.
    """

    stored_size: int
    payload_size: int = 0
    entries: dict[str, int] = field(default_factory=dict)
    failure: str | None = None
    expires_at: datetime | None = None
    key: str = ""
    user_id: str | None = None
    unknown_key: bool = False
    nested: dict[str, int] = field(default_factory=dict)
    refused_class: str | None = None
    # Seconds from its last write to its expiry; None where that cannot be
    # told (undecodable, or an expiry set as a date).
    age: int | None = None


class Decoder:
    """
    Decode sessions with the signing and serializer of a session engine.

    Built once per run: the signer, salt and serializer are looked up here,
    not per session. Unlike ``SessionStore.decode()``, which returns ``{}``
    for any session it cannot read, the decoder says why it could not.

    No session is decoded past ``max_size`` bytes, stored or decompressed:
    it is undecodable, too large, and the memory it would take is never
    taken. Such a session is not handed to an engine's own ``decode()``
    either, which would decompress it whole.
    """

    def __init__(
        self,
        store_class: type[SessionBase],
        expiry: Callable[[RawSession, dict[Any, Any]], datetime | None] | None = None,
        depth: int = 0,
        max_size: int = DEFAULT_MAX_SESSION_SIZE,
        unpack: Callable[[Any], Any] | None = None,
    ) -> None:
        self._max_size = max_size
        # How a cache's Packed values become values (the source's unpack()).
        self.unpack = unpack
        self._store = store_class()
        self._serializer = self._store.serializer()
        self._empty_payload_size = len(self._serializer.dumps({}))
        try:
            self._cookie_age: int | None = int(self._store.get_session_cookie_age())
        except (TypeError, ValueError, AttributeError):  # An engine's own idea of it.
            self._cookie_age = None
        self._depth = depth
        signer = signing.TimestampSigner(salt=self._store.key_salt)
        self._verified = SessionVerifier(signer).verified
        self._engine_decodes = store_class.decode is not SessionBase.decode
        # Where the store's own record of the expiry is not the whole story.
        self._expiry = expiry
        # Django's JSON serializer writes compact JSON, whose entries can be
        # measured while it is parsed, rather than written again to measure.
        self._compact_json = type(self._serializer) is signing.JSONSerializer
        # Where the report reads no value but the user's id (no nested
        # paths, no expiry kept in the session), the others are not parsed.
        self._values_unread = self._compact_json and not depth and expiry is None

    def decode(self, raw: RawSession) -> DecodedSession:
        """Decode ``raw``; never raises, whatever its data holds."""
        try:
            if isinstance(raw.data, Packed):
                if self.unpack is None:  # pragma: no cover - sources that pack say how
                    raise TypeError("No way to unpack the value.")
                raw = raw._replace(data=self.unpack(raw.data.payload))
            return self._decode(raw)
        except MemoryError:  # Past every bound this process was given.
            return self._undecodable(raw, TOO_LARGE)
        except Exception:  # Whatever a value built to fool the measuring raises.
            return self._undecodable(raw, BAD_PAYLOAD)

    def _decode(self, raw: RawSession) -> DecodedSession:
        payload_size: int | None = None  # Unless it is measured on the way.
        entries: dict[str, int] | None = None  # Likewise.
        if raw.data is None:  # The store did not read it: over the bound.
            return self._undecodable(raw, TOO_LARGE)
        if not isinstance(raw.data, str):
            # Caches keep the session dict itself.
            if isinstance(raw.data, Refused):
                return self._undecodable(raw, BAD_PAYLOAD, refused_class=raw.data.class_name)
            # A dict, not a subclass whose own attributes could hide its methods.
            if type(raw.data) is not dict:
                return self._undecodable(raw, BAD_PAYLOAD)
            if _outgrows(raw.data, self._max_size):
                return self._undecodable(raw, TOO_LARGE)
            session = raw.data
        else:
            try:
                session, payload_size, entries = self._unsign_and_load(raw.data)
            except _Undecodable as undecodable:
                # An engine that decodes its own way may read what Django's
                # way cannot. If it too returns nothing, Django's reason is
                # the one to report: such engines return {} for data they
                # cannot read.
                session = {}
                if self._engine_decodes and undecodable.reason != TOO_LARGE:
                    session = self._decode_with_engine(raw.data)
                if not session:
                    return self._undecodable(raw, undecodable.reason)
        try:
            if entries is None:
                entries = {str(key): self.entry_size(key, value) for key, value in session.items()}
            if payload_size is None:
                payload_size = len(self._serializer.dumps(session))
            expires_at = raw.expires_at if self._expiry is None else self._expiry(raw, session)
            nested: dict[str, int] = {}
            if self._depth:
                for key, value in session.items():
                    self._measure_inside(_segment(key), value, self._depth, nested)
        except Exception:  # Values the configured serializer cannot write.
            return self._undecodable(raw, BAD_PAYLOAD)
        user_id = session.get(USER_ID_KEY)
        return DecodedSession(
            raw.stored_size,
            age=self._age(session.get(EXPIRY_KEY)),
            payload_size=payload_size,
            entries=entries,
            expires_at=expires_at,
            key=raw.key,
            user_id=_user_id(user_id),
            nested=nested,
        )

    def _age(self, expiry: Any) -> int | None:
        """
        A session's age, as SessionBase.get_expiry_age() tells it: its own
        number of seconds where it set one, else the cookie's age. An expiry
        set as a date makes the session expire then, whenever written.
        """
        if not expiry:
            return self._cookie_age
        if type(expiry) in (int, float, bool) and abs(expiry) <= MAX_AGE:
            return int(expiry)  # As Django takes it: seconds, True as one.
        return None  # A date, or no number of seconds a calendar has.

    def entry_size(self, key: Any, value: Any) -> int:
        """The bytes that ``key`` and its value take in the payload."""
        return len(self._serializer.dumps({key: value})) - self._empty_payload_size

    def _measure_inside(self, path: str, value: Any, depth: int, sizes: dict[str, int]) -> None:
        # Measured as entries are: what a part adds to an empty container.
        if isinstance(value, dict):
            for key, item in value.items():
                inner = f"{path}.{_segment(key)}"
                sizes[inner] = sizes.get(inner, 0) + self.entry_size(key, item)
                if depth > 1:
                    self._measure_inside(inner, item, depth - 1, sizes)
        elif isinstance(value, list):
            inner = f"{path}[]"
            empty = len(self._serializer.dumps([]))
            for item in value:
                sizes[inner] = sizes.get(inner, 0) + len(self._serializer.dumps([item])) - empty
                if depth > 1:
                    self._measure_inside(inner, item, depth - 1, sizes)

    def _unsign_and_load(self, data: str) -> tuple[dict[Any, Any], int, dict[str, int] | None]:
        # The steps of TimestampSigner.unsign_object(), taken one at a time so
        # that each failure keeps its reason. Each catches whatever its step
        # raises on hostile data (non-ASCII text makes the signature check
        # raise TypeError, for one), as Django's own decode() does. The
        # serializer only ever sees data whose signature verified.
        if len(data) > self._max_size:
            raise _Undecodable(TOO_LARGE)
        try:
            encoded = self._verified(data)
        except Exception:
            raise _Undecodable(BAD_SIGNATURE) from None
        try:
            compressed = encoded[:1] == b"."
            payload = b64_decode(encoded[1:] if compressed else encoded)
            if compressed:
                payload = self._decompressed(payload)
        except _Undecodable:
            raise
        except Exception:
            raise _Undecodable(BAD_ENCODING) from None
        if len(payload) > _COUNTED_PAST:
            # Parsed, each item is an object of 50 bytes or more, from as
            # little as two bytes of payload ("[],"): counted before it is.
            items = payload.count(b",") + payload.count(b"[") + payload.count(b"{")
            if items > object_budget(self._max_size):
                raise _Undecodable(TOO_LARGE)
        if self._values_unread:
            spans = entry_spans(payload)
            if spans is not None:
                entries, session = spans  # The values read, parsed alone.
                return session, len(payload), entries
        if self._compact_json:
            measured = split_compact_json(payload)
            if measured is not None:
                return measured[0], len(payload), measured[1]
        try:
            session = self._serializer.loads(payload)
        except Exception:
            raise _Undecodable(BAD_PAYLOAD) from None
        if not isinstance(session, dict):
            raise _Undecodable(BAD_PAYLOAD)
        return session, len(payload), None

    def _decompressed(self, data: bytes) -> bytes:
        """
        What ``zlib.decompress(data)`` gives, up to the bound: a few
        kilobytes signed with the site's key can expand to gigabytes.
        """
        decompressor = zlib.decompressobj()
        payload = decompressor.decompress(data, self._max_size + 1)
        if len(payload) > self._max_size:
            raise _Undecodable(TOO_LARGE)
        if not decompressor.eof:  # As zlib.decompress() refuses a truncated stream.
            raise _Undecodable(BAD_ENCODING)
        return payload

    def _decode_with_engine(self, data: str) -> dict[Any, Any]:
        try:
            session = self._store.decode(data)
        except Exception:
            return {}
        return session if isinstance(session, dict) else {}

    @staticmethod
    def _undecodable(
        raw: RawSession, reason: str, refused_class: str | None = None
    ) -> DecodedSession:
        unknown_key = (
            reason == BAD_SIGNATURE
            and isinstance(raw.data, str)
            and _SIGNED_SHAPE.fullmatch(raw.data) is not None
        )
        return DecodedSession(
            raw.stored_size,
            failure=reason,
            expires_at=raw.expires_at,
            key=raw.key,
            unknown_key=unknown_key,
            refused_class=refused_class,
        )


# What a primary key written by django.contrib.auth looks like: a number, a
# UUID, a short slug. Anything else under _auth_user_id is no user's id.
_USER_ID = re.compile(r"[A-Za-z0-9_.:@+-]{1,64}")


# The most of one key a nested path shows: each path repeats its parents'
# keys, and a key of megabytes with a hundred children would be a hundred
# paths of megabytes.
SEGMENT_LENGTH = 100


def _segment(key: Any) -> str:
    """A key as one step of a nested path: cut short, and marked so, if long."""
    text = str(key)
    return text if len(text) <= SEGMENT_LENGTH else text[:SEGMENT_LENGTH] + "\u2026"


def _user_id(value: Any) -> str | None:
    """
    The id of the user a session is logged in as, or None where it holds
    none Django could load a user by: then it is no login, and the value,
    which anyone who can write to a cache may have put there, is not shown.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and _USER_ID.fullmatch(value) else None


def _outgrows(value: Any, limit: int) -> bool:
    """
    Whether writing ``value`` out would take more than ``limit`` bytes, told
    without writing it: a cached pickle of a few bytes can refer to one long
    string a million times, which measuring would write out whole. Each
    string counts its length, and each item at least a byte, so the walk
    stops after ``limit`` steps at most, keeping one iterator a level. A
    container inside itself can never be written out: it outgrows any limit.
    """
    budget = limit
    levels: list[tuple[Iterator[Any], int]] = [(iter((value,)), 0)]
    inside: set[int] = set()  # The containers on the way down to the current one.
    while levels:
        items, container = levels[-1]
        item = next(items, _END)
        if item is _END:
            levels.pop()
            inside.discard(container)
            continue
        if isinstance(item, (str, bytes, bytearray)):
            budget -= len(item) + 1
        elif isinstance(item, (dict, list, tuple, set, frozenset, deque)):
            if id(item) in inside:
                return True
            budget -= len(item) + 1
            inside.add(id(item))
            contents = chain.from_iterable(item.items()) if isinstance(item, dict) else iter(item)
            levels.append((contents, id(item)))
        else:
            budget -= 1
        if budget < 0:
            return True
    return False


_END = object()
# Payloads smaller than this cannot parse to much, whatever they hold.
_COUNTED_PAST = 64 * 1024


class SessionVerifier:
    """
    Verifies signed values as ``signer.unsign()`` does, but prepares the
    HMAC of each secret once, where salted_hmac() derives its key and
    starts its HMAC again on every call: the same answers, in less time a
    session.
    """

    def __init__(self, signer: signing.TimestampSigner) -> None:
        self._sep = signer.sep.encode()
        hasher = getattr(hashlib, signer.algorithm)
        salt = force_bytes(signer.salt) + b"signer"
        # The keys salted_hmac() derives, each made into an HMAC once and
        # copied for each message: the standard library's, with OpenSSL's.
        self._hmacs = [
            hmac.new(hasher(salt + force_bytes(key)).digest(), digestmod=signer.algorithm)
            for key in [signer.key, *signer.fallback_keys]
        ]

    def verified(self, signed_value: str) -> bytes:
        """
        The value signed, less its timestamp, as bytes: what
        ``signer.unsign(signed_value).encode()`` gives, and BadSignature or
        ValueError where that raises them.
        """
        data = signed_value.encode()
        if self._sep not in data:
            raise signing.BadSignature("No separator found in value")
        message, signature = data.rsplit(self._sep, 1)
        for prepared in self._hmacs:
            mac = prepared.copy()
            mac.update(message)
            expected = binascii.b2a_base64(mac.digest(), newline=False)
            if hmac.compare_digest(signature, expected.translate(_TO_URLSAFE).rstrip(b"=")):
                break
        else:
            raise signing.BadSignature("Signature does not match")
        value, timestamp = message.rsplit(self._sep, 1)
        # Only base62 digits, after a sign, as b62_decode() takes them.
        digits = timestamp[1:] if timestamp[:1] == b"-" else timestamp
        if not timestamp or (digits and not digits.isalnum()):
            raise ValueError("Timestamp is not in base62")
        return value


_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64_decode(data: bytes) -> bytes:
    """What ``signing.b64_decode()`` gives, without its layers of calls."""
    return binascii.a2b_base64((data + b"=" * (-len(data) % 4)).translate(_URLSAFE_TO_STANDARD))


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_scan_value = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]


_RAW_ENTRIES = msgspec.json.Decoder(dict[str, msgspec.Raw])


def entry_spans(payload: bytes) -> tuple[dict[str, int], dict[str, Any]] | None:
    """
    The bytes each entry of compact JSON ``payload`` takes (``"key":value``),
    and the values the report reads (the user's id, the session's own age),
    parsed, where it has them, without parsing any other value: msgspec
    checks that each is JSON, and says where it ends.

    None for anything but an ASCII object written without spaces, whose
    keys need no escapes, each once: there the entries do not add up to
    the payload, or the text is not what Django's serializer reads (it
    reads bytes as Latin-1, msgspec as UTF-8). Then split_compact_json(),
    or json itself, measures it, and says what is wrong. msgspec refuses
    what json refuses, and more (NaN, lone surrogates), never less.
    """
    if not payload.isascii():
        return None
    try:
        values = _RAW_ENTRIES.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None
    entries = {key: len(key) + 3 + len(value) for key, value in values.items()}
    # With the braces, and a comma between entries, the entries make the
    # payload. A key unescaped is shorter than it is written, and a key
    # given twice is counted once: either way they fall short.
    if sum(entries.values()) + 1 + (len(entries) or 1) != len(payload):
        return None
    return entries, {
        name: msgspec.json.decode(values[name]) for name in _READ_KEYS if name in values
    }


def split_compact_json(payload: bytes) -> tuple[dict[str, Any], dict[str, int]] | None:
    """
    The object that compact JSON ``payload`` holds, and the bytes each entry
    takes in it (``"key":value``), in one pass of the C scanner.

    For an object written as ``json.dumps`` writes it with compact
    separators, that is what the serializer would write again for each
    entry; JSON that another program wrote is measured as it stands. None
    for anything else, where entries cannot be told apart in place: the
    caller then parses it the plain way, which also says why bad JSON is bad.
    """
    # Each byte one character, as Django's serializer reads the payload: an
    # entry's length in characters is its length in bytes.
    text = payload.decode("latin-1")
    if text == "{}":
        return {}, {}
    if text[:2] != '{"' or text[-1:] != "}":
        return None
    session: dict[str, Any] = {}
    entries: dict[str, int] = {}
    start, last = 1, len(text) - 1
    try:
        while True:
            key, colon = _scan_string(text, start + 1)
            if text[colon] != ":":
                return None
            if key in session:  # Written twice: measured the plain way.
                return None
            session[key], end = _scan_value(text, colon + 1)
            entries[key] = end - start
            if end == last:
                return session, entries
            if text[end] != "," or text[end + 1] != '"':
                return None
            start = end + 1
    except (StopIteration, ValueError, IndexError, RecursionError):
        return None


class _Undecodable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
