"""Where things live: the checkout root and every ``UIPBENCH_*`` override, in one place.

| variable | default | what |
|---|---|---|
| ``UIPBENCH_BACKBONES_DIR`` | ``<root>/backbones`` | backbone cards |
| ``UIPBENCH_ENVS_DIR`` | ``<root>/.venvs`` | per-backbone virtual environments |
| ``UIPBENCH_CACHE_DIR`` | ``<root>/.cache/embeddings`` | embedding cache |
| ``UIPBENCH_GPAW_PYTHON`` | ``/usr/bin/python3`` | the interpreter that imports GPAW (Debian's) |

Each function reads the environment when called (no state at import), so a test or a
user can point one at another folder for one call.
"""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The source checkout (``uipbench/`` lives directly below it)."""
    return Path(__file__).resolve().parents[1]


def _override(variable: str, default: Path) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else default


def cards_dir() -> Path:
    return _override("UIPBENCH_BACKBONES_DIR", repo_root() / "backbones")


def envs_dir() -> Path:
    return _override("UIPBENCH_ENVS_DIR", repo_root() / ".venvs")


#: the variable that points the embedding cache elsewhere (read by :func:`cache_dir`)
CACHE_VARIABLE = "UIPBENCH_CACHE_DIR"


def cache_dir() -> Path:
    return _override(CACHE_VARIABLE, repo_root() / ".cache" / "embeddings")


def datasets_dir() -> Path:
    """``datasets/`` of the checkout, where the shipped data lives."""
    return repo_root() / "datasets"


def reports_dir() -> Path:
    return repo_root() / "reports"


def golden_dir() -> Path:
    """Golden files of the backbones (``reports/baselines``)."""
    return reports_dir() / "baselines"


def gpaw_python() -> str:
    return os.environ.get("UIPBENCH_GPAW_PYTHON", "/usr/bin/python3")
