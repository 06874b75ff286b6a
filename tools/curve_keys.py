"""CURVE key pairs for the links between the scheduler and remote workers, and the list of
workers' public keys the scheduler accepts.

ZeroMQ's CURVE (RFC 26, CurveZMQ) authenticates both ends of a tcp connection with Curve25519
key pairs and encrypts everything after the handshake. Keys are written in Z85 (40 characters
for 32 bytes; ZeroMQ RFC 32).

* The scheduler's pair and each remote box's pair are made on first use and kept, mode 0600,
  in the config dir: ``curve/scheduler.key`` and ``curve/worker.key``, two lines
  ``public = …`` and ``secret = …``.
* The accepted workers: the config's ``[workers]`` table (``name = "public key"``) and the
  file of ``--worker-keys-file`` (one ``name = public key`` per line, the format of the API
  key file, tools/key_file.py), which the scheduler re-reads when it changes. The name is what
  logs, /metrics and ``hearth status`` call the box.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
from hearth.tools import key_file
from hearth.tools.key_file import KeyFileError, Stamp
from hearth.tools.setting_parsers import curve_public_key
from hearth.tools.settings import default_config_dir

SCHEDULER_KEY = "scheduler.key"
WORKER_KEY = "worker.key"


class CurveKeyError(ValueError):
    """A user-facing problem with a key or a key file; never holds a secret key."""


def key_path(which: str, config_dir: Path | None = None) -> Path:
    """``which``: SCHEDULER_KEY or WORKER_KEY."""
    return (config_dir or default_config_dir()) / "curve" / which


def check_public_key(text: str, what: str = "a CURVE public key") -> str:
    """A Z85 public key (40 characters), stripped; CurveKeyError if it is not one."""
    try:
        return curve_public_key(text, what)
    except ValueError as exc:
        raise CurveKeyError(str(exc)) from None


def load_or_create(path: Path) -> tuple[str, str]:
    """(public, secret) Z85 key pair kept at ``path``, made (mode 0600, in a 0700 directory)
    when the file does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = ""
    if text:
        fields = dict(line.partition("=")[::2] for line in text.splitlines() if "=" in line)
        public = fields.get("public ", fields.get("public", "")).strip()
        secret = fields.get("secret ", fields.get("secret", "")).strip()
        try:
            check_public_key(public, f"the public key in {path}")
            check_public_key(secret, f"the secret key in {path}")
        except CurveKeyError as exc:
            raise CurveKeyError(f"{exc}; delete the file to make a new pair") from None
        os.chmod(path, 0o600)
        return public, secret
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    public_b, secret_b = zmq.curve_keypair()
    public, secret = public_b.decode(), secret_b.decode()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"public = {public}\nsecret = {secret}\n")
    os.replace(tmp, path)
    return public, secret


def public_of(secret: str) -> str:
    return zmq.curve_public(secret.encode()).decode()


def read_worker_keys(path: str) -> tuple[Stamp, dict[str, str]]:
    """The workers' key file: (its stamp, name -> public key). Raises KeyFileError naming the
    file (and line)."""
    loaded = key_file.read(path)
    out: dict[str, str] = {}
    for name, key in loaded.keys:
        try:
            out[name] = check_public_key(key, f"the key of {name!r} in {path}")
        except CurveKeyError as exc:
            raise KeyFileError(str(exc)) from None
    return loaded.stamp, out


def file_stamp(path: str) -> Stamp | None:
    try:
        return key_file.stamp_of(os.stat(path))
    except OSError:
        return None
