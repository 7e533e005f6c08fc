"""The ``uipbench`` command, including a backbone run through its worker environment."""
from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.io import write

from uipbench.adapters.base import BackboneInputError
from uipbench.adapters.card import get_card
from uipbench.adapters.envs import env_for, is_ready
from uipbench.cli import main

CHGNET_ENV_READY = is_ready(env_for(get_card("chgnet-0.3.0")))
needs_chgnet_env = pytest.mark.skipif(not CHGNET_ENV_READY,
                                      reason="the chgnet environment is not created (run `uipbench env sync chgnet`)")


def test_unknown_backbone_exits_2_with_a_clear_message(tmp_path, capsys, slab_structures):
    write(tmp_path / "in.extxyz", slab_structures)
    code = main(["embed", "--backbone", "nonet", "--input", str(tmp_path / "in.extxyz"),
                 "--output", str(tmp_path / "out.npz")])
    assert code == 2
    assert "unknown backbone 'nonet'" in capsys.readouterr().err


def test_unknown_system_exits_2(capsys):
    assert main(["dataset", "info", "pt-s"]) == 2
    assert "unknown system 'pt-s'" in capsys.readouterr().err


def test_empty_input_file_is_an_error(tmp_path, capsys):
    (tmp_path / "empty.extxyz").write_text("")
    assert main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(tmp_path / "empty.extxyz"),
                 "--output", str(tmp_path / "o.npz")]) == 2
    assert "no structures" in capsys.readouterr().err


@needs_chgnet_env
def test_embed_through_the_worker_writes_safe_arrays(tmp_path, slab_structures):
    write(tmp_path / "in.extxyz", slab_structures[:2])
    out = tmp_path / "out.npz"
    assert main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(tmp_path / "in.extxyz"),
                 "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    with np.load(out, allow_pickle=False) as data:
        n_atoms = sum(len(a) for a in slab_structures[:2])
        assert data["energy"].shape == (2,)
        assert data["embedding"].shape == (n_atoms, 64) and data["embedding"].dtype == np.float64
        assert np.array_equal(data["numbers"], np.concatenate([a.numbers for a in slab_structures[:2]]))
        assert np.array_equal(np.bincount(data["structure_index"]), [len(a) for a in slab_structures[:2]])
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backbone"] == "chgnet-0.3.0" and meta["width"] == 64
    assert meta["weights_sha256"] == get_card("chgnet-0.3.0").weights_sha256


@needs_chgnet_env
def test_worker_input_errors_arrive_as_backbone_input_errors():
    from uipbench.adapters.registry import load_backbone

    backbone = load_backbone("chgnet-0.3.0", in_process=False)
    bad = Atoms("CuOg", positions=[[0, 0, 0], [0, 0, 2.1]], cell=[8, 8, 8], pbc=True)
    with pytest.raises(BackboneInputError, match="Og not supported by backbone chgnet-0.3.0"):
        backbone.embed([bad])
    with pytest.raises(BackboneInputError, match="empty structure"):
        backbone.embed([Atoms(cell=[5, 5, 5], pbc=True)])
