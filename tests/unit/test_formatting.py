"""hearth.tools.cli.formatting: sizes, parameter counts and aligned tables for the terminal."""

from __future__ import annotations

from hearth.tools.cli.formatting import format_params, format_size, table


def test_format_size() -> None:
    assert format_size(0) == "0 B"
    assert format_size(1023) == "1023 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(253 * 1024 * 1024) == "253.0 MiB"
    assert format_size(5 * 1024**3) == "5.0 GiB"


def test_format_size_stops_at_tib() -> None:
    assert format_size(3 * 1024**5) == "3072.0 TiB"


def test_format_params() -> None:
    assert format_params(None) == "-"
    assert format_params(0) == "-"
    assert format_params(999) == "999"
    assert format_params(65_536) == "65.5K"
    assert format_params(268_098_176) == "268M"
    assert format_params(1_235_814_400) == "1.2B"


def test_table_aligns_columns_without_trailing_blanks() -> None:
    text = table(("ID", "SIZE", "NOTE"), [["tiny", "1.5 KiB", ""], ["a-longer-id", "3 B", "x"]])
    assert text.splitlines() == [
        "ID           SIZE     NOTE",
        "tiny         1.5 KiB",
        "a-longer-id  3 B      x",
    ]


def test_table_without_rows_is_the_header() -> None:
    assert table(("MODEL", "LOADED"), []) == "MODEL  LOADED"
