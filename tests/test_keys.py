from __future__ import annotations

import io
from pathlib import Path

import pytest

from analyze_sessions.sources.keys import KeysFileError, read_session_keys


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
