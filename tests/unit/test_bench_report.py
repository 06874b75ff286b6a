"""`hearth bench` statistics and presentation, on hand-made results (no server)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hearth.tools.cli.bench import Prompts
from hearth.tools.cli.bench_report import (
    RequestResult,
    comparison,
    format_table,
    percentile,
    summarize,
    write_json,
    write_png,
)
from hearth.tools.cli.bench_requests import error_kind


def test_percentile_interpolates_linearly_like_numpy() -> None:
    data = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == pytest.approx(2.5)
    assert percentile(data, 90) == pytest.approx(3.7)  # numpy.percentile(..., 90) == 3.7
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile(data, 101)


def test_percentile_of_100_values() -> None:
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 99) == pytest.approx(99.01)
    assert percentile(data, 50) == pytest.approx(50.5)


def _chat(ttft: float, gaps: list[float], tokens: int, *, prompt: int | None = 10,
          estimated: bool = False) -> RequestResult:
    return RequestResult(latency=ttft + sum(gaps), ttft=ttft, gaps=gaps, tokens=tokens,
                         prompt_tokens=prompt, cached_tokens=0 if prompt else None,
                         estimated=estimated)


def test_summarize_counts_only_successes_and_groups_errors() -> None:
    results = [
        _chat(0.1, [0.01, 0.03], 3),
        _chat(0.3, [0.02], 2),
        RequestResult(error="503 server_overloaded", latency=0.001),
        RequestResult(error="503 server_overloaded", latency=0.001),
        RequestResult(error="timeout", latency=5.0),
    ]
    lv = summarize(results, wall_s=2.0, concurrency=4, endpoint="chat")
    assert lv["concurrency"] == 4
    assert (lv["requests"], lv["ok"], lv["errors"]) == (5, 2, 3)
    assert lv["errors_by_kind"] == {"503 server_overloaded": 2, "timeout": 1}
    assert lv["requests_per_s"] == pytest.approx(1.0)
    assert lv["tokens"] == 5
    assert lv["tokens_per_s"] == pytest.approx(2.5)
    assert lv["tokens_estimated"] is False
    assert lv["completion_tokens_mean"] == pytest.approx(2.5)
    assert lv["prompt_tokens_mean"] == pytest.approx(10)
    assert lv["cached_prompt_tokens"] == 0
    assert lv["ttft_s"]["p50"] == pytest.approx(0.2)
    assert lv["ttft_s"]["mean"] == pytest.approx(0.2)
    assert lv["itl_s"]["p50"] == pytest.approx(0.02)
    assert set(lv["itl_s"]) == {"p50", "p99", "mean"}
    assert set(lv["ttft_s"]) == set(lv["latency_s"]) == {"p50", "p90", "p99", "mean"}
    assert lv["latency_s"]["p50"] == pytest.approx((0.14 + 0.32) / 2)


def test_summarize_marks_estimates_and_handles_no_success() -> None:
    est = summarize([_chat(0.1, [], 4, prompt=None, estimated=True)], 1.0, 1, "chat")
    assert est["tokens_estimated"] is True
    assert est["prompt_tokens_mean"] is None and est["cached_prompt_tokens"] is None
    assert est["itl_s"] == {"p50": None, "p99": None, "mean": None}

    failed = summarize([RequestResult(error="connection ConnectionRefusedError")], 0.5, 1,
                       "chat")
    assert failed["ok"] == 0 and failed["tokens_per_s"] == 0
    assert failed["ttft_s"]["p50"] is None and failed["completion_tokens_mean"] is None
    json.dumps(failed, allow_nan=False)  # None, never NaN, so the JSON stays valid


def test_summarize_embeddings_has_no_streaming_fields() -> None:
    lv = summarize([RequestResult(latency=0.05, tokens=30, prompt_tokens=30)], 0.05, 1,
                   "embeddings")
    assert "ttft_s" not in lv and "itl_s" not in lv
    assert lv["tokens_per_s"] == pytest.approx(600)


def _report(endpoint: str = "chat", estimated: bool = False) -> dict[str, Any]:
    def server(name: str, speed: float) -> dict[str, Any]:
        levels = []
        for n in (1, 4):
            results = [_chat(0.1 / speed, [0.01], 2, estimated=estimated) for _ in range(n)]
            if n == 4:
                results.append(RequestResult(error="503 server_overloaded"))
            levels.append(summarize(results, 1.0 / speed, n, endpoint))
        return {"name": name, "url": f"http://{name.lower()}/v1", "model": "m",
                "levels": levels}

    servers = [server("A", 1.0), server("B", 2.0)]
    return {"schema": 1, "endpoint": endpoint, "servers": servers,
            "comparison": comparison(servers), "prompt_note": "~8 tokens",
            "settings": {"concurrency": [1, 4], "requests": 4, "max_tokens": 2,
                         "prompt_tokens": 8, "prompt_mode": "unique", "rounds": 1}}


def test_comparison_is_b_over_a() -> None:
    (c1, c4) = _report()["comparison"]
    assert c1["concurrency"] == 1 and c4["concurrency"] == 4
    assert c1["tokens_per_s_ratio"] == pytest.approx(2.0)
    assert c1["requests_per_s_ratio"] == pytest.approx(2.0)
    assert c1["ttft_p50_ratio"] == pytest.approx(0.5)
    assert comparison(_report()["servers"][:1]) == []


def test_table_has_a_row_per_server_and_level_and_names_errors() -> None:
    text = format_table(_report())
    rows = [line.split() for line in text.splitlines() if re.match(r"[AB] +\d+ ", line)]
    assert [(r[0], r[1]) for r in rows] == [("A", "1"), ("A", "4"), ("B", "1"), ("B", "4")]
    assert "1 × 503 server_overloaded" in text
    assert "B / A" in text
    assert "estimated" not in text
    assert "estimated" in format_table(_report(estimated=True))
    assert "lat p50" in format_table(_report("embeddings"))


def test_json_and_png(tmp_path: Path) -> None:
    report = _report()
    write_json(report, tmp_path / "bench.json")
    assert json.loads((tmp_path / "bench.json").read_text()) == report
    write_png(report, tmp_path / "bench.png")
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report["servers"][0]["levels"][0]["tokens_per_s"] = None  # a level with no success plots
    write_png(report, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"


def test_prompts_unique_vs_shared_prefix() -> None:
    unique = Prompts("unique", 64, "t")
    a, b = unique.chat(1)[0]["content"], unique.chat(2)[0]["content"]
    assert a.split()[0] != b.split()[0]  # unique from the first word
    assert abs(len(a) - 64 * 4) < 40  # sized at 4 characters per token
    shared = Prompts("shared-prefix", 64, "t")
    x, y = shared.chat(1), shared.chat(2)
    assert x[0] == y[0] and x[0]["role"] == "system" and len(x[0]["content"]) >= 64 * 4
    assert x[1] != y[1] and len(x[1]["content"]) < 80
    assert shared.text(1).startswith(shared.shared) and unique.text(1) != unique.text(2)


def test_error_kind_uses_openai_code_then_type_then_reason() -> None:
    body = json.dumps({"error": {"message": "busy", "type": "server_error",
                                 "code": "server_overloaded"}}).encode()
    assert error_kind(503, "Service Unavailable", body) == "503 server_overloaded"
    body = json.dumps({"error": {"message": "x", "type": "invalid_request_error"}}).encode()
    assert error_kind(400, "Bad Request", body) == "400 invalid_request_error"
    assert error_kind(502, "Bad Gateway", b"<html>") == "502 Bad Gateway"
    assert error_kind(500, "Internal Server Error", b'{"error": "boom"}') == (
        "500 Internal Server Error")


def test_tools_options_make_the_request_fields(tmp_path: Path) -> None:
    from hearth.tools.cli.bench import WEATHER_TOOL, tools_body

    assert tools_body("weather", "auto") == {"tools": [WEATHER_TOOL], "tool_choice": "auto"}
    assert tools_body("weather", "get_weather")["tool_choice"] == {
        "type": "function", "function": {"name": "get_weather"}}
    f = tmp_path / "tools.json"
    f.write_text(json.dumps([WEATHER_TOOL]))
    assert tools_body(f"@{f}", "required") == {"tools": [WEATHER_TOOL],
                                               "tool_choice": "required"}
    with pytest.raises(ValueError):
        tools_body("[]", "auto")


def test_chat_shaped_fields_become_the_responses_apis() -> None:
    from hearth.tools.cli.bench import WEATHER_TOOL, tools_body
    from hearth.tools.cli.bench_requests import responses_extra

    extra = {"temperature": 0, "max_tokens": 5, **tools_body("weather", "get_weather"),
             "response_format": {"type": "json_schema",
                                 "json_schema": {"name": "n", "schema": {"type": "object"}}}}
    assert responses_extra(extra) == {
        "temperature": 0, "max_output_tokens": 5,
        "tools": [{"type": "function", **WEATHER_TOOL["function"]}],  # type: ignore[dict-item]
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "n", "schema": {"type": "object"}}}}
    assert responses_extra({"response_format": {"type": "json_object"}}) == {
        "text": {"format": {"type": "json_object"}}}
