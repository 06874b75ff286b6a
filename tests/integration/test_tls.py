"""``--tls-cert`` / ``--tls-key``: a real server speaks HTTPS (and only HTTPS) on its port, the
official SDK talks to it trusting the self-signed certificate, hearth's own tools reach it, and
a half or broken TLS configuration stops ``hearth serve`` with one clear line."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from harness import API_KEY, Server

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")


def make_cert(directory: Path, name: str = "hearth") -> tuple[Path, Path]:
    """A self-signed certificate for hearth.lan, localhost and 127.0.0.1, as the README shows."""
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=hearth.lan",
                    "-addext", "subjectAltName=DNS:hearth.lan,DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory,
               certs: tuple[Path, Path]) -> Iterator[Server]:
    cert, key = certs
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=(*TINY_ARGS, "--tls-cert", str(cert), "--tls-key", str(key)))
    srv.start()  # the supervisor's own /health wait went over TLS to get here
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def test_ready_line_says_https(tls_server: Server) -> None:
    out = tls_server.wait_for_stdout("hearth is ready")
    assert f"hearth is ready at https://127.0.0.1:{tls_server.port}/v1" in out


def test_openai_sdk_over_https(tls_server: Server, certs: tuple[Path, Path]) -> None:
    from openai import OpenAI

    trust = ssl.create_default_context(cafile=str(certs[0]))
    with httpx2.Client(verify=trust, timeout=60) as http_client:
        client = OpenAI(base_url=f"https://127.0.0.1:{tls_server.port}/v1", api_key=API_KEY,
                        http_client=http_client, max_retries=0)
        done = client.chat.completions.create(
            model="tiny", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
        assert done.usage is not None and done.usage.completion_tokens == 2
        chunks = list(client.chat.completions.create(
            model="tiny", max_tokens=2, stream=True,
            messages=[{"role": "user", "content": "Hi"}]))
        assert chunks[-1].choices[0].finish_reason == "length"


def test_a_client_that_does_not_trust_the_certificate_is_refused(tls_server: Server) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", tls_server.port, timeout=10,
                                       context=ssl.create_default_context())
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/health")
    conn.close()


def test_plain_http_to_the_tls_port_gets_no_answer(tls_server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", tls_server.port, timeout=10)
    try:
        with pytest.raises((http.client.HTTPException, OSError)):
            conn.request("GET", "/health", headers={"Host": "localhost"})
            conn.getresponse().read()
    finally:
        conn.close()


def test_hearth_status_and_models_reach_it_with_the_certificate(
        tls_server: Server, certs: tuple[Path, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(tls_server.home / "config")
    env.update(HEARTH_PORT=str(tls_server.port), HEARTH_API_KEY=API_KEY,
               HEARTH_TLS_CERT=str(certs[0]), HEARTH_MODELS_DIR=str(tls_server.models_dir))

    def hearth(*cmd: str) -> str:
        run = subprocess.run([sys.executable, "-m", "hearth.tools.cli", *cmd],
                             capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    assert f"https://127.0.0.1:{tls_server.port}  ok" in hearth("status")
    listed = json.loads(hearth("models", "list", "--json"))
    assert listed["server"]["url"] == f"https://127.0.0.1:{tls_server.port}/v1"
    assert [(m["id"], m["loaded"]) for m in listed["models"]] == [("tiny", True)], listed


def serve_fails(tmp_path: Path, models_dir: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"))
    run = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir",
                          str(models_dir), "--model", "tiny", *TINY_ARGS, *args],
                         capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 2, run.stdout + run.stderr
    assert "Traceback" not in run.stderr and "hearth is ready" not in run.stdout
    return run.stderr


def test_a_half_or_broken_tls_configuration_stops_serve(
        tmp_path: Path, tiny_models_dir: Path, certs: tuple[Path, Path]) -> None:
    cert, key = certs
    _, other_key = make_cert(tmp_path, "other")
    assert "hearth: --tls-cert needs --tls-key as well" in \
        serve_fails(tmp_path, tiny_models_dir, "--tls-cert", str(cert))
    assert "hearth: --tls-key needs --tls-cert as well" in \
        serve_fails(tmp_path, tiny_models_dir, "--tls-key", str(key))
    missing = str(tmp_path / "missing.pem")
    assert f"hearth: cannot read --tls-cert {missing}: No such file or directory" in \
        serve_fails(tmp_path, tiny_models_dir, "--tls-cert", missing, "--tls-key", str(key))
    assert "is not the private key of --tls-cert" in \
        serve_fails(tmp_path, tiny_models_dir, "--tls-cert", str(cert), "--tls-key",
                    str(other_key))
