"""Backbone cards, environments and the registry (no backbone package imported here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uipbench.adapters.card import CardError, WeightsError, all_cards, get_card, verify_weights
from uipbench.adapters.envs import TORCH_REQUIREMENT, env_specs
from uipbench.adapters.registry import FAMILIES, status

REQUIRED = {"chgnet-0.3.0", "chgnet-0.2.0", "sevennet-0", "sevennet-0-22may2024", "mace-mp-0-medium",
            "orb-v2-mptrj-only"}


def test_every_required_backbone_has_a_complete_card():
    cards = all_cards()
    assert REQUIRED <= set(cards)
    for card in cards.values():
        assert card.family in FAMILIES
        assert card.embedding_width > 0 and card.embedding_layer
        assert card.package and card.package_version
        assert card.training_data.get("name")
        assert card.weights.get("source") or card.weights.get("url")
        assert card.weights_env_var.startswith("UIPBENCH_WEIGHTS_")
        torch_reqs = [r for r in card.requirements if r.split("=")[0].strip() == "torch"]
        assert all(r == TORCH_REQUIREMENT for r in torch_reqs), "torch only as the suite's pin (no CUDA wheels)"


def test_mace_and_sevennet_live_in_different_environments():
    specs = env_specs()
    assert get_card("mace-mp-0-medium").environment != get_card("sevennet-0").environment
    assert any("e3nn==0.4.4" in r for r in specs[get_card("mace-mp-0-medium").environment].requirements)


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(CardError, match="unknown backbone 'chgnet-9'.*known backbones: chgnet-0.2.0"):
        get_card("chgnet-9")


def test_malformed_card_is_a_clear_error(tmp_path):
    (tmp_path / "bad.toml").write_text('name = "x"\nfamily = "chgnet"\n')
    with pytest.raises(CardError, match="lacks the field"):
        all_cards(tmp_path)
    (tmp_path / "bad.toml").write_text("name = [unclosed")
    with pytest.raises(CardError, match="cannot read backbone card"):
        all_cards(tmp_path)


def test_conflicting_requirements_in_one_environment_are_refused(tmp_path):
    src = Path(get_card("chgnet-0.3.0").path).read_text()
    (tmp_path / "a.toml").write_text(src)
    (tmp_path / "b.toml").write_text(src.replace('"chgnet-0.3.0"', '"chgnet-x"')
                                     .replace('"chgnet==0.4.2"', '"chgnet==0.4.0"'))
    with pytest.raises(CardError, match="different requirements"):
        env_specs(all_cards(tmp_path))


def test_weights_sha256_is_verified(tmp_path):
    card = get_card("chgnet-0.3.0")
    fake = tmp_path / "weights.pth"
    fake.write_bytes(b"not the weights")
    with pytest.raises(WeightsError, match="has sha256 .* the card expects d14ab7c0"):
        verify_weights(card, fake)
    with pytest.raises(WeightsError, match="not found"):
        verify_weights(card, tmp_path / "missing.pth")


def test_status_names_the_variable_for_missing_download_weights(monkeypatch, tmp_path):
    card = get_card("orb-v2-mptrj-only")
    monkeypatch.setenv(card.weights_env_var, str(tmp_path / "nothing.ckpt"))
    s = status(card)
    assert s.state == "weights missing" and card.weights_env_var in s.hint


def test_status_finds_orb_weights_in_cached_path_cache(monkeypatch, tmp_path):
    """cached_path names a cached file sha256(url)[.sha256(etag)]; status finds the newest such file."""
    import hashlib
    import os

    card = get_card("orb-v2-mptrj-only")
    monkeypatch.delenv(card.weights_env_var, raising=False)
    monkeypatch.setenv("CACHED_PATH_CACHE_ROOT", str(tmp_path))
    assert status(card).state == "weights missing"
    stem = hashlib.sha256(card.weights["source"].encode()).hexdigest()
    (tmp_path / f"{stem}.json").write_text("{}")  # cached_path's metadata file is not the weights
    assert status(card).state == "weights missing"
    for i, etag in enumerate(("a", "b")):
        path = tmp_path / f"{stem}.{hashlib.sha256(etag.encode()).hexdigest()}"
        path.write_bytes(b"weights")
        os.utime(path, (1000 + i, 1000 + i))
    assert status(card).weights_present and status(card).weights == path


def test_core_package_imports_no_backbone():
    code = ("import sys, uipbench, uipbench.cache, uipbench.datasets, uipbench.adapters.registry, uipbench.cli; "
            "bad = [m for m in ('chgnet', 'sevenn', 'mace', 'orb_models', 'e3nn', 'torch') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
