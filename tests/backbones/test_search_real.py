"""A real search: CHGNet 0.3.0 on cu-s3-3x3, budget 2 (slow: a few minutes on a loaded 2-core machine)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read

from uipbench.adapters.card import get_card
from uipbench.adapters.registry import importable_here, load_backbone, status
from uipbench.search import SearchSettings, load_problem, search_to_folder

NAME = "chgnet-0.3.0"
pytestmark = [pytest.mark.slow, pytest.mark.real_weights]

card = get_card(NAME)
if not importable_here(card):
    pytest.skip(f"{NAME}: chgnet is not importable in this environment", allow_module_level=True)


def test_chgnet_search_on_cu_s3_3x3(tmp_path):
    import torch

    state = status(card)
    if not state.weights_present:
        pytest.skip(f"{NAME}: weights missing ({state.hint})")
    torch.set_num_threads(1)
    backbone = load_backbone(NAME, in_process=True)
    problem = load_problem("cu-s3-3x3")
    out = tmp_path / "search"
    summary = search_to_folder(problem, backbone, budget=2, settings=SearchSettings("random", seed=0), out=out,
                               progress=False)
    assert len(summary.evaluations) == 2
    for e in summary.evaluations:
        assert e.converged and e.max_force < 0.05 and 0 < e.steps < 300
        assert -5.0 < e.energy / len(e.atoms) < -3.0  # eV/atom, a Cu slab with S
        heights = e.atoms.positions[27:, 2] - e.atoms.positions[:27, 2].max()
        assert np.all((heights > 0.8) & (heights < 3.5)), "S stays adsorbed"
    # the calculator's energy is the adapter's energy of the relaxed structure (float32 model: 1e-3 eV)
    best = summary.best
    assert backbone.embed([best.atoms]).energies[0] == pytest.approx(best.energy, abs=1e-3)
    first = read(out / "minima.extxyz", index=0)
    assert first.info["weights_sha256"] == card.weights_sha256 and first.info["backbone"] == NAME
    record = json.loads((out / "search.json").read_text())
    assert record["timing"]["cpu_seconds_per_relaxation"]["mean"] > 0
    again = search_to_folder(problem, backbone, budget=2, settings=SearchSettings("random", seed=0), out=out,
                             progress=False, figures=False)
    assert again.resumed == 2 and [m.energy for m in again.minima] == [m.energy for m in summary.minima]
