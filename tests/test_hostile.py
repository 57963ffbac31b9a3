"""Hostile input: whatever the store or the ids file holds, the run finishes right."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import string
import tracemalloc
import zlib
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import override_settings
from hypothesis import given, settings
from hypothesis import strategies as st

from analyze_sessions.decoding import FAILURES, Decoder
from analyze_sessions.sizes import InvalidSize, parse_size
from analyze_sessions.sources import RawSession
from analyze_sessions.sources.keys import read_session_keys
from tests.helpers import (
    ADMINS,
    corrupt_session,
    django_admin,
    mail_to_files,
    run_command,
    section,
    session_via_view,
    signed,
)

# JSON values as the session's JSON serializer writes them.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8), st.booleans())
def test_entry_sizes_and_separators_add_up_to_the_payload(
    session: dict[str, object], as_django_writes: bool
) -> None:
    # As Django writes it, or as another program might: characters
    # unescaped, spaces inside values.
    payload = json.dumps(session, separators=(",", ":")).encode()
    if not as_django_writes:
        entries = (
            f"{json.dumps(key, ensure_ascii=False)}:{json.dumps(value, ensure_ascii=False)}"
            for key, value in session.items()
        )
        payload = ("{" + ",".join(entries) + "}").encode()
    data = signed(signing.b64_encode(payload).decode())

    decoded = Decoder(SessionStore).decode(RawSession("k", data, None, len(data)))

    separators = max(len(session) - 1, 0) + 2  # The commas, and the braces.
    assert decoded.failure is None
    assert decoded.payload_size == len(payload)
    assert sum(decoded.entries.values()) + separators == decoded.payload_size


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_string_is_classified_never_raised(data: str) -> None:
    decoded = Decoder(SessionStore).decode(RawSession("k", data, None, len(data)))

    assert decoded.failure in FAILURES


@settings(max_examples=100, deadline=None)
@given(st.text().map(lambda text: signing.TimestampSigner(salt=SALT).sign(text)))
def test_any_signed_string_is_classified_never_raised(data: str) -> None:
    decoded = Decoder(SessionStore).decode(RawSession("k", data, None, len(data)))

    assert decoded.failure in FAILURES or decoded.entries is not None


SALT = "django.contrib.sessions.SessionStore"
UNITS = {
    "": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}  # fmt: skip


@given(
    st.integers(min_value=0, max_value=10**6),
    st.one_of(st.none(), st.integers(min_value=0, max_value=999)),
    st.sampled_from(sorted(UNITS)),
    st.booleans(),
    st.randoms(),
)
def test_the_size_parser_accepts_what_it_documents(
    whole: int, fraction: int | None, unit: str, space: bool, rng: random.Random
) -> None:
    number = str(whole) if fraction is None else f"{whole}.{fraction}"
    cased = "".join(rng.choice((char.lower(), char.upper())) for char in unit)
    text = number + (" " if space and unit else "") + cased

    expected = Decimal(number) * UNITS[unit]
    assert parse_size(text) == int(expected.to_integral_value(rounding=ROUND_FLOOR))


DOCUMENTED = re.compile(
    r"[0-9]+(\.[0-9]+)? ?(b|k|m|g|kb|mb|gb|kib|mib|gib)?", re.IGNORECASE | re.ASCII
)


@given(st.text())
def test_the_size_parser_rejects_everything_else(text: str) -> None:
    if DOCUMENTED.fullmatch(text.strip()):
        assert parse_size(text) >= 0
    else:
        with pytest.raises(InvalidSize):
            parse_size(text)


def deep_payload(depth: int) -> str:
    payload = '{"a":' + "[" * depth + "]" * depth + "}"
    compressed = signing.b64_encode(zlib.compress(payload.encode())).decode()
    return signed("." + compressed)


@pytest.mark.django_db
def test_hostile_rows_are_counted_and_the_run_completes() -> None:
    good = session_via_view(foo="bar")  # 69 bytes
    big = "".join(random.Random(5).choices(string.ascii_letters, k=3_000_000))
    store = SessionStore()
    store["blob"] = big
    store.create()
    big_size = len(store.encode({"blob": big}))
    hostile = {
        deep_payload(200_000): "bad payload",  # RecursionError in the JSON parser
        "": "bad signature",
        "日本語の\u2028データ": "bad signature",
        signed(signing.b64_encode(b"<xml>not json</xml>").decode()): "bad payload",
        signing.dumps({"a": 1}, key="no-longer-configured", salt=SALT, compress=True): (
            "bad signature"
        ),
    }
    for data in hostile:
        corrupt_session(data)
    stored = 69 + big_size + sum(len(data) for data in hostile)

    out, err, returncode = run_command("--format=json")
    document = json.loads(out)

    assert (err, returncode) == ("", 0)
    assert document["sessions"]["processed"] == 7
    assert document["stored_bytes"]["total"] == stored
    assert document["undecodable"]["reasons"] == {"bad signature": 3, "bad payload": 2}
    assert document["undecodable"]["unknown_key"]["sessions"] == 1
    keys = {line["key"]: line for line in document["keys"]}
    assert keys["blob"]["total_bytes"] == len('"blob":""') + 3_000_000
    assert keys["foo"]["total_bytes"] == 11
    assert good not in out


def test_a_million_listed_keys(tmp_path: Path) -> None:
    path = tmp_path / "ids"
    with open(path, "w", newline="") as ids:
        ids.write("# exported from the support desk\r\n")
        for n in range(1_000_000):
            ids.write(f"key{n:029d}\r\n")

    keys = read_session_keys(str(path))

    assert len(keys) == 1_000_000
    assert "key00000000000000000000000999999" in keys


@pytest.mark.django_db
def test_a_million_listed_keys_through_stdin() -> None:
    present = session_via_view(foo="bar")
    listed = "".join(f"{n:032d}\n" for n in range(1_000_000)) + present + "\n"

    out, err, returncode = run_command("--ids-from=-", stdin=listed)

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 1 sessions out of 1 total sessions\n")
    assert section(out, "Totals")[-1] == "Listed keys not found: 1000000 of 1000001"


SENTINELS = ("SENTINEL-VALUE-1", "SENTINEL-VALUE-2", "SENTINEL-VALUE-3")


@pytest.mark.django_db
@pytest.mark.parametrize("output", ["text", "json", "csv", "mail"])
def test_no_value_and_no_key_leaks(output: str, tmp_path: Path) -> None:
    keys = [
        session_via_view(token=SENTINELS[0], note=SENTINELS[1]),
        session_via_view(**{"nested": json.dumps({"deep": SENTINELS[2]})}),
    ]
    args = ["--depth=3", "--top=5", f"--format={output}"] if output != "mail" else []
    with override_settings(ADMINS=ADMINS, **mail_to_files(tmp_path)):
        out, err, returncode = run_command(*args, *(["--mail-admins"] if output == "mail" else []))
    written = out + err + "".join(path.read_text(errors="replace") for path in tmp_path.iterdir())

    assert returncode == 0
    assert "token" in written or output == "mail"  # Key names are shown...
    assert not any(sentinel in written for sentinel in SENTINELS)  # ...values never,
    assert not any(key in written for key in keys)  # nor session keys.


class RecordingSerializer(signing.JSONSerializer):
    """Records every payload it is asked to load, as an unpickler would see them."""

    loaded: list[bytes] = []

    def loads(self, data: bytes) -> object:
        self.loaded.append(data)
        return super().loads(data)


@pytest.mark.django_db
@override_settings(SESSION_SERIALIZER="tests.test_hostile.RecordingSerializer")
def test_the_serializer_only_sees_verified_data() -> None:
    genuine = SessionStore().encode({"foo": "bar"})
    forged_payload = signing.b64_encode(b'{"forged":1}').decode()
    forged = forged_payload + genuine[genuine.index(":") :]  # Someone else's signature.
    for data in (genuine, forged, "anything:at:all"):
        corrupt_session(data)
    RecordingSerializer.loaded.clear()

    out, _, _ = run_command()

    assert RecordingSerializer.loaded == [b'{"foo":"bar"}']
    assert out.startswith("Processed 3 sessions out of 3 total sessions\n")


@pytest.mark.django_db
def test_file_sessions_are_left_as_they_were(tmp_path: Path) -> None:
    from django.contrib.sessions.backends.file import SessionStore as FileSessionStore

    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(tmp_path)
    ):
        for n in range(5):
            session_via_view(n=str(n))
        (tmp_path / "sessionid_out_unfinished").write_text("half")
        before = snapshot(tmp_path)

        for args in ([], ["--bigger-than=10"], ["--depth=2", "--format=json"]):
            assert run_command(*args)[2] == 0

        if hasattr(FileSessionStore, "_storage_path"):
            del FileSessionStore._storage_path
    assert snapshot(tmp_path) == before


def snapshot(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {
        path.name: (path.stat().st_mtime_ns, path.stat().st_mode, path.read_bytes())
        for path in directory.iterdir()
    } | {".": (os.stat(directory).st_mtime_ns, 0, b"")}


@pytest.mark.django_db
def test_memcached_sees_no_write(memcached_location: str, tmp_path: Path) -> None:
    from pymemcache.client.base import Client

    cache = {
        "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
        "LOCATION": memcached_location,
    }
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.cache", CACHES={"default": cache}
    ):
        key = session_via_view(foo="bar")
        (tmp_path / "ids").write_text(f"{key}\nmissing\n")
        server = Client(memcached_location)
        before = server.stats()

        out, _, _ = run_command(f"--ids-from={tmp_path / 'ids'}")

        after = server.stats()
        server.close()
    assert out.startswith("Processed 1 sessions")
    for stat in (b"cmd_set", b"cmd_touch", b"delete_hits", b"delete_misses", b"incr_hits"):
        assert after[stat] == before[stat], stat


@pytest.mark.django_db(transaction=True)
def test_postgresql_reads_in_read_only_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from analyze_sessions.sources.database import DatabaseSource

    if connection.vendor != "postgresql":
        pytest.skip(
            "Only PostgreSQL has read-only transactions: run with ANALYZE_SESSIONS_DB=postgres."
        )
    for n in range(3):
        session_via_view(n=str(n))
    attempts: list[str] = []
    fetch = DatabaseSource._fetch

    def fetch_after_trying_to_write(self: DatabaseSource, *query: Any) -> object:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("UPDATE django_session SET session_data = ''")
        except Exception as error:
            attempts.append(str(error).splitlines()[0])
        return fetch(self, *query)

    monkeypatch.setattr(DatabaseSource, "_fetch", fetch_after_trying_to_write)

    with CaptureQueriesContext(connection) as queries:
        out, _, returncode = run_command("--batch-size=2")

    assert attempts == ["cannot execute UPDATE in a read-only transaction"] * 2
    assert returncode == 0 and out.startswith("Processed 3 sessions")
    # Every read but the table's size on disk follows its own SET.
    reads = [q["sql"] for q in queries if q["sql"].startswith("SELECT ")]
    assert sum(q["sql"] == "SET TRANSACTION READ ONLY" for q in queries) == len(reads) - 1
    # And the connection writes again once the command is done.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE django_session SET expire_date = expire_date")


HOSTILE_KEYS = [
    '=HYPERLINK("http://example.com/steal","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tTAB",
    "\rCR",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;title\x07",
    "lone \ud800 surrogate",
    "line\nbreak",
    "\u202eright-to-left",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("output", ["text", "json", "csv"])
def test_key_names_cannot_run_in_a_spreadsheet_or_a_terminal(output: str) -> None:
    store = SessionStore()
    for n, key in enumerate(HOSTILE_KEYS):
        store[key] = n
    store.create()

    # A real process writing to a real pipe, whose encoding is the system's.
    result = django_admin("analyze-sessions", f"--format={output}", "--depth=1")

    assert (result.stderr, result.returncode) == ("", 0)
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    assert "\u202e" not in result.stdout
    if output == "json":
        # JSON escapes them, and gives the names back exactly.
        assert {line["key"] for line in json.loads(result.stdout)["keys"]} == set(HOSTILE_KEYS)
    elif output == "csv":
        rows = list(csv.reader(io.StringIO(result.stdout)))
        cells = [row[0] for row in rows[1:]]
        assert len(cells) == len(HOSTILE_KEYS)
        assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
        assert '\'=HYPERLINK("http://example.com/steal","click")' in cells
        assert "'+1+1" in cells and "'@SUM(A1)" in cells and "'-2+3" in cells
        assert "\\ttab".upper().lower() in [cell.lower() for cell in cells]
        assert "lone \\ud800 surrogate" in cells
    else:
        assert "    \\x1b[31mred\\x1b[0m (1 times, " in result.stdout
        assert "    lone \\ud800 surrogate (1 times, " in result.stdout
        assert "    line\\nbreak (1 times, " in result.stdout


@pytest.mark.django_db
def test_a_decompression_bomb_in_the_store_is_counted_too_large_in_bounded_memory() -> None:
    session_via_view(foo="bar")
    payload = b'{"a":"' + b"0" * (64 * 1024 * 1024) + b'"}'  # 64 MiB, from some 90 KB.
    bomb = signed("." + signing.b64_encode(zlib.compress(payload, 9)).decode())
    del payload
    corrupt_session(bomb)

    tracemalloc.start()
    try:
        out, err, returncode = run_command("--max-session-size=1MiB")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed 2 sessions out of 2 total sessions\n")
    assert section(out, "Undecodable") == [
        f"1 session, {len(bomb)} bytes (too large: 1): no request can read them, and Django "
        "reads each as empty",
        "1 of them is stored in more than 1048576 bytes, or decompress to more "
        "(--max-session-size): not read whole",
    ]
    assert peak < 16 * 1024 * 1024
