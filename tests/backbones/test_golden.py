"""Every backbone importable here still reproduces its golden file ``reports/baselines/<name>.json``.

Runs in each backbone environment (``make test``), like the conformance test.  The backbone is
loaded the way its golden file was written: real weights, or (mace/orb, whose real weights are
absent here) the card's architecture with random weights from seed 0.  The structures and the
tolerances are the code's, never the file's.  No golden file, or real
weights missing for a real-weights golden file: skipped with the reason.  Rewrite a golden file
after an intended change with ``uipbench regress golden --write NAME``.
"""
from __future__ import annotations

import copy

import pytest

from uipbench.adapters.card import WeightsError, all_cards
from uipbench.adapters.registry import importable_here, load_backbone
from uipbench.regress import (GOLDEN_STRUCTURES, GoldenMismatch, RegressError, assert_matches_golden, golden_path,
                              golden_record, load_golden)

HERE = [name for name, card in sorted(all_cards().items()) if importable_here(card)]
if not HERE:
    pytest.skip("no backbone package is importable in this environment", allow_module_level=True)

_current: dict[str, tuple[dict, dict]] = {}


def golden_and_current(name: str) -> tuple[dict, dict]:
    """(golden file, the backbone's record now), evaluated once per backbone and session."""
    if name not in _current:
        path = golden_path(name)
        if not path.is_file():
            pytest.skip(f"{name}: no golden file {path}; write it with `uipbench regress golden --write {name}`")
        golden = load_golden(path)
        random = bool(golden.get("random_weights"))
        try:
            backbone = load_backbone(name, in_process=True, random_weights=random)
        except WeightsError as exc:
            pytest.skip(f"{name}: golden file made with real weights, which are absent here ({exc})")
        _current[name] = golden, golden_record(backbone, GOLDEN_STRUCTURES, random)  # the code's structures
    return _current[name]


@pytest.fixture(params=HERE)
def name(request):
    return request.param


def test_backbone_matches_its_golden_file(name):
    golden, current = golden_and_current(name)
    assert_matches_golden(golden, current, golden_path(name))


def test_an_altered_golden_file_fails_naming_backbone_structure_and_quantity(name):
    golden, current = golden_and_current(name)
    altered = copy.deepcopy(golden)
    target = altered["structures"][1]
    target["energy_ev"] += 0.05
    target["embedding"]["entries"][0][2] += 0.01
    with pytest.raises(GoldenMismatch) as info:
        assert_matches_golden(altered, current, "altered copy")
    message = str(info.value)
    assert name in message and target["id"] in message
    assert "energy" in message and f"entry [{target['embedding']['entries'][0][0]}, " in message
    others = [s["id"] for s in golden["structures"] if s["id"] != target["id"]]
    assert not any(o in message for o in others), "only the altered structure is named"


def test_golden_file_of_another_width_is_refused(name):
    golden, current = golden_and_current(name)
    other = copy.deepcopy(golden)
    other["width"] = golden["width"] + 1
    with pytest.raises(RegressError, match="width"):
        assert_matches_golden(other, current)


def test_a_loosened_tolerance_in_the_file_does_not_hide_a_5_ev_change(name):
    golden, current = golden_and_current(name)
    loosened = copy.deepcopy(golden)
    loosened["tolerances"] = {k: 1e6 for k in golden["tolerances"]}
    loosened["structures"][0]["energy_ev"] += 5.0
    with pytest.raises(GoldenMismatch) as info:
        assert_matches_golden(loosened, current, "loosened copy")
    message = str(info.value)
    assert f"structure {golden['structures'][0]['id']}: energy" in message
    assert "recorded tolerances differ from the code's" in message


def test_a_golden_file_without_structures_is_refused(name):
    golden, current = golden_and_current(name)
    with pytest.raises(RegressError, match="holds no structures"):
        assert_matches_golden({**golden, "structures": []}, current, "empty copy")
