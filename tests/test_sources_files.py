from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.contrib.sessions.backends.base import VALID_KEY_CHARS
from django.contrib.sessions.backends.file import SessionStore
from django.test import override_settings
from django.utils.crypto import get_random_string

from analyze_sessions.sources import RawSession, SourceError
from analyze_sessions.sources.files import FileSource, Unreadable, read_regular_file
from tests.helpers import run_command, section, session_via_view

MODIFIED = datetime(2026, 1, 1, tzinfo=timezone.utc)
COOKIE_AGE = timedelta(weeks=2)  # Django's default SESSION_COOKIE_AGE.


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Path]:
    with override_settings(SESSION_FILE_PATH=str(tmp_path)):
        yield tmp_path
        forget_storage_path()


def forget_storage_path() -> None:
    # The file engine keeps the first directory it is given for good.
    if hasattr(SessionStore, "_storage_path"):
        del SessionStore._storage_path


def saved(**items: object) -> str:
    store = SessionStore()
    store.update(items)
    store.create()
    return str(store.session_key)


def test_stored_size_is_the_file_size_and_expiry_follows_its_mtime(directory: Path) -> None:
    key = saved(foo="bar")
    path = directory / f"sessionid{key}"
    os.utime(path, (MODIFIED.timestamp(), MODIFIED.timestamp()))

    [[raw]] = FileSource(SessionStore).scan()

    assert raw == RawSession(key, path.read_text(), MODIFIED + COOKIE_AGE, 69)


@pytest.mark.parametrize(
    ("expiry", "expires_at"),
    [
        (None, MODIFIED + COOKIE_AGE),
        ("2030-05-06T07:08:09+00:00", datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc)),
        ("not a date", MODIFIED + COOKIE_AGE),
        # Seconds count from each load: the engine never finds it expired.
        (3600, None),
    ],
)
def test_expiry_as_the_file_engine_judges_it(
    directory: Path, expiry: object, expires_at: datetime | None
) -> None:
    raw = RawSession("k", "", MODIFIED + COOKIE_AGE, 0)
    session = {} if expiry is None else {"_session_expiry": expiry}

    assert FileSource(SessionStore).expiry(raw, session) == expires_at


def test_files_that_vanish_during_a_scan_are_skipped(directory: Path) -> None:
    keys = sorted(saved(n=n) for n in range(6))
    scan = FileSource(SessionStore, batch_size=2).scan()
    seen = [raw.key for raw in next(scan)]
    for key in set(keys) - set(seen):
        (directory / f"sessionid{key}").unlink()
        break

    seen += [raw.key for batch in scan for raw in batch]

    assert len(seen) == 5 and set(seen) < set(keys)


def test_sleep_time_pauses_between_batches(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(5):
        saved(n=n)
    pauses: list[float] = []
    monkeypatch.setattr("analyze_sessions.sources.files.time.sleep", pauses.append)

    batches = list(FileSource(SessionStore, batch_size=2, sleep_time=0.5).scan())

    assert [len(batch) for batch in batches] == [2, 2, 1]
    assert pauses == [0.5, 0.5]


# Attacks on the directory: whoever can write to it can plant any kind of
# file under a session's name. Each test reads through the source and, where
# it matters, through the command, and a run that hangs fails rather than
# hanging the test run.

T = TypeVar("T")
SYMBOLIC_LINK = Counter({"symbolic link": 1})
NOT_A_REGULAR_FILE = Counter({"not a regular file": 1})


def new_key() -> str:
    return get_random_string(32, VALID_KEY_CHARS)


def finishes(call: Callable[[], T], fifos: Iterable[Path], seconds: float = 5.0) -> T:
    """
    What ``call()`` returns, or the test fails if it has not returned within
    ``seconds``: a reader that opened one of ``fifos`` is then let go (a
    writer opens it and leaves), so that a hang fails the test without
    hanging the test run.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):  # ENXIO: no reader waits on this one.
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(seconds)
        pytest.fail(f"Still running after {seconds} seconds: it waited on a FIFO.")
    if errors:
        raise errors[0]
    return result[0]


def scanned(source: FileSource) -> list[RawSession]:
    return [raw for batch in source.scan() for raw in batch]


def looked_up(source: FileSource, keys: list[str]) -> list[RawSession]:
    return [raw for batch in source.lookup(keys) for raw in batch]


def canary_session(path: Path) -> None:
    """A real session file, outside the store, whose one key no report may show."""
    path.write_text(SessionStore().encode({"canary_secret": "CANARY-1f9a"}))


@pytest.fixture
def file_engine(directory: Path) -> Iterator[Path]:
    with override_settings(SESSION_ENGINE="django.contrib.sessions.backends.file"):
        yield directory


def linked_canary(directory: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The key of a symbolic link in ``directory`` to a canary session elsewhere."""
    canary = tmp_path_factory.mktemp("elsewhere") / "canary"
    canary_session(canary)
    link = new_key()
    (directory / f"sessionid{link}").symlink_to(canary)
    return link


def test_a_symbolic_link_named_like_a_session_is_counted_and_never_followed(
    directory: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = saved(foo="bar")
    link = linked_canary(directory, tmp_path_factory)

    source = FileSource(SessionStore)
    assert [raw.key for raw in scanned(source)] == [key]
    assert (source.total_sessions(), source.unreadable) == (2, SYMBOLIC_LINK)

    source = FileSource(SessionStore)
    assert [raw.key for raw in looked_up(source, [key, link])] == [key]
    assert (source.keys_listed, source.keys_not_found, source.unreadable) == (2, 0, SYMBOLIC_LINK)


@pytest.mark.django_db
def test_the_command_never_reports_what_a_symbolic_link_points_to(
    file_engine: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = session_via_view(foo="bar")
    link = linked_canary(file_engine, tmp_path_factory)
    ids = tmp_path_factory.mktemp("ids") / "ids"
    ids.write_text(f"{key}\n{link}\n")

    for args in [(), (f"--ids-from={ids}",)]:
        out, err, returncode = run_command(*args)

        assert (err, returncode) == ("", 0)
        assert "canary" not in out.lower()
        assert out.splitlines()[:4] == [
            "Processed 1 sessions out of 2 total sessions",
            "Average size was 69.00 bytes",
            "Saw the following keys:",
            "    foo (1 times, avg. size 11.00 bytes), max 11 bytes, total 11 bytes, app unknown",
        ]
        assert UNREADABLE_LINK in section(out, "Totals")
    assert section(out, "Totals")[-2:] == [UNREADABLE_LINK, "Listed keys not found: 0 of 2"]


UNREADABLE_LINK = (
    "Unreadable: 1 session (symbolic link: 1): named as sessions, but not read, so not processed"
)


def test_a_fifo_named_like_a_session_is_counted_and_never_waited_on(directory: Path) -> None:
    key = saved(foo="bar")
    fifo = new_key()
    os.mkfifo(directory / f"sessionid{fifo}")
    fifos = [directory / f"sessionid{fifo}"]

    source = FileSource(SessionStore)
    assert [raw.key for raw in finishes(lambda: looked_up(source, [fifo, key]), fifos)] == [key]
    assert (source.keys_listed, source.keys_not_found, source.unreadable) == (
        2,
        0,
        NOT_A_REGULAR_FILE,
    )

    source = FileSource(SessionStore)
    assert [raw.key for raw in finishes(lambda: scanned(source), fifos)] == [key]
    assert (source.total_sessions(), source.unreadable) == (2, NOT_A_REGULAR_FILE)


@pytest.mark.django_db
def test_the_command_finishes_with_a_fifo_named_like_a_session(
    file_engine: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = session_via_view(foo="bar")
    fifo = file_engine / f"sessionid{new_key()}"
    os.mkfifo(fifo)
    ids = tmp_path_factory.mktemp("ids") / "ids"
    ids.write_text(f"{fifo.name.removeprefix('sessionid')}\n{key}\n")

    out, err, returncode = finishes(lambda: run_command(f"--ids-from={ids}"), [fifo])

    assert (err, returncode) == ("", 0)
    assert out.splitlines()[0] == "Processed 1 sessions out of 2 total sessions"
    assert section(out, "Totals")[-2:] == [
        "Unreadable: 1 session (not a regular file: 1): named as sessions, but not read, "
        "so not processed",
        "Listed keys not found: 0 of 2",
    ]


def test_a_fifo_swapped_in_after_the_listing_is_counted_and_never_waited_on(
    directory: Path,
) -> None:
    keys = sorted(saved(n=n) for n in range(2))
    source = FileSource(SessionStore, batch_size=1)
    scan = source.scan()
    [first] = next(scan)
    # Listed already (the listing is read ahead); now it becomes a FIFO.
    other = directory / f"sessionid{(set(keys) - {first.key}).pop()}"
    other.unlink()
    os.mkfifo(other)

    assert finishes(lambda: [raw for batch in scan for raw in batch], [other]) == []
    assert (source.total_sessions(), source.unreadable) == (2, NOT_A_REGULAR_FILE)


def test_what_is_opened_is_checked_as_well_as_what_is_named(
    tmp_path: Path,
) -> None:
    # Between the check by name and the open, a FIFO or a device may take a
    # file's place: the descriptor opened is checked too, and nothing waits.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    for path in [str(fifo), os.devnull, str(tmp_path)]:
        with pytest.raises(Unreadable) as raised:
            finishes(partial(read_regular_file, path, 1024), [fifo])
        assert raised.value.reason == "not a regular file"


@contextlib.contextmanager
def working_in(directory: Path) -> Iterator[None]:
    """In ``directory``, and back (contextlib.chdir from Python 3.11 on)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def test_directories_sockets_and_devices_named_like_sessions_are_counted(
    directory: Path,
) -> None:
    key = saved(foo="bar")
    names = [new_key() for _ in range(3)]
    (directory / f"sessionid{names[0]}").mkdir()
    # A socket's path must be short: bind to its name from inside the directory.
    server = socket.socket(socket.AF_UNIX)
    with working_in(directory), server:
        server.bind(f"sessionid{names[1]}")
        try:
            os.mknod(f"sessionid{names[2]}", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:  # No CAP_MKNOD here: a symbolic link to one stands in.
            os.symlink(os.devnull, f"sessionid{names[2]}")
        devices = 1 if (directory / f"sessionid{names[2]}").is_char_device() else 0

        source = FileSource(SessionStore)
        assert [raw.key for raw in looked_up(source, [*names, key])] == [key]
        assert (source.keys_listed, source.keys_not_found) == (4, 0)
        assert source.unreadable == Counter(
            {"not a regular file": 2 + devices, "symbolic link": 1 - devices}
        )

        source = FileSource(SessionStore)
        assert [raw.key for raw in scanned(source)] == [key]
        assert source.total_sessions() == 4
        assert source.unreadable.total() == 3


# The reading runs as nobody, to whom a root-owned file of mode 000 is
# closed, and who may not read root's files with O_NOATIME (EPERM): the
# source reads those as anyone may. The process starts as root, since the
# interpreter may live where nobody cannot go, and drops to nobody once
# everything is imported.
AS_NOBODY = """
import json, os, sys
import django
from django.conf import settings
settings.configure(SESSION_FILE_PATH=sys.argv[1], SECRET_KEY="x", USE_TZ=True)
django.setup()
from django.contrib.sessions.backends.file import SessionStore
from analyze_sessions.sources.files import FileSource
scan, lookup = FileSource(SessionStore), FileSource(SessionStore)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
scanned = [raw.key for batch in scan.scan() for raw in batch]
looked_up = [raw.key for batch in lookup.lookup(sys.argv[2:]) for raw in batch]
print(json.dumps([scanned, scan.unreadable, looked_up, lookup.unreadable, lookup.keys_not_found]))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="Needs root, to run a process as nobody.")
def test_a_file_that_may_not_be_read_is_counted_and_the_run_goes_on() -> None:
    # Not under pytest's own temporary directory, which nobody cannot enter.
    with tempfile.TemporaryDirectory() as name, override_settings(SESSION_FILE_PATH=name):
        directory = Path(name)
        directory.chmod(0o755)
        try:
            readable = saved(foo="bar")
            closed = saved(foo="baz")
        finally:
            forget_storage_path()
        (directory / f"sessionid{readable}").chmod(0o644)
        (directory / f"sessionid{closed}").chmod(0o000)

        result = subprocess.run(
            [sys.executable, "-c", AS_NOBODY, name, readable, closed],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert (result.stderr, result.returncode) == ("", 0)
    denied = {"permission denied": 1}
    assert json.loads(result.stdout) == [[readable], denied, [readable], denied, 0]


def test_a_name_too_long_for_the_file_system_is_not_found(directory: Path) -> None:
    key = saved(foo="bar")
    # 60 + 200 characters: past the 255 that names stop at.
    with override_settings(SESSION_COOKIE_NAME="s" * 60):
        source = FileSource(SessionStore)
        assert looked_up(source, ["k" * 200, key]) == []
    assert (source.keys_listed, source.keys_not_found, source.unreadable) == (2, 2, Counter())


def test_a_file_over_the_bound_is_not_read(directory: Path) -> None:
    # Random letters, which compress little: the file is over 1 KiB.
    small, large = saved(foo="bar"), saved(foo=get_random_string(2000))
    large_path = directory / f"sessionid{large}"
    size = large_path.stat().st_size
    os.utime(large_path, (MODIFIED.timestamp(), MODIFIED.timestamp()))

    [raw] = looked_up(FileSource(SessionStore, max_size=1024), [large])
    assert raw == RawSession(large, None, MODIFIED + COOKIE_AGE, size)
    assert size > 1024

    by_key = {raw.key: raw for raw in scanned(FileSource(SessionStore, max_size=1024))}
    assert by_key[large].data is None
    assert by_key[small].data == (directory / f"sessionid{small}").read_text()


def atimes_change(directory: Path) -> bool:
    """Whether the file system records reads at all (noatime mounts do not)."""
    control = directory / "control"
    control.write_text("x")
    os.utime(control, (0, control.stat().st_mtime))
    control.read_bytes()
    changed = control.stat().st_atime != 0
    control.unlink()
    return changed


def test_reading_leaves_access_times_alone(directory: Path) -> None:
    if not atimes_change(directory):
        pytest.skip("This file system does not record access times.")
    key = saved(foo="bar")
    path = directory / f"sessionid{key}"
    data = path.read_text(encoding="ascii")
    long_ago = datetime(2001, 2, 3, tzinfo=timezone.utc).timestamp()
    for name in [path, directory]:
        os.utime(name, (long_ago, name.stat().st_mtime))

    [scanned_raw] = scanned(FileSource(SessionStore))
    [looked_up_raw] = looked_up(FileSource(SessionStore), [key])

    assert scanned_raw.data == looked_up_raw.data == data
    assert (path.stat().st_atime, directory.stat().st_atime) == (long_ago, long_ago)


@pytest.mark.parametrize(
    ("settings", "expiry", "expires_at"),
    [
        # A naive expiry is read as Django wrote it: in UTC with USE_TZ ...
        (
            {"USE_TZ": True},
            "2030-05-06T07:08:09",
            datetime(2030, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        ),
        # ... and in TIME_ZONE without (CDT is 5 hours behind UTC).
        (
            {"USE_TZ": False, "TIME_ZONE": "America/Chicago"},
            "2030-05-06T07:08:09",
            datetime(2030, 5, 6, 12, 8, 9, tzinfo=timezone.utc),
        ),
        (
            {"USE_TZ": False, "TIME_ZONE": "America/Chicago"},
            datetime(2030, 5, 6, 7, 8, 9),
            datetime(2030, 5, 6, 12, 8, 9, tzinfo=timezone.utc),
        ),
        (
            {"USE_TZ": False, "TIME_ZONE": "America/Chicago"},
            "2030-05-06T07:08:09+02:00",
            datetime(2030, 5, 6, 5, 8, 9, tzinfo=timezone.utc),
        ),
        # Off the calendar once in UTC: the first moment, or never.
        ({"USE_TZ": True}, "0001-01-01T00:00:00+05:00", datetime.min.replace(tzinfo=timezone.utc)),
        ({"USE_TZ": True}, "9999-12-31T23:00:00-05:00", None),
    ],
)
def test_every_expiry_is_an_aware_moment_in_utc(
    directory: Path, settings: dict[str, Any], expiry: object, expires_at: datetime | None
) -> None:
    raw = RawSession("k", "", MODIFIED + COOKIE_AGE, 0)

    with override_settings(**settings):
        moment = FileSource(SessionStore).expiry(raw, {"_session_expiry": expiry})

    assert moment == expires_at
    assert moment is None or moment.tzinfo is timezone.utc


def test_an_expiry_set_without_use_tz_is_read_in_the_time_zone(directory: Path) -> None:
    with override_settings(USE_TZ=False, TIME_ZONE="America/Chicago"):
        store = SessionStore()
        store["foo"] = "bar"
        store.set_expiry(timedelta(hours=1))
        store.create()
        written = time.time()
        [raw] = scanned(FileSource(SessionStore))
        session = SessionStore(store.session_key).load()
        moment = FileSource(SessionStore).expiry(raw, session)

    assert isinstance(session["_session_expiry"], str)  # Naive, in Chicago's time.
    assert moment is not None and moment.tzinfo is timezone.utc
    assert abs(moment.timestamp() - (written + 3600)) < 60


@pytest.mark.django_db
@pytest.mark.parametrize("use_tz", [True, False])
def test_the_command_counts_expired_files_whatever_use_tz(file_engine: Path, use_tz: bool) -> None:
    with override_settings(USE_TZ=use_tz, TIME_ZONE="America/Chicago"):
        live = saved(foo="bar")
        # One expired by its own expiry, one by its file's age.
        expired = SessionStore()
        expired["foo"] = "bar"
        expired.set_expiry(timedelta(hours=-1))
        expired.create()
        old = saved(foo="bar")
        long_ago = (datetime.now(timezone.utc) - COOKIE_AGE - timedelta(days=1)).timestamp()
        os.utime(file_engine / f"sessionid{old}", (long_ago, long_ago))

        out, err, returncode = run_command()

    assert (err, returncode) == ("", 0)
    assert live and out.splitlines()[0] == "Processed 3 sessions out of 3 total sessions"
    assert section(out, "Expired")[0].startswith("2 sessions (66.7%)")


def test_listed_keys_add_up_whatever_the_directory_holds(
    directory: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    small, large = saved(foo="bar"), saved(foo="bazbaz", n="1")  # 69 and 83 bytes.
    link, fifo = new_key(), new_key()
    (directory / f"sessionid{link}").symlink_to(tmp_path_factory.mktemp("elsewhere"))
    os.mkfifo(directory / f"sessionid{fifo}")
    keys = [small, large, link, fifo, "missing", "../../etc/passwd"]

    source = FileSource(SessionStore, bigger_than=69)
    processed = finishes(lambda: looked_up(source, keys), [directory / f"sessionid{fifo}"])

    # 1 processed + 1 filtered out + 2 not found + 2 unreadable = 6 listed.
    assert [raw.key for raw in processed] == [large]
    assert (source.keys_listed, source.keys_not_found) == (6, 2)
    assert source.unreadable == Counter({"symbolic link": 1, "not a regular file": 1})


def test_an_error_names_its_kind_and_only_the_start_of_the_key(
    directory: Path, tmp_path: Path
) -> None:
    key = saved(foo="bar")
    source = FileSource(SessionStore)
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    directory.rename(moved)
    directory.write_text("not a directory")

    try:
        with pytest.raises(SourceError) as raised:
            looked_up(source, [key])
    finally:
        directory.unlink()
        moved.rename(directory)

    assert str(raised.value) == (
        f"Cannot read the session file sessionid{key[:6]}\u2026 in '{directory}': Not a directory."
    )
