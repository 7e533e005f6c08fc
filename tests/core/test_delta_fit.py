"""``uipbench delta fit`` with the fake backbone, through the Python entry (no backbone environment needed)."""
from __future__ import annotations

import numpy as np
import pytest
from ase.io import write

import uipbench.datasets as ds
from uipbench.cache import EmbeddingCache
from uipbench.cli import main
from uipbench.delta import BackboneMismatchError, load
from uipbench.harness.fit import fit_delta, shipped_structures

from .fake_backbone import FakeBackbone


@pytest.fixture
def loads(monkeypatch, tmp_path):
    """The command's backbone is the fake one; counts how often it was loaded."""
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache"))
    calls: list[str] = []

    def fake_load_backbone(name, weights=None, **options):
        calls.append(name)
        return FakeBackbone()

    monkeypatch.setattr("uipbench.adapters.registry.load_backbone", fake_load_backbone)
    return calls


def _fit(*argv: str) -> int:
    return main(["delta", "fit", "--backbone", "chgnet-0.3.0", *argv])


def test_fit_saves_the_model_of_the_library_function(tmp_path, loads, capsys):
    out = tmp_path / "cu-s-fake"
    assert _fit("--systems", "cu-s", "--dense", "--seed", "3", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    n_atoms = sum(len(a) for a in ds.load("cu-s"))
    assert f"fitted on 60 structures, {n_atoms} atoms (cu-s: 60)" in printed and "(atomic, exact)" in printed
    assert (tmp_path / "cu-s-fake.json").is_file() and (tmp_path / "cu-s-fake.npz").is_file()
    model = load(out, expect_backbone="fake", expect_sha256="f" * 64)
    with pytest.raises(BackboneMismatchError):
        load(out, expect_backbone="chgnet-0.3.0")
    same = fit_delta(FakeBackbone(), shipped_structures(["cu-s"]), sparse=False, random_state=3,
                     cache=EmbeddingCache(tmp_path / "other-cache"))
    probe = FakeBackbone().embed(ds.load("cu-s")[:5]).structures
    np.testing.assert_allclose(model.predict(probe), same.predict(probe), rtol=0, atol=1e-10)
    assert loads == ["chgnet-0.3.0"]


def test_extra_files_and_the_sparse_default(tmp_path, loads, capsys):
    structures = ds.load("ag-s")[:6]
    write(tmp_path / "extra.extxyz", structures)
    assert _fit("--systems", "--extra", str(tmp_path / "extra.extxyz"), "--out", str(tmp_path / "m")) == 0
    printed = capsys.readouterr().out
    assert "fitted on 6 structures" in printed and "(extra.extxyz: 6)" in printed and "sparse" in printed
    assert load(tmp_path / "m.json").sparse_


def test_an_existing_model_is_kept_unless_forced(tmp_path, loads, capsys):
    out = tmp_path / "m"
    assert _fit("--systems", "cu-s", "--dense", "--out", str(out)) == 0
    before = (tmp_path / "m.npz").read_bytes(), (tmp_path / "m.json").read_text()
    assert _fit("--systems", "au-s", "--dense", "--out", str(tmp_path / "m.json")) == 2
    err = capsys.readouterr().err
    assert "a Δ-model exists at" in err and "--force" in err
    assert ((tmp_path / "m.npz").read_bytes(), (tmp_path / "m.json").read_text()) == before
    assert len(loads) == 1  # refused before the backbone was loaded
    assert _fit("--systems", "au-s", "--dense", "--out", str(out), "--force") == 0
    assert (tmp_path / "m.npz").read_bytes() != before[0]
    assert load(out).species_.tolist() == [16, 79]


def _no_energy(tmp_path):
    bare = [a.copy() for a in ds.load("cu-s")[:2]]  # copies drop the calculator: no energy
    write(tmp_path / "bare.extxyz", bare)
    return ["--extra", str(tmp_path / "bare.extxyz")]


def _empty(tmp_path):
    (tmp_path / "empty.extxyz").write_text("")
    return ["--extra", str(tmp_path / "empty.extxyz")]


def _mixed(tmp_path):
    other = ds.load("cu-s")[:2]
    for atoms in other:
        atoms.info["protocol"] = "vasp-pbe-somewhere"
    write(tmp_path / "other.extxyz", other)
    return ["--systems", "cu-s", "--extra", str(tmp_path / "other.extxyz")]


@pytest.mark.parametrize("make_argv, message", [
    (lambda tmp: ["--systems", "pt-s"], "unknown system(s) pt-s"),
    (lambda tmp: ["--extra", str(tmp / "missing.extxyz")], "does not exist"),
    (_empty, "no structures in the file"),
    (_no_energy, "2 structure(s) without a finite DFT energy"),
    (_mixed, "mixes reference protocols"),
    (lambda tmp: ["--systems"], "0 structure(s); a Δ-model needs at least 2"),
    (lambda tmp: ["--systems", "cu-s", "--seed", "-3"], "--seed must be a non-negative integer, got -3"),
])
def test_bad_input_is_refused_before_the_backbone_is_loaded(tmp_path, loads, capsys, make_argv, message):
    argv = make_argv(tmp_path)
    assert _fit(*argv, "--out", str(tmp_path / "m")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert loads == [] and not (tmp_path / "m.json").exists() and not (tmp_path / "m.npz").exists()


def test_unknown_backbone_and_output_paths(tmp_path, loads, capsys):
    assert main(["delta", "fit", "--backbone", "nonet", "--systems", "cu-s", "--out", str(tmp_path / "m")]) == 2
    assert "unknown backbone 'nonet'" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert _fit("--systems", "cu-s", "--out", str(tmp_path / "a-file" / "m")) == 2
    assert "a-file" in capsys.readouterr().err
    (tmp_path / "m.json").mkdir()
    assert _fit("--systems", "cu-s", "--out", str(tmp_path / "m")) == 2
    assert "is a folder" in capsys.readouterr().err
    assert loads == []
    assert _fit("--systems", "cu-s", "--dense", "--out", str(tmp_path / "new" / "models" / "m")) == 0
    assert load(tmp_path / "new" / "models" / "m").species_.tolist() == [16, 29]


def test_force_labels_from_the_command_line(tmp_path, loads, capsys):
    structures = ds.load("ag-s")[:6]
    write(tmp_path / "extra.extxyz", structures)
    assert _fit("--systems", "--extra", str(tmp_path / "extra.extxyz"), "--forces", "adsorbate",
                "--out", str(tmp_path / "m")) == 0
    n_s = sum(int((a.numbers == 16).sum()) for a in structures)
    assert f"{3 * n_s} force labels (adsorbate atoms)" in capsys.readouterr().out
    assert load(tmp_path / "m.json").n_force_labels_ == 3 * n_s


def test_force_labels_need_the_sparse_atomic_model(tmp_path, loads, capsys):
    assert _fit("--systems", "ag-s", "--forces", "all", "--dense", "--out", str(tmp_path / "m")) == 2
    assert "--forces fits force labels with the sparse atomic model" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()
