"""Fuzz tests share the integration tests' tiny-model server (one per module)."""

from __future__ import annotations

from integration.conftest import server, tiny_models_dir

__all__ = ["server", "tiny_models_dir"]
