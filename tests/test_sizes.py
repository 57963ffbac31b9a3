from __future__ import annotations

import pytest

from analyze_sessions.sizes import InvalidSize, format_size, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("15000", 15000),
        ("15000B", 15000),
        ("15000 b", 15000),
        ("15KB", 15_000),
        ("15kB", 15_000),
        ("15kb", 15_000),
        ("15 KB", 15_000),
        ("1.5MB", 1_500_000),
        ("1GB", 1_000_000_000),
        ("15KiB", 15_360),
        ("15kib", 15_360),
        ("2MiB", 2_097_152),
        ("1GiB", 1_073_741_824),
        ("15K", 15_360),
        ("15k", 15_360),
        ("1.5M", 1_572_864),
        ("2 m", 2_097_152),
        ("1G", 1_073_741_824),
        ("  15KB\n", 15_000),
        # Fractions of a byte round down: sizes are whole bytes.
        ("1.0009KB", 1000),
        ("10.9", 10),
    ],
)
def test_parse_size_accepts(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text",
    ["", " ", "15XB", "-5", "abc", "15 KB B", "15  KB", "KB", "1e3", "15.KB", ".5K", "15 T", "١٥"],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidSize) as raised:
        parse_size(text)
    assert str(raised.value) == (
        f"Invalid size '{text}': give a number of bytes with an optional unit, "
        f"for example 15000, 15KB, 15KiB, 1.5MB or 2M."
    )


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (15_770, "15.4 KiB"),
        (1_048_524, "1023.9 KiB"),
        (1_048_575, "1.0 MiB"),
        (1_572_864, "1.5 MiB"),
        (1024**3, "1.0 GiB"),
        (5 * 1024**4, "5.0 TiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text
