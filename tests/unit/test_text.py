"""engine/text.py: incremental UTF-8 decoding and stop strings that never leak."""

from __future__ import annotations

import random

import pytest
from hearth.engine.text import StopFilter, Utf8Stream

# ---- Utf8Stream -------------------------------------------------------------------------------


def test_ascii_passes_straight_through() -> None:
    s = Utf8Stream()
    assert s.feed(b"Hello") == "Hello"
    assert s.feed(b", world") == ", world"
    assert s.flush() == ""


def test_two_byte_char_split_across_pieces() -> None:
    s = Utf8Stream()
    raw = "é".encode()
    assert len(raw) == 2
    assert s.feed(b"caf" + raw[:1]) == "caf"
    assert s.feed(raw[1:]) == "é"
    assert s.flush() == ""


def test_four_byte_char_one_byte_at_a_time() -> None:
    s = Utf8Stream()
    raw = "😀".encode()
    assert len(raw) == 4
    assert [s.feed(raw[i:i + 1]) for i in range(4)] == ["", "", "", "😀"]
    assert s.flush() == ""


def test_char_completed_together_with_more_text() -> None:
    s = Utf8Stream()
    raw = "😀".encode()
    assert s.feed(raw[:3]) == ""
    assert s.feed(raw[3:] + "é!".encode()) == "😀é!"


def test_every_split_of_mixed_text_decodes_exactly() -> None:
    text = "a é 😀 中文 z"
    raw = text.encode()
    for cut in range(len(raw) + 1):
        s = Utf8Stream()
        out = [s.feed(raw[:cut]), s.feed(raw[cut:]), s.flush()]
        assert "".join(out) == text
        assert all("\ufffd" not in part for part in out)


def test_invalid_bytes_become_replacement_not_an_exception() -> None:
    s = Utf8Stream()
    assert s.feed(b"a\xffb") == "a\ufffdb"


def test_flush_of_an_incomplete_char() -> None:
    s = Utf8Stream()
    assert s.feed("😀".encode()[:2]) == ""
    assert s.flush() == "\ufffd"  # generation ended mid-character: say so, once


# ---- StopFilter -------------------------------------------------------------------------------


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    f = StopFilter(stops)
    out = "".join(f.feed(p) for p in pieces) + f.flush()
    return out, f.stopped


def test_empty_stop_list_is_passthrough() -> None:
    f = StopFilter([])
    assert f.feed("Hello <") == "Hello <"
    assert f.feed("/s>") == "/s>"
    assert f.flush() == ""
    assert not f.stopped
    assert run(["", ""], ["a", "b"]) == ("ab", False)


def test_stop_split_across_feeds_never_leaks() -> None:
    f = StopFilter(["</s>"])
    emitted = [f.feed("Hello <"), f.feed("/"), f.feed("s"), f.feed("> and more")]
    assert "".join(emitted) == "Hello "
    assert all("<" not in e for e in emitted)
    assert f.stopped
    assert f.feed("later") == ""
    assert f.flush() == ""


def test_held_text_released_by_flush_when_no_stop() -> None:
    f = StopFilter(["STOP"])
    assert f.feed("all good ST") == "all good "
    assert f.flush() == "ST"
    assert not f.stopped


def test_held_text_released_when_the_partial_match_breaks() -> None:
    f = StopFilter(["STOP"])
    assert f.feed("ST") == ""
    assert f.feed("AR") == "STAR"
    assert f.flush() == ""


def test_earliest_stop_wins() -> None:
    assert run(["world", "lo"], ["hello world"]) == ("hel", True)
    assert run(["lo", "world"], ["hello world"]) == ("hel", True)
    assert run(["xyz", "o w"], ["hell", "o wor", "ld"]) == ("hell", True)


def test_stop_at_the_very_start() -> None:
    assert run(["\n"], ["\nrest"]) == ("", True)


def test_overlapping_prefixes() -> None:
    assert run(["abc"], ["aab", "c"]) == ("a", True)
    assert run(["aab"], ["a", "a", "a", "b"]) == ("a", True)


def test_single_char_stop() -> None:
    assert run(["."], ["Yes", ". No"]) == ("Yes", True)


@pytest.mark.parametrize("seed", range(30))
def test_random_splits_match_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = "ab<>/s\n"
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
    stops = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4)))
             for _ in range(rng.randint(0, 3))]
    cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, rng.randint(0, 8))))
    pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    found = [text.find(s) for s in stops if s in text]
    expected = text[: min(found)] if found else text
    f = StopFilter(stops)
    emitted = [f.feed(p) for p in pieces]
    assert "".join(emitted) + f.flush() == expected
    assert f.stopped == bool(found)
    for i in range(len(emitted)):  # no prefix of the stream ever shows a stop string
        assert not any(s in "".join(emitted[: i + 1]) for s in stops)


def test_the_stop_that_matched_is_named() -> None:
    f = StopFilter(["xyz", "lo w", "ll"])
    assert f.matched is None
    assert f.feed("Hel") == "He"  # "l" may start "ll" or "lo w"
    f.feed("lo world")  # "ll" starts first in the text, whatever the list's order
    assert f.stopped and f.matched == "ll"
    g = StopFilter(["ab", "a"])  # two starting at one place: the first listed
    g.feed("xab")
    assert g.matched == "ab"
    h = StopFilter(["never"])
    h.feed("text")
    h.flush()
    assert h.matched is None
