"""Backbone cards, environments and the registry (no backbone package imported here)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from uipbench.adapters._common import verify_weights
from uipbench.adapters.card import CardError, WeightsError, all_cards, get_card
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
        assert card.training_data.name
        assert card.weights.source
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
    stem = hashlib.sha256(card.weights.source.encode()).hexdigest()
    (tmp_path / f"{stem}.json").write_text("{}")  # cached_path's metadata file is not the weights
    assert status(card).state == "weights missing"
    for i, etag in enumerate(("a", "b")):
        path = tmp_path / f"{stem}.{hashlib.sha256(etag.encode()).hexdigest()}"
        path.write_bytes(b"weights")
        os.utime(path, (1000 + i, 1000 + i))
    assert status(card).weights_present and status(card).weights == path


def _imported(modules: str, prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of ``prefixes`` that importing ``modules`` (comma-separated) loads."""
    code = f"import sys, {modules}; print(' '.join(m for m in sys.modules if m.startswith({prefixes!r})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_core_package_imports_no_backbone():
    loaded = _imported("uipbench, uipbench.cache, uipbench.datasets, uipbench.adapters.registry, uipbench.cli",
                       ("chgnet", "sevenn", "mace", "orb_models", "e3nn", "torch"))
    assert not loaded


def test_delta_imports_nothing_from_the_adapters():
    assert not _imported("uipbench.delta.aggregation, uipbench.delta.gpr, uipbench.delta.io, uipbench.delta.calculator",
                         ("uipbench.adapters",))


def _card_copy(tmp_path: Path, name: str, edit=lambda text: text) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(edit(Path(get_card(name).path).read_text()))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("width = 64", 'width = "64"'), r"chgnet-0.3.0.toml: field embedding.width must be of type int"),
    (lambda t: t.replace("sha256 = ", "sha265 = "), r"chgnet-0.3.0.toml: unknown field weights.sha265"),
    (lambda t: t.replace('requirements = ["chgnet==0.4.2"]', 'requirements = "chgnet==0.4.2"'),
     r"field environment.requirements must be a list"),
    (lambda t: t.replace("[embedding]", "[embeding]"), r"unknown table \[embeding\]"),
    (lambda t: t.replace("cutoff = 5.0", "cutoff = true"), r"field cutoff must be of type float"),
], ids=["wrong-type", "unknown-field", "not-a-list", "unknown-table", "bool-for-float"])
def test_card_schema_is_checked_when_read_naming_file_and_field(tmp_path, edit, message):
    _card_copy(tmp_path, "chgnet-0.3.0", edit)
    with pytest.raises(CardError, match=message):
        all_cards(tmp_path)


def test_architecture_table_is_typed_and_required_for_mace(tmp_path):
    arch = get_card("mace-mp-0-medium").architecture
    assert arch.radial_MLP == (64, 64, 64) and arch.r_max == 6.0 and isinstance(arch.num_interactions, int)
    _card_copy(tmp_path, "mace-mp-0-medium", lambda t: t.replace("num_interactions = 2\n", ""))
    with pytest.raises(CardError, match="mace-mp-0-medium.toml: backbone card lacks the field "
                                        "architecture.num_interactions"):
        all_cards(tmp_path)


def test_cards_are_parsed_once_per_process_and_again_when_a_file_changes(tmp_path, monkeypatch):
    import os

    from uipbench.adapters import card as card_module

    path = _card_copy(tmp_path, "chgnet-0.3.0")
    reads = []
    original = card_module.BackboneCard.from_file
    monkeypatch.setattr(card_module.BackboneCard, "from_file",
                        classmethod(lambda cls, p: reads.append(p) or original(p)))
    first = get_card("chgnet-0.3.0", tmp_path)
    assert get_card("chgnet-0.3.0", tmp_path) is first and all_cards(tmp_path)["chgnet-0.3.0"] is first
    assert len(reads) == 1
    path.write_text(path.read_text().replace("width = 64", "width = 65"))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert get_card("chgnet-0.3.0", tmp_path).embedding_width == 65 and len(reads) == 2


def test_every_family_has_the_one_load_signature():
    import importlib

    from uipbench.adapters.conformance import check_load_signature

    for module_name, _ in FAMILIES.values():
        check_load_signature(importlib.import_module(module_name).load)
    modules = "uipbench.adapters.chgnet, uipbench.adapters.sevennet, uipbench.adapters.mace, uipbench.adapters.orb"
    assert not _imported(modules, ("torch",)), "a family module imports torch at import"


def test_a_precision_a_family_cannot_honour_is_a_clear_error():
    from uipbench.adapters._common import check_precision
    from uipbench.adapters.errors import PrecisionError

    assert check_precision("mace", None, ("float64",)) == "float64"
    assert check_precision("chgnet", "float64", ("float32", "float64")) == "float64"
    with pytest.raises(PrecisionError, match="mace backbones cannot run in precision 'float32'"):
        check_precision("mace", "float32", ("float64",))
    with pytest.raises(PrecisionError, match="unknown precision 'float16'"):
        check_precision("chgnet", "float16", ("float32", "float64"))
