"""The generated API key: made on first start when none is configured, kept with mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hearth.tools.settings import default_config_dir

KEY_FILE = "api_key"


def key_path(config_dir: Path | None = None) -> Path:
    return (config_dir or default_config_dir()) / KEY_FILE


def load_or_create_key(config_dir: Path | None = None, *, renew: bool = False) -> str:
    path = key_path(config_dir)
    if not renew:
        try:
            key = path.read_text().strip()
            if key:
                os.chmod(path, 0o600)
                return key
        except FileNotFoundError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = "hearth-" + secrets.token_urlsafe(32)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    os.replace(tmp, path)
    return key
