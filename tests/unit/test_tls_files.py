"""tools/tls.py and the TLS settings: both files or neither, clear errors, https base URL.

Certificates are made with the ``openssl`` command (no Python dependency needed)."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from hearth.tools import tls
from hearth.tools.settings import Settings, SettingsError, resolve

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def make_cert(directory: Path, name: str = "hearth", cn: str = "hearth.lan") -> tuple[str, str]:
    """A self-signed certificate and its unencrypted key, as the README shows."""
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", f"subjectAltName=DNS:{cn},DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return str(cert), str(key)


def test_a_certificate_and_its_key_make_a_server_context(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    ctx = tls.server_context(cert, key)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    tls.check(Settings(tls_cert=cert, tls_key=key))
    tls.check(Settings())  # neither: plain HTTP


@pytest.mark.parametrize(("cert_given", "message"), [
    (True, "--tls-cert needs --tls-key as well"), (False, "--tls-key needs --tls-cert as well")])
def test_one_without_the_other(tmp_path: Path, cert_given: bool, message: str) -> None:
    cert, key = make_cert(tmp_path)
    settings = Settings(tls_cert=cert) if cert_given else Settings(tls_key=key)
    with pytest.raises(tls.TlsError, match=message):
        tls.check(settings)


def test_unreadable_and_wrong_files_are_named(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    other_cert, other_key = make_cert(tmp_path, "other")
    cases = [
        (str(tmp_path / "missing.pem"), key, "cannot read --tls-cert .*missing.pem"),
        (cert, str(tmp_path / "missing.pem"), "cannot read --tls-key .*missing.pem"),
        (str(tmp_path), key, "cannot read --tls-cert"),
        (key, key, "--tls-cert .* is not a PEM certificate"),
        (cert, cert, "--tls-key .* is not a PEM private key"),
        (cert, other_key, "is not the private key of --tls-cert"),
    ]
    for c, k, message in cases:
        with pytest.raises(tls.TlsError, match=message):
            tls.server_context(c, k)


def test_an_encrypted_key_is_refused_without_a_prompt(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    locked = tmp_path / "locked.pem"
    subprocess.run(["openssl", "pkey", "-in", key, "-out", str(locked), "-aes256", "-passout",
                    "pass:letmein"], check=True, capture_output=True, timeout=60)
    with pytest.raises(tls.TlsError, match="encrypted with a passphrase"):
        tls.server_context(cert, str(locked))


def test_pinned_context_trusts_the_one_certificate(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path)
    ctx = tls.pinned_client_context(cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1
    with pytest.raises(tls.TlsError, match="holds no PEM certificate"):
        (tmp_path / "empty.pem").write_text("nothing here\n")
        tls.pinned_client_context(str(tmp_path / "empty.pem"))


def test_base_url_is_https_with_a_certificate() -> None:
    assert Settings(port=8443).base_url == "http://127.0.0.1:8443/v1"
    assert Settings(port=8443, tls_cert="c.pem", tls_key="k.pem").base_url == \
        "https://127.0.0.1:8443/v1"


def test_tls_and_log_settings_resolve() -> None:
    s = resolve(None, {"HEARTH_TLS_CERT": "~/c.pem", "HEARTH_TLS_KEY": "/k.pem",
                       "HEARTH_LOG_FORMAT": "JSON"})
    assert s.tls_cert == str(Path.home() / "c.pem") and s.tls_key == "/k.pem"
    assert s.log_format == "json"
    assert resolve(None, {}).log_format == "text"
    with pytest.raises(SettingsError, match="HEARTH_LOG_FORMAT: must be text or json"):
        resolve(None, {"HEARTH_LOG_FORMAT": "xml"})
