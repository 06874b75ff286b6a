"""How the commands print numbers and tables: sizes in binary units, parameter counts, and
columns aligned for a terminal (``hearth models list``, ``hearth status``)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["format_params", "format_size", "table"]


def format_size(n: int) -> str:
    """Binary units, as ``ls -lh`` does: ``512 B``, ``3.4 KiB``, ``242.4 MiB``, ``4.1 GiB``."""
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def format_params(n: int | None) -> str:
    """``268M``, ``1.2B``, ``65.5K``; ``-`` when unknown."""
    if not n:
        return "-"
    for div, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if n >= div:
            value = n / div
            return f"{value:.0f}{suffix}" if value >= 100 else f"{value:.1f}{suffix}"
    return str(n)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart, each as wide as its widest cell; no trailing
    blanks."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *rows)]
    return "\n".join(lines)
