"""The backbone of a search, in this process, and its Δ-model checked against the loaded weights."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def backbone_and_delta(backbone_name: str, weights: str | None, delta_path: Path | None) -> tuple[Any, Any]:
    """``(backbone, Δ-model or None)``: the backbone loaded in-process (its package importable here),
    the Δ-model refused unless it was fitted on this backbone and these weights."""
    from ..adapters.registry import load_backbone
    from ..delta.io import load

    backbone = load_backbone(backbone_name, weights, in_process=True)
    if delta_path is None:
        return backbone, None
    meta = backbone.metadata()
    return backbone, load(delta_path, expect_backbone=meta.backbone, expect_sha256=meta.weights_sha256)
