from __future__ import annotations

from decimal import Decimal

from analyze_sessions.decoding import BAD_ENCODING, BAD_PAYLOAD, BAD_SIGNATURE, DecodedSession
from analyze_sessions.report import KeyLine, Report, mean, printable, render_text
from analyze_sessions.stats import Stats


def text(report: Report) -> str:
    return "".join(line + "\n" for line in render_text(report))


def test_mean_rounds_half_up_to_two_decimals() -> None:
    assert mean(1, 8) == Decimal("0.13")  # 0.125
    assert mean(5, 3) == Decimal("1.67")
    assert mean(33771, 2) == Decimal("16885.50")
    assert str(mean(0, 0)) == "0.00"


def test_from_stats_sorts_keys_by_total_bytes_then_name() -> None:
    stats = Stats()
    stats.add(DecodedSession(stored_size=10, entries={"b": 5, "a": 5, "c": 9, "d": 1}))
    stats.add(DecodedSession(stored_size=10, entries={"d": 3}))
    stats.add(DecodedSession(stored_size=4, failure=BAD_PAYLOAD))
    stats.add(DecodedSession(stored_size=6, failure=BAD_SIGNATURE))

    report = Report.from_stats(stats, total_sessions=9)

    assert report.keys == (
        KeyLine("c", 1, 9, 9),
        KeyLine("a", 1, 5, 5),
        KeyLine("b", 1, 5, 5),
        KeyLine("d", 2, 4, 3),
    )
    # Reasons in a fixed order, whatever order they were met in.
    assert report.undecodable == ((BAD_SIGNATURE, 1), (BAD_PAYLOAD, 1))
    assert report.undecodable_sessions == 2
    assert report.mean_stored_size == Decimal("7.50")


def test_text_report_of_the_2013_readme_example() -> None:
    report = Report(
        total_sessions=5125,
        processed=2,
        stored_bytes=33771,
        keys=(
            KeyLine("foo", 2, 31446, 16000),
            KeyLine("bar", 2, 1237, 700),
            KeyLine("baz", 2, 423, 212),
        ),
        undecodable=(),
        undecodable_bytes=0,
    )

    assert text(report) == (
        "Processed 2 sessions out of 5125 total sessions\n"
        "Average size was 16885.50 bytes\n"
        "Saw the following keys:\n"
        "    foo (2 times, avg. size 15723.00 bytes), max 16000 bytes, total 31446 bytes\n"
        "    bar (2 times, avg. size 618.50 bytes), max 700 bytes, total 1237 bytes\n"
        "    baz (2 times, avg. size 211.50 bytes), max 212 bytes, total 423 bytes\n"
        "\n"
        "Summary:\n"
        "    Stored size: 33771 bytes in all (33.0 KiB)\n"
        "    Undecodable sessions: 0\n"
    )


def test_text_report_with_undecodable_sessions_and_listed_keys() -> None:
    report = Report(
        total_sessions=10,
        processed=3,
        stored_bytes=300,
        keys=(),
        undecodable=((BAD_SIGNATURE, 2), (BAD_ENCODING, 1)),
        undecodable_bytes=300,
        keys_listed=5,
        keys_not_found=2,
    )

    assert text(report) == (
        "Processed 3 sessions out of 10 total sessions\n"
        "Average size was 100.00 bytes\n"
        "Saw the following keys:\n"
        "\n"
        "Summary:\n"
        "    Stored size: 300 bytes in all\n"
        "    Undecodable sessions: 3, 300 bytes (bad signature: 2, bad encoding: 1)\n"
        "    Listed keys not found: 2 of 5\n"
    )


def test_text_report_of_nothing() -> None:
    report = Report.from_stats(Stats(), total_sessions=0)

    assert text(report) == (
        "Processed 0 sessions out of 0 total sessions\n"
        "Average size was 0.00 bytes\n"
        "Saw the following keys:\n"
        "\n"
        "Summary:\n"
        "    Stored size: 0 bytes in all\n"
        "    Undecodable sessions: 0\n"
    )


def test_key_names_cannot_break_a_line() -> None:
    assert printable("cart") == "cart"
    assert printable("wizard_étape") == "wizard_étape"
    assert printable("evil\nProcessed 0 sessions") == "evil\\nProcessed 0 sessions"
    assert printable("tab\there\x1b[2J") == "tab\\there\\x1b[2J"
