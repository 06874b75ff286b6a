"""``hearth models pull`` as a real subprocess against a local server that answers like the
Hugging Face hub (tests/integration/hub_server.py), with real tiny GGUFs. Nothing of the
download is mocked: sockets, redirects, ranges, hashes and files are real."""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server
from hearth.tools.cli.model_sources import read_sources
from hearth.tools.cli.tiny_model import build_tiny_model
from hub_server import HubServer

pytestmark = pytest.mark.integration

REPO = "hearth-test/Tiny-GGUF"
GATED = "hearth-test/Gated-GGUF"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("ggufs")
    out = {name: build_tiny_model(d / f"{name}.gguf", seed=seed).read_bytes()
           for name, seed in (("Tiny-F32", 0), ("Tiny-Q8_0", 1), ("Tiny-Q4_K_M", 2))}
    build_tiny_model(d / "split" / "Tiny-Split.gguf", seed=3, split_max_tensors=8)
    for p in sorted((d / "split").iterdir()):
        out[p.stem] = p.read_bytes()
    return out


@pytest.fixture
def hub(ggufs: dict[str, bytes]) -> Iterator[HubServer]:
    hub = HubServer()
    hub.repos[REPO] = {"README.md": b"# tiny\n", "Tiny-F32.gguf": ggufs["Tiny-F32"],
                       "Tiny-Q8_0.gguf": ggufs["Tiny-Q8_0"],
                       **{f"split/{n}.gguf": b for n, b in ggufs.items() if "-of-" in n}}
    hub.repos[GATED] = {"Tiny-Q4_K_M.gguf": ggufs["Tiny-Q4_K_M"]}
    hub.gated.add(GATED)
    hub.start()
    yield hub
    hub.close()


def env_for(tmp_path: Path, hub: HubServer, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEARTH_", "HF_")) and k not in ("http_proxy", "https_proxy")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_DATA_HOME=str(tmp_path / "data"),
               HF_ENDPOINT=hub.endpoint, NO_PROXY="*")
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def pull(env: dict[str, str], models: Path, ref: str,
         *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "pull", ref,
                           "--models-dir", str(models), *args],
                          env=env, capture_output=True, text=True, timeout=120)


def lines(r: subprocess.CompletedProcess[str]) -> list[str]:
    return r.stderr.splitlines()


def listing(models: Path) -> list[str]:
    """The models dir's files, but the sources record and the lock files."""
    return sorted(p.name for p in models.iterdir()
                  if not p.name.startswith(".hearth-sources.") and p.suffix != ".lock")


# ---- Hugging Face references --------------------------------------------------------------


def test_pull_by_quant(tmp_path: Path, hub: HubServer, ggufs: dict[str, bytes]) -> None:
    models = tmp_path / "models"
    r = pull(env_for(tmp_path, hub), models, f"{REPO}:q8_0")
    assert r.returncode == 0, r.stderr
    assert listing(models) == ["Tiny-Q8_0.gguf"]  # no .part left behind
    assert (models / "Tiny-Q8_0.gguf").read_bytes() == ggufs["Tiny-Q8_0"]
    assert r.stdout.splitlines()[-1] == "model id: Tiny-Q8_0"
    err = r.stderr.splitlines()
    assert "\r" not in r.stderr and len(err) == 2, r.stderr  # not a terminal: start and end
    assert err[0].startswith("Tiny-Q8_0.gguf: downloading") and "localhost" in err[0]
    assert err[1].endswith("sha256 verified")
    assert read_sources(models) == {"Tiny-Q8_0": f"hf:{REPO}/Tiny-Q8_0.gguf"}
    (sent,) = hub.cdn_sends("Tiny-Q8_0.gguf")
    assert (sent.start, sent.sent) == (0, len(ggufs["Tiny-Q8_0"]))

    again = pull(env_for(tmp_path, hub), models, f"{REPO}:Q8_0")
    assert again.returncode == 9 and "already exists" in again.stderr
    assert again.stderr.count("\n") == 1
    forced = pull(env_for(tmp_path, hub), models, f"{REPO}/Tiny-Q8_0.gguf", "--force")
    assert forced.returncode == 0, forced.stderr


def test_ambiguous_and_unknown_refs(tmp_path: Path, hub: HubServer) -> None:
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    r = pull(env, models, REPO)  # three models in the repo: which one?
    assert r.returncode == 2
    assert "several GGUF models" in r.stderr and "Tiny-F32.gguf" in r.stderr
    r = pull(env, models, f"{REPO}:Q2_K")
    assert r.returncode == 2 and "matches 'Q2_K'" in r.stderr
    r = pull(env, models, "hearth-test/No-Such-Repo:Q8_0")
    assert r.returncode == 4 and "repository not found" in r.stderr
    r = pull(env, models, f"{REPO}/missing.gguf")
    assert r.returncode == 4 and "not found (404)" in r.stderr
    r = pull(env, models, "not a ref")
    assert r.returncode == 2 and "not a catalogue name" in r.stderr
    assert not models.exists() or listing(models) == []


def test_interrupted_pull_resumes(tmp_path: Path, hub: HubServer,
                                  ggufs: dict[str, bytes]) -> None:
    body = ggufs["Tiny-F32"]
    half = len(body) // 2
    hub.drop_after["Tiny-F32.gguf"] = half
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    r = pull(env, models, f"{REPO}/Tiny-F32.gguf")
    assert r.returncode == 3, r.stderr
    assert "connection lost" in r.stderr and "run the same command again" in r.stderr
    part = models / ".Tiny-F32.gguf.part"
    assert listing(models) == [".Tiny-F32.gguf.part", ".Tiny-F32.gguf.part.json"]  # + origin
    kept = part.stat().st_size
    assert 0 < kept <= half

    r = pull(env, models, f"{REPO}/Tiny-F32.gguf")
    assert r.returncode == 0, r.stderr
    assert "resuming at" in r.stderr and "sha256 verified" in r.stderr
    assert (models / "Tiny-F32.gguf").read_bytes() == body
    first, second = hub.cdn_sends("Tiny-F32.gguf")
    assert (first.start, first.sent) == (0, half)
    assert (second.start, second.sent) == (kept, len(body) - kept)  # only the rest went over
    assert listing(models) == ["Tiny-F32.gguf"]


def test_server_without_ranges_restarts_cleanly(tmp_path: Path, hub: HubServer,
                                                ggufs: dict[str, bytes]) -> None:
    body = ggufs["Tiny-F32"]
    hub.drop_after["Tiny-F32.gguf"] = 300_000
    hub.no_ranges.add("Tiny-F32.gguf")  # answers 200 with the whole file to a Range request
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    assert pull(env, models, f"{REPO}:F32").returncode == 3
    r = pull(env, models, f"{REPO}:F32")
    assert r.returncode == 0, r.stderr
    assert "cannot resume; starting again" in r.stderr and "sha256 verified" in r.stderr
    assert (models / "Tiny-F32.gguf").read_bytes() == body
    assert [(s.start, s.sent) for s in hub.cdn_sends("Tiny-F32.gguf")] == [
        (0, 300_000), (0, len(body))]


def test_ctrl_c_keeps_the_part_for_the_next_pull(tmp_path: Path, hub: HubServer,
                                                  ggufs: dict[str, bytes]) -> None:
    body = ggufs["Tiny-F32"]
    hub.stall_after["Tiny-F32.gguf"] = 100_000
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    # Ctrl-C as a terminal's foreground command gets it: with SIGINT's default disposition. A
    # test runner started in the background (a non-interactive shell's `&`) ignores SIGINT,
    # and an ignored signal stays ignored across exec: the pull would never see it.
    proc = subprocess.Popen([sys.executable, "-m", "hearth.tools.cli", "models", "pull",
                             f"{REPO}:F32", "--models-dir", str(models)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    part = models / ".Tiny-F32.gguf.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size == 100_000):
        assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    hub.release.set()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err
    assert part.stat().st_size == 100_000

    r = pull(env, models, f"{REPO}:F32")
    assert r.returncode == 0, r.stderr
    assert hub.cdn_sends("Tiny-F32.gguf")[-1].start == 100_000
    assert (models / "Tiny-F32.gguf").read_bytes() == body


def test_sha256_mismatch_is_refused(tmp_path: Path, hub: HubServer) -> None:
    hub.published_sha["Tiny-F32.gguf"] = "0" * 64  # the listing and X-Linked-ETag both claim it
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    for ref in (f"{REPO}:F32", f"{REPO}/Tiny-F32.gguf"):  # hash from the listing, the header
        r = pull(env, models, ref)
        assert r.returncode == 7, r.stderr
        assert "sha256 mismatch" in r.stderr and "0" * 64 in r.stderr
        assert listing(models) == []
    assert read_sources(models) == {}


def test_token_only_to_the_hub(tmp_path: Path, hub: HubServer, ggufs: dict[str, bytes]) -> None:
    models = tmp_path / "models"
    r = pull(env_for(tmp_path, hub), models, f"{GATED}:Q4_K_M")
    assert r.returncode == 5 and "set HF_TOKEN" in r.stderr, r.stderr
    r = pull(env_for(tmp_path, hub, token="hf_wrong"), models, f"{GATED}:Q4_K_M")
    assert r.returncode == 5 and "was refused" in r.stderr and "hf_wrong" not in r.stderr

    hub.requests.clear()
    r = pull(env_for(tmp_path, hub, token=hub.token), models, f"{GATED}:Q4_K_M")
    assert r.returncode == 0, r.stderr
    assert (models / "Tiny-Q4_K_M.gguf").read_bytes() == ggufs["Tiny-Q4_K_M"]
    assert hub.token not in r.stdout + r.stderr
    # the API listing and the resolve went with the token; the CDN (another host) got none
    assert [auth for path, auth in hub.requests if not path.startswith("/cdn/")] == [True, True]
    assert [auth for path, auth in hub.requests if path.startswith("/cdn/")] == [False]

    r = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "pull",
                        f"{GATED}/Tiny-Q4_K_M.gguf", "--models-dir", str(models), "--force",
                        "--hf-token", hub.token], env=env_for(tmp_path, hub),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert hub.token not in r.stdout + r.stderr


def test_a_split_pull_broken_on_a_later_part_resumes(tmp_path: Path, hub: HubServer,
                                                     ggufs: dict[str, bytes]) -> None:
    """The first part is whole but still a .part (nothing is renamed until every part is):
    the next pull asks for bytes past its end, gets 416, checks it and counts it as done."""
    second = "Tiny-Split-00002-of-00003.gguf"
    hub.drop_after[second] = 10_000
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    r = pull(env, models, f"{REPO}:Split")
    assert r.returncode == 3, r.stderr
    r = pull(env, models, f"{REPO}:Split")
    assert r.returncode == 0, r.stderr
    assert "Tiny-Split-00001-of-00003.gguf: already downloaded (" in r.stderr
    assert r.stderr.count("sha256 verified") == 3
    first = hub.cdn_sends("Tiny-Split-00001-of-00003.gguf")
    assert [(s.start, s.sent) for s in first] == [(0, len(ggufs["Tiny-Split-00001-of-00003"]))]
    assert [s.start for s in hub.cdn_sends(second)] == [0, 10_000]
    for n in (n for n in ggufs if "-of-" in n):
        assert (models / f"{n}.gguf").read_bytes() == ggufs[n]
    assert listing(models) == sorted(f"{n}.gguf" for n in ggufs if "-of-" in n)


def test_a_complete_part_that_fails_its_check_starts_again(tmp_path: Path, hub: HubServer,
                                                           ggufs: dict[str, bytes]) -> None:
    body = ggufs["Tiny-F32"]
    hub.drop_after["Tiny-F32.gguf"] = 1000
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    assert pull(env, models, f"{REPO}:F32").returncode == 3
    (models / ".Tiny-F32.gguf.part").write_bytes(body[:-4] + b"XXXX")  # whole size, bad bytes
    r = pull(env, models, f"{REPO}:F32")
    assert r.returncode == 0, r.stderr
    assert "complete partial download fails its check (its sha256 differs); starting again" in (
        r.stderr)
    assert (models / "Tiny-F32.gguf").read_bytes() == body
    assert hub.cdn_sends("Tiny-F32.gguf")[-1].start == 0


def test_a_part_longer_than_the_file_starts_again(tmp_path: Path, hub: HubServer,
                                                  ggufs: dict[str, bytes]) -> None:
    body = ggufs["Tiny-F32"]
    hub.plain["t.gguf"] = (body, "application/octet-stream")
    hub.drop_after["t.gguf"] = 1000
    env, models, url = env_for(tmp_path, hub), tmp_path / "models", f"{hub.endpoint}/plain/t.gguf"
    assert pull(env, models, url).returncode == 3
    with (models / ".t.gguf.part").open("ab") as f:
        f.write(bytes(len(body)))
    r = pull(env, models, url)
    assert r.returncode == 0, r.stderr
    assert "is longer than the file (1.1 MiB); starting again" in r.stderr
    assert (models / "t.gguf").read_bytes() == body


def test_a_part_is_only_continued_from_its_own_origin(tmp_path: Path, hub: HubServer,
                                                      ggufs: dict[str, bytes]) -> None:
    """No hash is published for these: only the .part's record (URL, ETag via If-Range)
    stops bytes of two files from being joined into one that passes."""
    a, b = ggufs["Tiny-F32"], ggufs["Tiny-Q8_0"]
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    part = models / ".m.gguf.part"

    def interrupted(name: str, body: bytes) -> str:
        hub.plain[name] = (body, "application/octet-stream")
        hub.drop_after[name] = 300_000
        url = f"{hub.endpoint}/plain/{name}"
        assert pull(env, models, url, "--name", "m", "--force").returncode == 3
        return url

    url = interrupted("a.gguf", a)  # the file changes on the server: If-Range -> 200, whole
    hub.plain["a.gguf"] = (b, "application/octet-stream")
    r = pull(env, models, url, "--name", "m")
    assert r.returncode == 0, r.stderr
    assert "the file changed on the server" in r.stderr
    assert (models / "m.gguf").read_bytes() == b
    assert [s.start for s in hub.cdn_sends("a.gguf")] == [0, 0]

    url = interrupted("c.gguf", a)  # the same name, pulled from another URL
    r = pull(env, models, f"{hub.endpoint}/plain/a.gguf", "--name", "m", "--force")
    assert r.returncode == 0, r.stderr
    assert f"was downloaded from another URL ({url})" in r.stderr
    assert (models / "m.gguf").read_bytes() == b

    url = interrupted("d.gguf", a)  # a .part whose record is gone
    (models / ".m.gguf.part.json").unlink()
    hub.plain["d.gguf"] = (b, "application/octet-stream")
    r = pull(env, models, url, "--name", "m", "--force")
    assert r.returncode == 0, r.stderr
    assert "no record of where .m.gguf.part came from; starting again" in r.stderr
    assert (models / "m.gguf").read_bytes() == b
    assert not part.exists() and listing(models) == ["m.gguf"]


def test_a_token_is_cleaned_or_refused_never_shown(tmp_path: Path, hub: HubServer) -> None:
    models = tmp_path / "models"
    r = pull(env_for(tmp_path, hub, token=f" {hub.token}\r\n"), models, f"{GATED}:Q4_K_M")
    assert r.returncode == 0, r.stderr  # a CRLF file's token: the blanks around it are dropped
    for token, args in ((f"{hub.token}\rX", ()), ("hf_sécret", ()),
                        (None, ("--hf-token", "hf_sécret\x07"))):
        r = pull(env_for(tmp_path, hub, token=token), models, f"{GATED}:Q4_K_M", "--force",
                 *args)
        assert r.returncode == 2, r.stderr
        assert len(lines(r)) == 1 and "control or non-ASCII characters" in r.stderr
        assert "sécret" not in r.stderr and hub.token not in r.stderr
        assert ("--hf-token" if args else "HF_TOKEN") in r.stderr


def test_hf_endpoint_is_checked(tmp_path: Path, hub: HubServer) -> None:
    models = tmp_path / "models"
    for endpoint, why in (("notaurl", "not an http(s) URL"),
                          ("ftp://127.0.0.1:9", "a ftp: URL"),
                          ("http://example.org", "plain http to example.org"),
                          ("https://me:pa55@example.org", "user name or password")):
        env = {**env_for(tmp_path, hub), "HF_ENDPOINT": endpoint}
        r = pull(env, models, f"{REPO}:Q8_0")
        assert r.returncode == 2, r.stderr
        assert len(lines(r)) == 1 and "HF_ENDPOINT=" in r.stderr and why in r.stderr
        assert "pa55" not in r.stderr


def test_redirects_only_to_http_s_and_plain_http_only_here(tmp_path: Path, hub: HubServer,
                                                           ggufs: dict[str, bytes]) -> None:
    hub.plain["t.gguf"] = (ggufs["Tiny-F32"], "application/octet-stream")
    hub.redirects.update({
        "file.gguf": "file:///etc/passwd", "ftp.gguf": "ftp://127.0.0.1:9/x.gguf",
        "data.gguf": "data:application/octet-stream;base64,R0dVRgMAAAA=",
        "away.gguf": "http://example.org/x.gguf",
        "here.gguf": f"http://localhost:{hub.port}/plain/t.gguf"})
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    for name, why in (("file", "a file: URL"), ("ftp", "a ftp: URL"), ("data", "a data: URL"),
                      ("away", "plain http to example.org")):
        r = pull(env, models, f"{hub.endpoint}/redirect/{name}.gguf")
        assert r.returncode == 3, r.stderr
        assert len(lines(r)) == 1 and f"redirected to {why}" in r.stderr and "refused" in r.stderr
    assert not models.exists() or listing(models) == []
    r = pull(env, models, f"{hub.endpoint}/redirect/here.gguf")
    assert r.returncode == 0, r.stderr
    assert (models / "here.gguf").read_bytes() == ggufs["Tiny-F32"]


def test_url_secrets_are_neither_recorded_nor_shown(tmp_path: Path, hub: HubServer,
                                                    ggufs: dict[str, bytes]) -> None:
    hub.plain["t.gguf"] = (ggufs["Tiny-F32"], "application/octet-stream")
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    url = f"{hub.endpoint}/plain/t.gguf"
    r = pull(env, models, f"{url}?X-Amz-Signature=s3cr3t&X-Amz-Credential=k3y")
    assert r.returncode == 0, r.stderr
    assert read_sources(models) == {"t": f"url:{url}"}
    shown = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "list",
                            "--models-dir", str(models), "--url", "http://127.0.0.1:9/v1"],
                           env=env, capture_output=True, text=True, timeout=60)
    assert f"url:{url}" in shown.stdout
    everything = r.stdout + r.stderr + shown.stdout + shown.stderr + (
        models / ".hearth-sources.json").read_text()
    assert "s3cr3t" not in everything and "k3y" not in everything
    r = pull(env, models, f"http://me:pa55@127.0.0.1:{hub.port}/plain/t.gguf", "--name", "u")
    assert r.returncode == 2, r.stderr
    assert len(lines(r)) == 1 and "user name or password" in r.stderr and "pa55" not in r.stderr


def test_on_a_terminal_the_first_line_then_a_bar(tmp_path: Path, hub: HubServer,
                                                 ggufs: dict[str, bytes]) -> None:
    hub.plain["t.gguf"] = (ggufs["Tiny-F32"], "application/octet-stream")
    hub.plain["n.gguf"] = (ggufs["Tiny-Q8_0"], "application/octet-stream")
    hub.no_length.add("n.gguf")
    models = tmp_path / "models"
    out = []
    for name in ("t", "n"):
        master, slave = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "hearth.tools.cli", "models", "pull",
                                 f"{hub.endpoint}/plain/{name}.gguf", "--models-dir",
                                 str(models)], env=env_for(tmp_path, hub), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.wait(timeout=60) == 0
        out.append(b"".join(chunks).decode())
    host = f"127.0.0.1:{hub.port}"
    assert out[0].startswith(f"t.gguf: downloading 1.1 MiB from {host}\r\n"), out[0]
    assert "1.1 MiB/1.1 MiB" in out[0] and "0/1 MiB" not in out[0]  # a decimal below 10 MiB
    assert out[1].startswith(f"n.gguf: downloading (size unknown) from {host}\r\n"), out[1]
    assert "0 B" not in out[1].splitlines()[0]


# ---- plain URLs ----------------------------------------------------------------------------


def test_plain_url(tmp_path: Path, hub: HubServer, ggufs: dict[str, bytes]) -> None:
    hub.plain["tiny.gguf"] = (ggufs["Tiny-F32"], "application/octet-stream")
    url = f"{hub.endpoint}/plain/tiny.gguf"
    models = tmp_path / "models"
    r = pull(env_for(tmp_path, hub), models, url)
    assert r.returncode == 0, r.stderr
    assert "not verified (no hash published)" in r.stderr
    assert (models / "tiny.gguf").read_bytes() == ggufs["Tiny-F32"]
    assert read_sources(models) == {"tiny": f"url:{url}"}
    r = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "list", "--json",
                        "--models-dir", str(models), "--url", "http://127.0.0.1:9/v1"],
                       env=env_for(tmp_path, hub), capture_output=True, text=True, timeout=60)
    (m,) = json.loads(r.stdout)["models"]
    assert m["id"] == "tiny" and m["source"] == f"url:{url}"


def test_html_page_and_truncated_file_are_refused(tmp_path: Path, hub: HubServer,
                                                  ggufs: dict[str, bytes]) -> None:
    hub.plain["page.gguf"] = (b"<!DOCTYPE html><html><body>Sign in</body></html>" * 50,
                              "text/html")
    hub.plain["cut.gguf"] = (ggufs["Tiny-F32"][:5000], "application/octet-stream")
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    r = pull(env, models, f"{hub.endpoint}/plain/page.gguf")
    assert r.returncode == 8 and "an HTML page" in r.stderr, r.stderr
    r = pull(env, models, f"{hub.endpoint}/plain/cut.gguf")
    assert r.returncode == 8 and "not a valid GGUF" in r.stderr, r.stderr
    assert listing(models) == []


def test_offline_and_http_elsewhere(tmp_path: Path, hub: HubServer) -> None:
    env, models = env_for(tmp_path, hub), tmp_path / "models"
    r = pull(env, models, "http://127.0.0.1:9/tiny.gguf")  # nothing listens on port 9
    assert r.returncode == 3 and "cannot reach 127.0.0.1:9" in r.stderr, r.stderr
    r = pull(env, models, "http://example.org/tiny.gguf")
    assert r.returncode == 2 and "use https" in r.stderr


# ---- a running server's models directory ----------------------------------------------------


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Server]:
    models = tmp_path_factory.mktemp("live-models")
    (models / "tiny.gguf").write_bytes(tiny_model_path.read_bytes())
    srv = Server(models, "tiny", tmp_path_factory.mktemp("home"),
                 args=("--parallel", "1", "--ctx-size", "256", "--threads", "1"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def served_ids(srv: Server) -> list[str]:
    return sorted(m["id"] for m in srv.request("GET", "/v1/models").json()["data"])


def test_pull_shows_in_a_running_server(live: Server, tmp_path: Path, hub: HubServer) -> None:
    assert served_ids(live) == ["tiny"]
    r = pull(env_for(tmp_path, hub), live.models_dir, f"{REPO}:Q8_0", "--name", "pulled")
    assert r.returncode == 0, r.stderr
    assert served_ids(live) == ["pulled", "tiny"]  # no restart
    reply = live.chat({"model": "pulled", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 3})
    assert reply.status == 200, reply.body


def test_split_model_listed_once_and_served(live: Server, tmp_path: Path, hub: HubServer,
                                            ggufs: dict[str, bytes]) -> None:
    r = pull(env_for(tmp_path, hub), live.models_dir, f"{REPO}:Split")
    assert r.returncode == 0, r.stderr
    parts = sorted(n for n in ggufs if "-of-" in n)
    assert len(parts) == 3
    for name in parts:
        assert (live.models_dir / f"{name}.gguf").read_bytes() == ggufs[name]
    assert r.stderr.count("sha256 verified") == 3
    assert "Tiny-Split" in served_ids(live)
    assert not [i for i in served_ids(live) if "-of-" in i]
    assert read_sources(live.models_dir)["Tiny-Split"] == (
        f"hf:{REPO}/split/Tiny-Split-00001-of-00003.gguf")
    reply = live.chat({"model": "Tiny-Split", "max_tokens": 4, "temperature": 0,
                       "messages": [{"role": "user", "content": "hello"}]})
    assert reply.status == 200, reply.body
    assert reply.json()["usage"]["completion_tokens"] > 0


# ---- catalogue names ---------------------------------------------------------------------------


def test_a_catalogue_name_installs_from_the_venvs_package(tmp_path: Path, hub: HubServer) -> None:
    """``hearth models pull smollm2-135m-instruct``: the catalogue's GGUF from the installed
    package (no download), verified against the pinned sha256, its source recorded; a second
    pull of it is refused with the catalogue's own advice (exit 2)."""
    models = tmp_path / "models"
    models.mkdir()
    env = env_for(tmp_path, hub)
    r = pull(env, models, "SmolLM2-135M-Instruct")  # names match case-insensitively
    assert r.returncode == 0, r.stderr
    assert "sha256 verified" in r.stdout + r.stderr
    assert listing(models) == ["smollm2-135m-instruct.gguf"]
    r = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "models", "list", "--json",
                        "--models-dir", str(models), "--url", "http://127.0.0.1:9/v1"],
                       env=env, capture_output=True, text=True, timeout=60)
    (m,) = json.loads(r.stdout)["models"]
    assert m["id"] == "smollm2-135m-instruct"
    assert m["source"] == "catalogue:smollm2-135m-instruct"
    again = pull(env, models, "smollm2-135m-instruct", "--force")
    assert again.returncode == 2 and "catalogue model" in again.stderr
    again = pull(env, models, "smollm2-135m-instruct")  # there: hashed, not only sized
    assert again.returncode == 0, again.stderr
    assert "is already installed" in again.stdout and "(sha256 verified)" in again.stdout
    target = models / "smollm2-135m-instruct.gguf"
    size = target.stat().st_size
    target.unlink()
    with target.open("wb") as f:  # zeros of the pinned size
        f.truncate(size)
    again = pull(env, models, "smollm2-135m-instruct")
    assert again.returncode == 9, again.stderr
    assert "sha256 differs" in again.stderr and "hearth models rm smollm2-135m-instruct" in (
        again.stderr)
