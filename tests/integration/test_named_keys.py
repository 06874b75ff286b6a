"""Named keys from the config's [keys] table: they authenticate, and only their names show."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from harness import Server

pytestmark = pytest.mark.integration


def test_named_keys(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("home")
    config = home / "hearth.toml"
    config.write_text('[keys]\nalice = "k-alice-secret"\nbob = "k-bob-secret"\n')
    srv = Server(tiny_models_dir, "tiny", home, api_key=None,
                 args=("--parallel", "1", "--ctx-size", "256", "--threads", "1",
                       "--config", str(config))).start()
    try:
        assert "alice, bob" in srv.wait_for_stdout("API keys:")
        assert not (home / "config" / "hearth" / "api_key").exists()  # none generated
        ok = srv.request("GET", "/v1/models", headers={"Authorization": "Bearer k-bob-secret"})
        assert ok.status == 200
        bad = srv.request("GET", "/v1/models", headers={"Authorization": "Bearer nope"})
        assert bad.status == 401
        r = srv.chat({"model": "tiny", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "hi"}]},
                     headers={"Authorization": "Bearer k-alice-secret",
                              "Content-Type": "application/json"})
        assert r.status == 200, r.body
        metrics = srv.request("GET", "/metrics",
                              headers={"Authorization": "Bearer k-alice-secret"}).body.decode()
        assert 'key="alice"' in metrics and 'key="bob"' in metrics
        assert "k-alice-secret" not in metrics
        time.sleep(0.2)
    finally:
        assert srv.stop() == 0
    log = "".join(srv.stdout) + "".join(srv.stderr)
    assert "key=alice" in log and "key=bob" in log
    assert "k-alice-secret" not in log and "k-bob-secret" not in log
