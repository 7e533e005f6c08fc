"""``uipbench search``: the command lives in :mod:`uipbench.search.command`, which also runs on its own
(``python -m uipbench.search.command``) when a search re-runs itself in the backbone's environment."""
from __future__ import annotations

from ..search.command import register

__all__ = ["register"]
