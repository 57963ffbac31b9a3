"""What was read is shown cut short or escaped, so it cannot act where it is shown."""

from __future__ import annotations

import pytest

from analyze_sessions.shown import masked, printable, spreadsheet_safe


def test_key_names_cannot_break_a_line() -> None:
    assert printable("cart") == "cart"
    assert printable("wizard_étape") == "wizard_étape"
    assert printable("evil\nProcessed 0 sessions") == "evil\\nProcessed 0 sessions"
    assert printable("tab\there\x1b[2J") == "tab\\there\\x1b[2J"


def test_key_names_cannot_reorder_a_line_or_break_an_encoding() -> None:
    assert printable("\u202eevil") == "\\u202eevil"
    assert printable("lone \ud800") == "lone \\ud800"
    assert printable("lone \ud800").encode("ascii")


@pytest.mark.parametrize(
    ("cell", "shown"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("cart=1", "cart=1"),
        ("", ""),
    ],
)
def test_a_cell_a_spreadsheet_would_run_is_quoted(cell: str, shown: str) -> None:
    assert spreadsheet_safe(cell) == shown


def test_a_session_key_is_cut_to_its_first_characters() -> None:
    assert masked("abcdefghijklmnopqrstuvwxyz012345") == "abcdef\u2026"
    assert masked("abcdef") == "abcdef"
