from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from analyze_sessions.sources.keys import KeysFileError, read_session_keys
from tests.helpers import within


def write(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "ids"
    path.write_bytes(content)
    return str(path)


def test_one_key_per_line_whitespace_blank_lines_and_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path, b"abc\n  def  \n\n\t\nabc\r\nghi")

    assert read_session_keys(path) == {"abc", "def", "ghi"}


def test_comment_lines_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path, b"# exported from the support desk\nabc\n  # def\n")

    assert read_session_keys(path) == {"abc"}


def test_an_empty_file_lists_no_keys(tmp_path: Path) -> None:
    assert read_session_keys(write(tmp_path, b"")) == set()


def test_dash_reads_stdin() -> None:
    assert read_session_keys("-", io.StringIO("abc\ndef\nabc\n")) == {"abc", "def"}


def test_dash_reads_the_bytes_of_a_binary_stdin() -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"abc\n\xff\n"), encoding="utf-8")

    with pytest.raises(KeysFileError) as raised:
        read_session_keys("-", stdin)

    assert str(raised.value) == "Cannot read standard input: line 2 is not UTF-8 text."


def test_a_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "missing")

    with pytest.raises(KeysFileError) as raised:
        read_session_keys(path)

    assert str(raised.value) == f"Cannot read ids file '{path}': No such file or directory."


def test_a_directory(tmp_path: Path) -> None:
    with pytest.raises(KeysFileError) as raised:
        read_session_keys(str(tmp_path))

    assert str(raised.value) == f"Cannot read ids file '{tmp_path}': Is a directory."


def test_a_file_that_is_not_text(tmp_path: Path) -> None:
    path = write(tmp_path, b"abc\ndef\n\x89PNG\r\n")

    with pytest.raises(KeysFileError) as raised:
        read_session_keys(path)

    assert str(raised.value) == f"Cannot read ids file '{path}': line 3 is not UTF-8 text."


def test_a_byte_order_mark_is_not_part_of_the_first_key(tmp_path: Path) -> None:
    path = write(tmp_path, "\ufeffabc\r\ndef\r\n".encode())

    assert read_session_keys(path) == {"abc", "def"}


def test_a_line_longer_than_any_key_is_refused_with_its_number(tmp_path: Path) -> None:
    path = write(tmp_path, b"abc\n" + b"x" * 1024 + b"\r\n" + b"y" * 1025 + b"\n")

    with pytest.raises(KeysFileError) as raised:
        read_session_keys(path)

    assert str(raised.value) == (
        f"Cannot read ids file '{path}': line 3 is longer than 1024 characters, which no "
        "session key is."
    )


@pytest.mark.parametrize("stdin", [False, True])
def test_an_endless_stream_of_zeros_is_refused_at_once(stdin: bool) -> None:
    with open("/dev/zero", "rb") as zeros:
        with within(10), pytest.raises(KeysFileError) as raised:
            if stdin:
                read_session_keys("-", io.TextIOWrapper(zeros))
            else:
                read_session_keys("/dev/zero")

    name = "standard input" if stdin else "ids file '/dev/zero'"
    assert str(raised.value) == (
        f"Cannot read {name}: line 1 is longer than 1024 characters, which no session key is."
    )


def test_a_pipe_is_read_as_a_stream(tmp_path: Path) -> None:
    fifo = tmp_path / "ids"
    os.mkfifo(fifo)
    # As `--ids-from <(command)` gives: a writer at the other end of a pipe.
    writer = subprocess.Popen(["sh", "-c", f"printf 'abc\\ndef\\n' > {fifo}"])

    with within(10):
        assert read_session_keys(str(fifo)) == {"abc", "def"}
    assert writer.wait(timeout=10) == 0


def test_more_keys_than_any_store_holds_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("analyze_sessions.sources.keys.MAX_KEYS", 3)
    path = write(tmp_path, b"a\nb\na\nc\nd\n")

    with pytest.raises(KeysFileError) as raised:
        read_session_keys(path)

    assert str(raised.value) == (
        f"Cannot read ids file '{path}': it lists more than 3 keys; split it, or analyze the "
        "whole store."
    )


def test_a_stream_that_never_ends_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("analyze_sessions.sources.keys.MAX_LINES", 1000)
    # What `yes abc | analyze-sessions --ids-from=-` sends: the same line, for ever.
    with subprocess.Popen(["yes", "abc"], stdout=subprocess.PIPE) as endless:
        assert endless.stdout is not None
        with within(10), pytest.raises(KeysFileError) as raised:
            read_session_keys("-", io.TextIOWrapper(endless.stdout))
        endless.kill()

    assert str(raised.value) == "Cannot read standard input: it goes on past 1000 lines."


def test_a_key_longer_than_any_store_holds_is_kept_no_longer(tmp_path: Path) -> None:
    path = write(tmp_path, b"abc\n" + b"x" * 1000 + b"\n")

    assert read_session_keys(path) == {"abc", "x" * 201}
