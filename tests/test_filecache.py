"""Sessions kept by the cache engine in Django's FileBasedCache, read from its files."""

from __future__ import annotations

import os
import pickle
import time
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.cache import SessionStore
from django.core.cache import caches
from django.core.cache.backends.filebased import FileBasedCache
from django.test import override_settings
from django.utils.crypto import get_random_string

from analyze_sessions.sources import Packed, RawSession, SourceError, UnsupportedEngine
from analyze_sessions.sources.filecache import FileCacheSource
from analyze_sessions.unpickling import Refused
from tests.helpers import head, run_command, section, two_sessions, two_sessions_report
from tests.test_sources_files import finishes, new_key

pytestmark = pytest.mark.django_db

PREFIX = SessionStore.cache_key_prefix
UNKNOWN_TOTAL = "out of an unknown number of total sessions"


@pytest.fixture
def cache_directory(tmp_path: Path) -> Iterator[Path]:
    location = tmp_path / "cache"
    with override_settings(
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
                "LOCATION": str(location),
            }
        },
    ):
        yield location


def cache() -> FileBasedCache:
    backend = caches["default"]
    assert isinstance(backend, FileBasedCache)
    return backend


def file_of(key: str) -> Path:
    """Where the cache keeps the session ``key``: the cache's own naming."""
    return Path(cache()._key_to_file(PREFIX + key))  # type: ignore[attr-defined]


def ids_file(directory: Path, *keys: str) -> str:
    path = directory / "ids"
    path.write_text("".join(f"{key}\n" for key in keys))
    return f"--ids-from={path}"


def source(**options: Any) -> FileCacheSource:
    return FileCacheSource(cache(), PREFIX, **options)


def looked_up(source: FileCacheSource, keys: list[str]) -> list[RawSession]:
    """The sessions of ``keys``, with their values unpacked as the decoder unpacks them."""
    return [
        raw._replace(data=source.unpack(raw.data.payload)) if isinstance(raw.data, Packed) else raw
        for batch in source.lookup(keys)
        for raw in batch
    ]


def saved(expiry: int | None = None, **items: object) -> str:
    """A session saved through the cache engine, to expire in ``expiry`` seconds."""
    store = SessionStore()
    store.update(items)
    if expiry is not None:
        store.set_expiry(expiry)
    store.create()
    return str(store.session_key)


def contents(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


class CreatesAFile:
    """Pickles to a call of open(path, "w"): unpickled, it creates the file."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_sessions_by_key_are_read_from_their_files(cache_directory: Path, tmp_path: Path) -> None:
    first, second = two_sessions()
    ids = ids_file(tmp_path, first, second, "missing", "../../etc/passwd")

    out, err, returncode = run_command(ids)

    # The stored size is the file's: 21 bytes of expiry pickle, then the
    # compressed pickle of the session dict.
    sizes = (file_of(first).stat().st_size, file_of(second).stat().st_size)
    assert sizes == (50, 61)
    assert (head(out), err, returncode) == (
        two_sessions_report(sizes, f"Processed 2 sessions {UNKNOWN_TOTAL}"),
        "",
        0,
    )
    assert section(out, "Totals")[-1] == "Listed keys not found: 2 of 4"
    out, _, _ = run_command(ids, "--bigger-than=50")
    assert out.splitlines()[:2] == [
        f"Processed 1 sessions {UNKNOWN_TOTAL}",
        "Average size was 61.00 bytes",
    ]
    assert section(out, "Totals")[-1] == "Listed keys not found: 2 of 4"


def test_expired_entries_stay_on_disk_and_count_as_expired(
    cache_directory: Path, tmp_path: Path
) -> None:
    live = saved(foo="bar")
    expired = saved(expiry=-60, foo="bar")
    before = contents(cache_directory)
    expired_size = file_of(expired).stat().st_size

    out, err, returncode = run_command(ids_file(tmp_path, live, expired))

    assert (err, returncode) == ("", 0)
    assert contents(cache_directory) == before
    assert out.splitlines()[0] == f"Processed 2 sessions {UNKNOWN_TOTAL}"
    assert section(out, "Totals")[-1] == "Listed keys not found: 0 of 2"
    stored = 50 + expired_size
    assert section(out, "Expired") == [
        f"1 session (50.0%), {expired_size} bytes ({100 * expired_size / stored:.1f}% of "
        "stored): past their expiry, still stored; the cache deletes each when it next reads "
        "or culls it"
    ]
    [raw] = looked_up(source(), [expired])
    assert raw.expires_at is not None
    assert (
        timedelta(seconds=55) < datetime.now(timezone.utc) - raw.expires_at < timedelta(seconds=120)
    )


def test_a_pickle_that_would_run_code_is_refused(cache_directory: Path, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    plain = saved(foo="bar")
    in_the_value, in_the_expiry = new_key(), new_key()
    cache().set(PREFIX + in_the_value, {"cart": CreatesAFile(canary)}, 3600)
    # As anyone who can write to the directory could: the expiry is a pickle too.
    file_of(in_the_expiry).write_bytes(
        pickle.dumps(CreatesAFile(canary)) + zlib.compress(pickle.dumps({"foo": "bar"}))
    )
    before = contents(cache_directory)
    keys = [plain, in_the_value, in_the_expiry, "missing"]

    out, err, returncode = run_command(ids_file(tmp_path, *keys))

    assert not canary.exists()
    assert contents(cache_directory) == before
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == f"Processed 3 sessions {UNKNOWN_TOTAL}"
    assert section(out, "Totals")[-1] == "Listed keys not found: 1 of 4"
    assert "bad payload: 2" in section(out, "Undecodable")[0]
    raws = {raw.key: raw for raw in looked_up(source(), keys)}
    # The expiry is read from its opcodes, never unpickled: what is not a
    # number there is no entry the backend wrote, and names no class.
    assert [type(raws[key].data) for key in keys[:3]] == [dict, Refused, bytes]
    # As pickle names it: _io.open, or io.open before Python 3.11.
    opener = f"{open.__module__}.{open.__qualname__}"
    assert raws[in_the_value].data.class_name == opener
    assert not canary.exists()


def test_links_fifos_and_directories_in_the_cache_are_counted_never_followed(
    cache_directory: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = saved(foo="bar")
    # A real cache entry, outside the cache, that no report may show.
    canary = tmp_path_factory.mktemp("elsewhere") / "canary.djcache"
    cache().set(PREFIX + "canary", {"canary_secret": "CANARY-77c1"}, 3600)
    file_of("canary").rename(canary)
    link, fifo, directory = new_key(), new_key(), new_key()
    file_of(link).symlink_to(canary)
    os.mkfifo(file_of(fifo))
    file_of(directory).mkdir()
    keys = [key, link, fifo, directory]

    found = source()
    raws = finishes(lambda: looked_up(found, keys), [file_of(fifo)])

    assert [raw.key for raw in raws] == [key]
    assert (found.keys_listed, found.keys_not_found) == (4, 0)
    assert found.unreadable == Counter({"symbolic link": 1, "not a regular file": 2})
    ids = ids_file(tmp_path_factory.mktemp("ids"), *keys)
    out, err, returncode = finishes(lambda: run_command(ids), [file_of(fifo)])
    assert (err, returncode) == ("", 0)
    assert "canary" not in out.lower()
    assert out.splitlines()[0] == f"Processed 1 sessions {UNKNOWN_TOTAL}"
    assert section(out, "Totals")[-2:] == [
        "Unreadable: 3 sessions (not a regular file: 2, symbolic link: 1): named as sessions, "
        "but not read, so not processed",
        "Listed keys not found: 0 of 4",
    ]


def test_a_value_over_the_bound_is_not_read(cache_directory: Path) -> None:
    # Random letters compress little: the file itself is over the bound.
    stored_large = saved(filler=get_random_string(3000))
    # One letter again and again: a small file that expands past the bound.
    bomb = saved(filler="a" * 200_000)
    stored_size = file_of(stored_large).stat().st_size
    bomb_size = file_of(bomb).stat().st_size
    assert bomb_size < 1024 < stored_size

    raws = looked_up(source(max_size=1024), [stored_large, bomb])

    assert [(raw.key, raw.data, raw.stored_size) for raw in raws] == sorted(
        [(stored_large, None, stored_size), (bomb, None, bomb_size)]
    )
    # The expiry is read from the file's start even so: two weeks from now.
    expected = datetime.now(timezone.utc) + timedelta(weeks=2)
    for raw in raws:
        assert raw.expires_at is not None
        assert abs(raw.expires_at - expected) < timedelta(minutes=1)


@pytest.mark.parametrize("use_tz", [True, False])
def test_expiry_is_an_aware_moment_whatever_use_tz(
    cache_directory: Path, tmp_path: Path, use_tz: bool
) -> None:
    with override_settings(USE_TZ=use_tz, TIME_ZONE="America/Chicago"):
        live = saved(expiry=3600, foo="bar")
        expired = saved(expiry=-3600, foo="bar")
        written = time.time()

        raws = looked_up(source(), [live, expired])
        out, err, returncode = run_command(ids_file(tmp_path, live, expired))

    expires = {raw.key: raw.expires_at for raw in raws}
    for key, seconds in [(live, 3600), (expired, -3600)]:
        moment = expires[key]
        assert moment is not None and moment.tzinfo is timezone.utc
        assert abs(moment.timestamp() - (written + seconds)) < 60
    assert (err, returncode) == ("", 0)
    assert section(out, "Expired")[0].startswith("1 session (50.0%)")


def test_files_that_hold_no_session_are_bad_payloads(cache_directory: Path, tmp_path: Path) -> None:
    key = saved(foo="bar")
    written = {
        # The backend takes an empty file for one that expired at the epoch.
        "empty": b"",
        "junk": b"not a pickle at all",
        "cut": pickle.dumps(None) + zlib.compress(pickle.dumps({"foo": "bar"}))[:-6],
        "text expiry": pickle.dumps("tomorrow") + zlib.compress(pickle.dumps({})),
        "not zlib": pickle.dumps(None) + pickle.dumps({"foo": "bar"}),
    }
    keys = {name: new_key() for name in written}
    for name, data in written.items():
        file_of(keys[name]).write_bytes(data)
    before = contents(cache_directory)
    sizes = sum(len(data) for data in written.values())

    out, err, returncode = run_command(ids_file(tmp_path, key, *keys.values()))

    assert contents(cache_directory) == before
    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == f"Processed 6 sessions {UNKNOWN_TOTAL}"
    assert section(out, "Totals")[-1] == "Listed keys not found: 0 of 6"
    assert section(out, "Undecodable")[0].startswith(f"5 sessions, {sizes} bytes (bad payload: 5)")
    assert section(out, "Expired")[0].startswith("1 session (16.7%), 0 bytes ")
    raws = {raw.key: raw for raw in looked_up(source(), list(keys.values()))}
    assert raws[keys["empty"]] == RawSession(
        keys["empty"], b"", datetime(1970, 1, 1, tzinfo=timezone.utc), 0
    )


def test_the_cache_cannot_be_scanned(cache_directory: Path) -> None:
    saved(foo="bar")

    with pytest.raises(UnsupportedEngine) as raised:
        source().scan()

    assert str(raised.value) == (
        "A file-based cache names its files by hashes of their keys, so its sessions "
        "cannot be told from other entries: pass --ids-from with the keys of the "
        "sessions to analyze."
    )
    assert source().total_sessions() is None
    out, err, returncode = run_command()
    assert (out, returncode) == ("", 1)
    # One sentence, whichever part of the command refuses the scan.
    assert err.startswith("CommandError: ")
    assert err.endswith(": pass --ids-from with the keys of the sessions to analyze.\n")
    assert err.count("\n") == 1


def test_an_error_names_its_kind_and_only_the_start_of_the_key(
    cache_directory: Path, tmp_path: Path
) -> None:
    key = saved(foo="bar")
    found = source()
    # The cache directory becomes a file: no name in it can be reached.
    cache_directory.rename(tmp_path / "moved")
    cache_directory.write_text("not a directory")

    with pytest.raises(SourceError) as raised:
        looked_up(found, [key])

    assert str(raised.value) == (
        f"Cannot read the cache file of the session {key[:6]}\u2026 in "
        f"'{cache_directory}': Not a directory."
    )


def test_a_key_the_cache_warns_about_is_looked_for_quietly(cache_directory: Path) -> None:
    # A long KEY_PREFIX and a long listed key make a cache key past memcached's
    # 250 characters, which Django warns about, quoting the whole key.
    caches_setting = {"default": {**settings.CACHES["default"], "KEY_PREFIX": "p" * 40}}
    with override_settings(CACHES=caches_setting), warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        found = source()
        assert looked_up(found, ["k" * 200]) == []

    assert seen == []
    assert (found.keys_listed, found.keys_not_found) == (1, 1)
