"""--trust-unpinned-weights reaches the adapter's loader from `embed` and `sweep` (default: not trusted)."""
from __future__ import annotations

import pytest
from ase.io import write

from uipbench.cli import main


class _Stop(Exception):
    """Raised by the fake loader: the test only needs the options the command passed."""


@pytest.fixture
def seen(monkeypatch):
    calls: list[dict] = []

    def fake_load_backbone(name, weights=None, **options):
        calls.append(options)
        raise _Stop(name)

    monkeypatch.setattr("uipbench.adapters.registry.load_backbone", fake_load_backbone)
    monkeypatch.setattr("uipbench.harness.data.load_backbone", fake_load_backbone)
    return calls


@pytest.mark.parametrize("flag", [[], ["--trust-unpinned-weights"]])
def test_embed_passes_the_trust_flag(tmp_path, seen, slab_structures, flag):
    write(tmp_path / "in.extxyz", slab_structures[:1])
    with pytest.raises(_Stop):
        main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(tmp_path / "in.extxyz"),
              "--output", str(tmp_path / "out.npz"), "--no-cache", *flag])
    assert seen[-1]["trust_unpinned_weights"] is bool(flag)


@pytest.mark.parametrize("flag", [[], ["--trust-unpinned-weights"]])
def test_sweep_passes_the_trust_flag(tmp_path, seen, flag):
    with pytest.raises(_Stop):
        main(["sweep", "--backbones", "chgnet-0.3.0", "--systems", "cu-s", "--sizes", "5", "--seeds", "0",
              "--descriptors", "embedding", "--out", str(tmp_path / "run"), *flag])
    assert seen[-1]["trust_unpinned_weights"] is bool(flag)
