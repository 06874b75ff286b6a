"""TLS for ``hearth serve --tls-cert PATH --tls-key PATH``.

* :func:`check` runs in ``hearth serve`` before anything starts, so a missing, unreadable or
  mismatched file is a one-line error and exit status 2, not a traceback in a child process.
* :func:`server_context` is what the api process serves HTTPS with.
* :func:`pinned_client_context` is what hearth's own clients use to reach the server that this
  machine's settings describe: the supervisor's /health wait, and ``hearth status`` /
  ``hearth models list`` without ``--url``.
"""

from __future__ import annotations

import re
import ssl

from hearth.tools.settings import Settings

_FIRST_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


class TlsError(Exception):
    """A user-facing problem with the certificate or key; the message says which."""


def check(settings: Settings) -> None:
    """Both files or neither; when both, readable and a certificate with its own key."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        given, missing = (("--tls-cert", "--tls-key") if settings.tls_cert
                          else ("--tls-key", "--tls-cert"))
        raise TlsError(f"{given} needs {missing} as well: give both to serve HTTPS, or "
                       "neither for plain HTTP")
    if settings.tls_cert:
        server_context(settings.tls_cert, settings.tls_key)


def _read(flag: str, path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise TlsError(f"cannot read {flag} {path}: {exc.strerror or exc}") from None


def server_context(cert: str, key: str) -> ssl.SSLContext:
    _read("--tls-cert", cert)
    _read("--tls-key", key)
    asked_password = False

    def no_password() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal, from a child process.
        nonlocal asked_password
        asked_password = True
        return b""

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key, password=no_password)
    except ssl.SSLError as exc:
        if asked_password:
            raise TlsError(f"--tls-key {key} is encrypted with a passphrase; hearth needs it "
                           f"unencrypted (openssl pkey -in {key} -out plain-key.pem)") from None
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(f"--tls-key {key} is not the private key of --tls-cert {cert}") \
                from None
        if not _is_pem_certificate(cert):
            raise TlsError(f"--tls-cert {cert} is not a PEM certificate") from None
        raise TlsError(f"--tls-key {key} is not a PEM private key") from None
    return ctx


def _is_pem_certificate(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError):
        return False
    return True


def pinned_client_context(cert: str) -> ssl.SSLContext:
    """Trust exactly the first certificate of ``cert`` (the server's own) and nothing else.

    The host name is not checked: these clients connect to 127.0.0.1 or the bound address,
    while the certificate names what people on the LAN type. That is safe because the only
    trust anchor is this one certificate (not its issuer, which may have issued others): a
    server passes only by proving it holds this certificate's private key.
    """
    first = _FIRST_CERT.search(_read("--tls-cert", cert))
    if first is None:
        raise TlsError(f"--tls-cert {cert} holds no PEM certificate")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # see above; the certificate itself is still verified
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the trust anchor
    try:
        ctx.load_verify_locations(cadata=first.group(0).decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError) as exc:
        raise TlsError(f"--tls-cert {cert}: not a valid PEM certificate ({exc})") from None
    return ctx
