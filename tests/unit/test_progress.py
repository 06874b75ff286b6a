"""hearth.tools.cli.progress: the bars the commands draw, on a terminal and off one."""

from __future__ import annotations

import io

from hearth.tools.cli.bench_report import RequestResult
from hearth.tools.cli.progress import (
    ByteProgress,
    RequestProgress,
    TerminalLine,
    format_bar,
    is_terminal,
)

MIB = 1 << 20


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_format_bar() -> None:
    mib = 1 << 20
    assert format_bar("copying x", 0, 10 * mib, width=10) == "copying x  [..........]   0% 0/10 MiB"
    half = format_bar("copying x", 5 * mib, 10 * mib, width=10)
    assert half.endswith("[#####.....]  50% 5/10 MiB")
    assert "100%" in format_bar("copying x", 0, 0)


def test_format_bar_keeps_a_decimal_below_10_mib_and_drops_the_bar_for_an_unknown_size(
) -> None:
    assert format_bar("t", 416 * 1024, 1153434, width=4).endswith(
        "[#...]  36% 416.0 KiB/1.1 MiB")  # not "0/1 MiB"
    assert format_bar("t", 1153434, None) == "t  1.1 MiB"


def test_format_bar_clamps_past_the_total() -> None:
    assert format_bar("x", 20 * MIB, 10 * MIB, width=4) == "x  [####] 100% 20/10 MiB"


def test_is_terminal_tolerates_odd_streams() -> None:
    class Closed(io.StringIO):
        def isatty(self) -> bool:
            raise ValueError("I/O operation on closed file")

    assert is_terminal(TTY()) and not is_terminal(io.StringIO())
    assert not is_terminal(Closed())
    assert not is_terminal(object())  # type: ignore[arg-type]


def test_terminal_line_blanks_what_a_shorter_redraw_leaves() -> None:
    out = TTY()
    line = TerminalLine(out)
    line.draw("abcdef")
    line.draw("xy")
    assert out.getvalue() == "\rabcdef\rxy    "


def test_terminal_line_never_raises_on_a_closed_stream() -> None:
    out = io.StringIO()
    out.close()
    TerminalLine(out).write("lost")  # no exception


def _bytes_bar(out: io.StringIO, clock: Clock, redraw_s: float = 0.1) -> ByteProgress:
    return ByteProgress("copying m.gguf", 10 * MIB, out, start_line="copying m.gguf (10.0 MiB)",
                        end_line=lambda s: f"copying m.gguf: done in {s:.1f} s",
                        redraw_s=redraw_s, clock=clock)


def test_byte_progress_off_a_terminal_prints_a_start_and_an_end_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = _bytes_bar(out, clock)
    bar.start()
    for done in range(0, 10 * MIB, MIB):
        clock.now += 1
        bar.update(done)
    bar.finish()
    assert out.getvalue() == "copying m.gguf (10.0 MiB)\ncopying m.gguf: done in 10.0 s\n"


def test_byte_progress_on_a_terminal_redraws_at_most_every_redraw_s() -> None:
    out, clock = TTY(), Clock()
    bar = _bytes_bar(out, clock)
    bar.start()
    clock.now = 1.0
    bar.update(2 * MIB)
    clock.now = 1.05  # too soon after the last redraw: skipped
    bar.update(3 * MIB)
    clock.now = 1.2
    bar.update(5 * MIB, "  verifying")
    clock.now = 2.5
    bar.finish()
    frames = out.getvalue().split("\r")[1:]
    assert [f.rstrip() for f in frames] == [
        format_bar("copying m.gguf", 0, 10 * MIB),
        format_bar("copying m.gguf", 2 * MIB, 10 * MIB),
        format_bar("copying m.gguf", 5 * MIB, 10 * MIB) + "  verifying",
        format_bar("copying m.gguf", 10 * MIB, 10 * MIB) + "  done in 2.5 s",
    ]
    assert out.getvalue().endswith("done in 2.5 s\n")


def test_byte_progress_abandon_ends_a_drawn_line_only() -> None:
    quiet, drawn = TTY(), TTY()
    _bytes_bar(quiet, Clock()).abandon()
    assert quiet.getvalue() == ""
    bar = _bytes_bar(drawn, Clock())
    bar.start()
    bar.abandon()
    assert drawn.getvalue().endswith("\n")
    plain = io.StringIO()
    bar = _bytes_bar(plain, Clock())
    bar.start()
    bar.abandon()
    assert plain.getvalue() == "copying m.gguf (10.0 MiB)\n"  # nothing added off a terminal


def run_phase(progress: RequestProgress, label: str, oks: list[bool]) -> None:
    """One phase as ``hearth bench`` runs it: requests that succeeded or failed."""
    progress.phase(label)
    for ok in oks:
        progress.advance(RequestResult(error="" if ok else "503 server_overloaded"))
    progress.end_phase()


def test_request_progress_off_a_terminal_prints_one_line_per_phase() -> None:
    out = io.StringIO()
    progress = RequestProgress(5, out, enabled=True)
    run_phase(progress, "A concurrency 1", [True, False, True])
    run_phase(progress, "A concurrency 2", [True, True])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("A concurrency 1: 2/3 ok in ") and lines[0].endswith(
        "(3/5 overall)")
    assert lines[1].startswith("A concurrency 2: 2/2 ok in ") and lines[1].endswith(
        "(5/5 overall)")


def test_request_progress_on_a_terminal_draws_the_bar_and_errors() -> None:
    out = TTY()
    run_phase(RequestProgress(4, out, enabled=True), "B concurrency 4", [False])
    last = out.getvalue().rstrip("\n").split("\r")[-1]
    assert last.startswith("B concurrency 4        [" + "#" * 7 + "." * 23 + "] 1/4  errors 1")
    assert out.getvalue().endswith("\n")


def test_request_progress_disabled_is_silent() -> None:
    out = TTY()
    run_phase(RequestProgress(2, out, enabled=False), "A concurrency 1", [True])
    assert out.getvalue() == ""
