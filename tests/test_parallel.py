"""Fast paths, jobs and shards give the report the plain way gives."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import string
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.core import signing
from django.test import Client
from hypothesis import given, settings
from hypothesis import strategies as st

from analyze_sessions.decoding import (
    BAD_PAYLOAD,
    BAD_SIGNATURE,
    DecodedSession,
    Decoder,
    SessionVerifier,
    b64_decode,
)
from analyze_sessions.shards import in_range, key_range
from analyze_sessions.sources import RawSession
from analyze_sessions.stats import Stats, from_state, to_state
from tests.helpers import (
    DJANGO_ADMIN,
    corrupt_session,
    django_admin_env,
    run_command,
    section,
    session_via_view,
)
from tests.test_hostile import json_values

NOW = datetime(2026, 11, 26, tzinfo=timezone.utc)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8), st.integers(0, 3))
def test_measuring_while_parsing_equals_writing_again(
    session: dict[str, object], depth: int
) -> None:
    data = SessionStore().encode(session)
    raw = RawSession("k", data, None, len(data))
    fast = Decoder(SessionStore, depth=depth)
    plain = Decoder(SessionStore, depth=depth)
    plain._compact_json = False

    assert fast.decode(raw) == plain.decode(raw)


sessions = st.builds(
    DecodedSession,
    stored_size=st.integers(0, 100_000),
    payload_size=st.integers(0, 10_000),
    entries=st.dictionaries(
        st.sampled_from(["a", "cart", "q_1", "q_22", "x9y"]), st.integers(0, 500)
    ),
    failure=st.sampled_from([None, None, None, BAD_SIGNATURE, BAD_PAYLOAD]),
    expires_at=st.one_of(st.none(), st.integers(-5, 5).map(lambda d: NOW + timedelta(days=d))),
    key=st.text(string.ascii_lowercase + string.digits, min_size=8, max_size=8),
    user_id=st.one_of(st.none(), st.sampled_from(["1", "2", "3"])),
    unknown_key=st.booleans(),
    nested=st.dictionaries(st.sampled_from(["cart[]", "a.b"]), st.integers(0, 50)),
    age=st.one_of(st.none(), st.integers(0, 40 * 86400)),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(sessions, max_size=40), st.integers(1, 4), st.randoms())
def test_stats_of_parts_merged_equal_the_stats_of_the_whole(
    decoded: list[DecodedSession], parts: int, rng: random.Random
) -> None:
    whole = Stats(now=NOW, top=5)
    split: list[Stats] = [Stats(now=NOW, top=5) for _ in range(parts)]
    for session in decoded:
        whole.add(session)
        rng.choice(split).add(session)
    merged = Stats(now=NOW, top=5)
    for part in split:
        # Through the JSON state, as shards on several machines are merged.
        merged.merge(from_state(json.loads(json.dumps(to_state(part, show_keys=True)))))

    assert merged == whole


@given(st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=40), st.integers(1, 50))
def test_each_key_is_in_exactly_one_range(key: str, count: int) -> None:
    assert sum(in_range(key, key_range(index, count)) for index in range(count)) == 1


def make_store() -> None:
    rng = random.Random(7)
    for n in range(40):
        items = {"n": str(n), "cart": "x" * rng.randint(0, 300)}
        if n % 7 == 0:
            items[f"search_{rng.getrandbits(40):010x}"] = "results"
        session_via_view(**items)
    client = Client()
    from django.contrib.auth.models import User

    client.force_login(User.objects.create_user("ada"))
    corrupt_session("junk")
    corrupt_session("a" * 5000)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("jobs", ["2", "3"])
def test_jobs_give_the_report_one_process_gives(jobs: str) -> None:
    make_store()

    alone = run_command("--jobs=1", "--top=50")
    together = run_command(f"--jobs={jobs}", "--top=50")

    assert alone[0].startswith("Processed 43 sessions out of 43 total sessions\n")
    assert together == alone


@pytest.mark.django_db(transaction=True)
def test_jobs_within_a_shard_read_that_shard_only() -> None:
    make_store()

    processed = 0
    for shard in ("1/2", "2/2"):
        alone = run_command(f"--shard={shard}", "--top=50")
        together = run_command(f"--shard={shard}", "--jobs=3", "--top=50")
        assert together == alone
        processed += int(alone[0].split()[1])
    assert processed == 43


@pytest.mark.django_db
def test_shards_merged_give_the_report_of_the_whole(tmp_path: Path) -> None:
    make_store()
    paths = []
    for shard in range(1, 4):
        out, err, returncode = run_command(f"--shard={shard}/3", "--format=json", "--top=50")
        assert (err, returncode) == ("", 0)
        paths.append(tmp_path / f"shard-{shard}.json")
        paths[-1].write_text(out)
    processed = [json.loads(path.read_text())["sessions"]["processed"] for path in paths]

    merged = run_command("--merge", *map(str, paths), "--top=50")
    whole = run_command("--top=50")

    assert sum(processed) == 43 and all(processed)
    assert merged[0].splitlines() == whole[0].splitlines()
    assert merged == whole


@pytest.mark.django_db
def test_shard_states_show_no_whole_key(tmp_path: Path) -> None:
    keys = [session_via_view(n=str(n)) for n in range(5)]

    out, _, _ = run_command("--shard=1/1", "--format=json")

    assert not any(key in out for key in keys)
    assert json.loads(out)["state"]["totals"]["processed"] == 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs=0"], "--jobs must be a whole number from 1 to 64, not '0'."),
        (["--jobs=2", "--limit=5"], "--limit and --jobs do not go together: pick one."),
        (
            ["--shard=4/3"],
            "Invalid shard '4/3': give K/N, the K-th of N shards, with 1 <= K <= N <= 1000, "
            "for example 1/3.",
        ),
        (
            ["--shard=x"],
            "Invalid shard 'x': give K/N, the K-th of N shards, with 1 <= K <= N "
            "<= 1000, for example 1/3.",
        ),  # fmt: skip
        (
            ["--merge", "/nonexistent/a.json"],
            "Cannot read report '/nonexistent/a.json': No such file or directory.",
        ),
    ],
)
def test_bad_parallel_options(args: list[str], message: str) -> None:
    assert run_command(*args) == ("", f"CommandError: {message}\n", 1)


@pytest.mark.django_db
def test_only_shard_reports_merge(tmp_path: Path) -> None:
    session_via_view(n="1")
    path = tmp_path / "whole.json"
    path.write_text(run_command("--format=json")[0])

    assert run_command("--merge", str(path)) == (
        "",
        f"CommandError: Cannot merge '{path}': it is the report of a whole store, not of a "
        "shard (made with --shard).\n",
        1,
    )


@pytest.mark.django_db
def test_jobs_need_a_database(tmp_path: Path) -> None:
    from django.test import override_settings

    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.file", SESSION_FILE_PATH=str(tmp_path)
    ):
        result = run_command("--jobs=2")
        from django.contrib.sessions.backends.file import SessionStore as FileSessionStore

        if hasattr(FileSessionStore, "_storage_path"):
            del FileSessionStore._storage_path

    assert result == ("", "CommandError: --jobs works with sessions kept in a database only.\n", 1)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("shards", "message"),
    [
        (["1/2", "1/2"], "Cannot merge: shard 1/2 given twice, shard 2/2 missing."),
        (["1/3", "3/3"], "Cannot merge: shard 2/3 missing."),
        (["1/2", "1/3"], "Cannot merge: the reports are not the shards of one split (K/N)."),
    ],
)
def test_merge_takes_each_shard_once(shards: list[str], message: str, tmp_path: Path) -> None:
    for n in range(6):
        session_via_view(n=str(n))
    paths = []
    for number, shard in enumerate(shards):
        paths.append(tmp_path / f"{number}.json")
        paths[-1].write_text(run_command(f"--shard={shard}", "--format=json")[0])

    assert run_command("--merge", *map(str, paths)) == ("", f"CommandError: {message}\n", 1)


@pytest.mark.django_db(transaction=True)
def test_jobs_interrupted_report_what_they_read(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [session_via_view(n=str(n)) for n in range(8)]
    # Keys are random: make sure one is in the range where Ctrl-C comes.
    while max(keys) <= "o":
        keys.append(session_via_view(n="more"))
    decode = Decoder.decode

    def interrupted(self: Decoder, raw: RawSession) -> DecodedSession:
        if raw.key > "o":  # In the second job's range, which starts at "i00".
            raise KeyboardInterrupt
        return decode(self, raw)

    monkeypatch.setattr(Decoder, "decode", interrupted)  # Forked workers inherit it.

    out, err, returncode = run_command("--jobs=2", "--batch-size=1")

    assert out.startswith("Processed ")
    assert "Partial: interrupted after" in out
    assert (err, returncode) == (
        "CommandError: Interrupted: the report covers the sessions read before.\n",
        130,
    )


def _signed(text: str, key: str, cut: int) -> str:
    signed = signing.TimestampSigner(key=key, salt=SALT).sign(text)
    return signed[: len(signed) - cut] if cut else signed


def _signed_with_timestamp(text: str, timestamp: str, key: str) -> str:
    # Whatever the timestamp, signed as TimestampSigner signs its own.
    return signing.Signer(key=key, salt=SALT).sign(f"{text}:{timestamp}")


SALT = "django.contrib.sessions.SessionStore"
KEYS = ["analyze-sessions-tests", "analyze-sessions-tests-retired", "another"]
signed_values = st.one_of(
    st.builds(_signed, st.text(), st.sampled_from(KEYS), st.sampled_from([0, 0, 1, 5])),
    st.builds(
        _signed_with_timestamp,
        st.text(),
        st.one_of(st.text(max_size=4), st.text("-0aZ9:", max_size=4)),
        st.sampled_from(KEYS),
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(), signed_values))
def test_the_verifier_answers_as_the_signer_does(data: str) -> None:
    signer = signing.TimestampSigner(salt=SALT)

    def answer(verified: Callable[[str], bytes]) -> tuple[bool, bytes | None]:
        try:
            return True, verified(data)
        except Exception:
            return False, None

    assert answer(SessionVerifier(signer).verified) == answer(
        lambda data: signer.unsign(data).encode()
    )


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=200),
    st.lists(st.text(max_size=200), max_size=2),
    st.lists(st.text(max_size=40), min_size=1, max_size=3),
    st.sampled_from(["sha1", "sha256"]),
    st.integers(0, 3),
)
def test_the_verifier_answers_as_any_signer_does(
    key: str,
    fallback_keys: list[str | bytes],
    texts: list[str],
    algorithm: str,
    signed_with: int,
) -> None:
    # Keys of any length (past a hash's block size too), either algorithm,
    # and several values in a row: one verification must not leak into the
    # next through the HMAC prepared once.
    signer = signing.TimestampSigner(
        key=key, fallback_keys=fallback_keys, salt=SALT, algorithm=algorithm
    )
    signing_key = ([key, *fallback_keys, "no-such-key"] * 4)[signed_with]
    verifier = SessionVerifier(signer)

    for text in texts:
        data = signing.TimestampSigner(key=signing_key, salt=SALT, algorithm=algorithm).sign(text)
        try:
            expected: bytes | None = signer.unsign(data).encode()
        except signing.BadSignature:
            expected = None
        try:
            verified: bytes | None = verifier.verified(data)
        except signing.BadSignature:
            verified = None
        assert verified == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(), st.binary().map(signing.b64_encode), st.text().map(str.encode)))
def test_base64_is_decoded_as_signing_decodes_it(data: bytes) -> None:
    def answer(decode: Callable[[bytes], bytes]) -> tuple[bool, bytes | None]:
        try:
            return True, decode(data)
        except Exception:
            return False, None

    assert answer(b64_decode) == answer(signing.b64_decode)


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # Gone since it was listed.
            continue
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return sorted(children)


@pytest.mark.django_db(transaction=True)
def test_a_killed_job_stops_the_others_and_leaves_the_partial_report() -> None:
    for n in range(40):
        session_via_view(n=str(n))
    command = [DJANGO_ADMIN, "analyze-sessions", "--jobs=2", "--batch-size=1", "--sleep-time=0.2"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=django_admin_env()
    ) as process:
        deadline = time.monotonic() + 60
        while len(jobs := children_of(process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1)  # Some batches read, many to go.
        os.kill(jobs[0], signal.SIGKILL)  # As the out-of-memory killer would.
        out, err = process.communicate(timeout=60)

    processed = int(out.split()[1])
    assert 0 < processed < 40
    assert out.startswith(f"Processed {processed} sessions out of an unknown number of total")
    assert section(out, "Scope") == [f"Partial: interrupted after {processed} sessions"]
    assert re.fullmatch(
        r"CommandError: Job [12] of 2 was killed by SIGKILL before it gave its result: the "
        r"other jobs were stopped\. The report covers the sessions read before\.\n",
        err,
    )
    assert process.returncode == 1
