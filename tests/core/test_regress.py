"""``uipbench regress``: paired statistics, the gate rule, bad input, the report, golden-file comparison.

No real backbone: the sweep's backbones are tests/core/fake_backbone.py variants (as in test_sweep.py).
"""
from __future__ import annotations

import copy
import json
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import uipbench.harness.data as data_module
from uipbench.adapters.base import EmbeddingMetadata, StructureEmbedding
from uipbench.cache import EmbeddingCache
from uipbench.cli import main
from uipbench.datasets.generate import plan
from uipbench.datasets.io import to_extxyz_text, with_results
from uipbench.datasets.label import generator_settings, write_card
from uipbench.datasets.protocol import PROTOCOL_V1
from uipbench.harness.metrics import Metric, registered
from uipbench.regress import (MAE, GateRule, GoldenMismatch, RegressError, all_metrics_markdown, assert_matches_golden,
                              compare, compare_golden, compared_metrics, exit_code, gate, golden_record, paired_stats,
                              run_regress)

from .fake_backbone import FakeBackbone
from .test_metric_registry import WORST

# --------------------------------------------------------------------------- paired statistics


def test_paired_stats_known_answer():
    s = paired_stats([1.0, 2.0, 3.0], [2.0, 4.0, 6.0])  # differences 1, 2, 3
    assert s.n == 3 and s.mean == pytest.approx(2.0) and s.std == pytest.approx(1.0)
    assert s.sem == pytest.approx(1 / math.sqrt(3))
    assert s.t == pytest.approx(2 * math.sqrt(3))
    assert s.p_value == pytest.approx(1 - math.sqrt(12 / 14))  # two-sided, 2 dof: 1 - t/sqrt(t²+2)
    assert s.significant  # 2 > 2 · 0.577


def test_paired_stats_matches_scipy_ttest_rel():
    rng = np.random.default_rng(0)
    b = rng.normal(10, 1, 7)
    c = b + rng.normal(0.3, 0.5, 7)
    s = paired_stats(b, c)
    ref = stats.ttest_rel(c, b)
    assert s.t == pytest.approx(ref.statistic) and s.p_value == pytest.approx(ref.pvalue)
    assert s.significant == (abs(s.mean) > 2 * s.sem)


def test_paired_stats_edge_cases():
    zero = paired_stats([1.0, 2.0], [2.0, 1.0])  # +1, -1
    assert zero.mean == 0 and not zero.significant and zero.p_value == pytest.approx(1.0)
    exact = paired_stats([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # same change on every seed
    assert exact.significant and exact.std == pytest.approx(0, abs=1e-12) and exact.p_value == 0
    one = paired_stats([1.0], [4.0])
    assert one.n == 1 and one.mean == 3 and math.isnan(one.std) and not one.significant
    nan = paired_stats([1.0, np.nan, 3.0], [2.0, 5.0, np.nan])  # only the first pair is complete
    assert nan.n == 1 and nan.mean == 1
    assert paired_stats([], []).n == 0
    with pytest.raises(ValueError, match="same length"):
        paired_stats([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- gate rule


def _results(values: dict[str, list[float]], metric: str = MAE, size: int = 8, system: str = "cu-s",
             model: str = "raw") -> pd.DataFrame:
    rows = []
    for backbone, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append(dict(backbone=backbone, system=system, model=model, descriptor="-" if model == "raw"
                             else "embedding", aggregation="-" if model == "raw" else "global",
                             train_size=size, seed=seed, metric=metric, value=v, note=""))
    return pd.DataFrame(rows)


def _code(results: pd.DataFrame, tolerance: float = 1.0, metric: str = MAE) -> int:
    return exit_code(gate(compare(results, "old", "new"), GateRule(metric, ("raw",), tolerance)))


@pytest.mark.parametrize("old, new, tolerance, expected", [
    ([10, 12, 11, 13], [13.1, 15.0, 13.9, 16.2], 1.0, 1),  # worse by ~3, tight spread: regression
    ([10, 12, 11, 13], [10.5, 12.4, 11.6, 13.5], 1.0, 0),  # worse by 0.5 (significant) but within tolerance
    ([10, 12, 11, 13], [13.1, 15.0, 13.9, 16.2], 5.0, 0),  # same change, looser tolerance
    ([10, 12, 11, 13], [20, 7, 18, 8], 1.0, 0),  # worse by 4.25 on the mean, but not significant
    ([10, 12, 11, 13], [7, 9, 8, 10], 1.0, 0),  # better
    ([10], [13], 1.0, 1),  # one seed: the mean alone decides
    ([10], [10.5], 1.0, 0),
])
def test_exit_code_rule(old, new, tolerance, expected):
    assert _code(_results({"old": old, "new": new}), tolerance) == expected


def test_gate_looks_at_the_largest_training_size_only():
    small = _results({"old": [10, 12, 11], "new": [20, 22, 21]}, size=4)  # much worse at n=4
    large = _results({"old": [10, 12, 11], "new": [10.1, 12.0, 11.2]}, size=8)  # fine at n=8
    assert _code(pd.concat([small, large])) == 0
    assert _code(pd.concat([_results({"old": [10, 12, 11], "new": [10, 12, 11]}, size=4),
                            _results({"old": [10, 12, 11], "new": [20, 22, 21]}, size=8)])) == 1


def test_higher_is_better_metrics_are_worse_when_lower():
    r = _results({"old": [0.9, 0.8, 0.85], "new": [0.5, 0.45, 0.5]}, metric="spearman_within_composition")
    table = compare(r, "old", "new")
    assert table.verdict.iloc[0] == "worse" and table.worse_by.iloc[0] == pytest.approx(0.35 + 0.05 / 3)
    assert _code(r, tolerance=0.1, metric="spearman_within_composition") == 1
    assert _code(r, tolerance=0.5, metric="spearman_within_composition") == 0


def test_compare_pairs_by_seed_and_reports_spread():
    r = _results({"old": [10, 12, 11, 13], "new": [11, 14, 12, 15]})
    row = compare(r, "old", "new").iloc[0]
    assert row.n == 4 and row.seeds == "0 1 2 3"
    assert row.diff_mean == pytest.approx(1.5) and row.diff_std == pytest.approx(np.std([1, 2, 1, 2], ddof=1))
    assert row.baseline_mean == pytest.approx(11.5) and row.candidate_mean == pytest.approx(13.0)
    assert row.verdict == "worse"


# --------------------------------------------------------------------------- bad input


def test_missing_results_are_a_clear_error():
    r = _results({"old": [10, 12], "new": [11, 13]})
    with pytest.raises(RegressError, match="no results for candidate backbone 'newer'"):
        compare(r, "old", "newer")
    with pytest.raises(RegressError, match="no results for baseline backbone 'older'"):
        compare(r, "older", "new")
    disjoint = pd.concat([_results({"old": [10, 12]}, system="cu-s"), _results({"new": [11, 13]}, system="ag-s")])
    with pytest.raises(RegressError, match="share no"):
        compare(disjoint, "old", "new")
    with pytest.raises(RegressError, match="gate metric 'n_test' .* has no direction"):
        gate(compare(r, "old", "new"), GateRule("n_test"))
    with pytest.raises(RegressError, match="unknown gate metric 'energy_mea'; choose from energy_mae"):
        GateRule("energy_mea")
    with pytest.raises(RegressError, match="tolerance must be >= 0"):
        gate(compare(r, "old", "new"), GateRule(tolerance=-1))


def test_bad_backbone_names_and_missing_results(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown backbone 'nonet'"):
        run_regress("nonet", "chgnet-0.3.0", out=tmp_path)
    with pytest.raises(RegressError, match="both 'chgnet-0.3.0'"):
        run_regress("chgnet-0.3.0", "chgnet-0.3.0", out=tmp_path)
    with pytest.raises(RegressError, match="no sweep results to compare"):
        run_regress("chgnet-0.2.0", "chgnet-0.3.0", out=tmp_path / "nothing", run=False)
    assert main(["regress", "--baseline", "nonet", "--candidate", "chgnet-0.3.0", "--out", str(tmp_path)]) == 2
    assert "unknown backbone 'nonet'" in capsys.readouterr().err
    assert main(["regress", "--candidate", "chgnet-0.3.0"]) == 2
    assert "needs --baseline" in capsys.readouterr().err
    assert main(["regress", "golden"]) == 2
    assert "exactly one of --write" in capsys.readouterr().err


# --------------------------------------------------------------------------- end to end, fake backbones


class NamedFake(FakeBackbone):
    """The fake backbone under a card's name; ``error`` adds a structure-dependent energy error."""

    def __init__(self, name: str, error: float = 0.0) -> None:
        super().__init__()
        self._name, self.error = name, error

    def metadata(self) -> EmbeddingMetadata:
        return EmbeddingMetadata(self._name, "none", "0", self._name.encode().hex().ljust(64, "0")[:64],
                                 "radial sums", 3)

    def _embed_batch(self, structures, forces):
        out = super()._embed_batch(structures, forces)
        return [StructureEmbedding(s.energy + self.error * np.sin(3 * s.embedding[:, 2]).sum(), s.embedding,
                                   s.numbers, s.forces) for s in out]


def _reference(atoms):
    emb = FakeBackbone().embed([atoms])[0]
    energy = emb.energy + 0.3 * np.tanh(emb.embedding[:, 1]).sum() - 0.2 * (atoms.numbers == 16).sum()
    out = with_results(atoms, energy, np.zeros((len(atoms), 3)))
    out.info.update(protocol=PROTOCOL_V1.name, gpaw_version="fake")
    return out


def _write_system(root, system, n):
    structures = [_reference(e.atoms) for e in plan(system, 2 * n) if e.repeat == 2][:n]
    (root / system).mkdir(parents=True, exist_ok=True)
    (root / system / "structures.extxyz").write_text(to_extxyz_text(structures))
    write_card(root / system, system, structures, PROTOCOL_V1, generator_settings(0, None))


@pytest.fixture
def datasets_root(tmp_path):
    root = tmp_path / "datasets"
    _write_system(root, "cu-s", 10)
    return root


@pytest.fixture
def fakes(monkeypatch):
    backbones = {"chgnet-0.2.0": NamedFake("chgnet-0.2.0"), "chgnet-0.3.0": NamedFake("chgnet-0.3.0", error=0.4)}
    monkeypatch.setattr(data_module, "load_backbone", lambda name, **options: backbones[name])
    return backbones


def _regress(root, tmp_path, baseline="chgnet-0.2.0", candidate="chgnet-0.3.0", **kw):
    args = dict(systems=["cu-s"], seeds=[0, 1, 2], sizes=[4, 7], aggregations=["global"], out=tmp_path / "regress",
                executor=ThreadPoolExecutor(2), progress=False, datasets_root=root,
                cache=EmbeddingCache(tmp_path / "cache"), golden_dir=tmp_path / "no-golden")
    args.update(kw)
    return run_regress(baseline, candidate, **args)


def test_regress_end_to_end_report_and_exit_code(datasets_root, fakes, tmp_path):
    result = _regress(datasets_root, tmp_path)
    out = tmp_path / "regress"
    gate_row = result.comparison[(result.comparison.model == "raw") & (result.comparison.metric == MAE)
                                 & (result.comparison.train_size == 7)].iloc[0]
    assert gate_row.n == 3 and gate_row.diff_mean > 1.0
    assert result.exit_code == (1 if gate_row.significant else 0)
    text = (out / "regress.md").read_text()
    assert "# Regression report: chgnet-0.2.0 → chgnet-0.3.0" in text and "## Gate" in text
    assert "Rule: the candidate fails when" in text and "| cu-s | raw | 7 | 3 |" in text
    assert "<table>" in (out / "regress.html").read_text()
    for ext in ("png", "svg"):
        assert (out / "figures" / f"paired.{ext}").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == result.exit_code and summary["tolerance"] == 1.0
    assert (out / "sweep" / "results.csv").exists()
    # a huge tolerance passes; the comparison is resumed, not recomputed
    assert _regress(datasets_root, tmp_path, tolerance=1e6, executor=None, workers=1).exit_code == 0
    # swapping roles turns a worse candidate into a better one: never a failure
    swapped = _regress(datasets_root, tmp_path, baseline="chgnet-0.3.0", candidate="chgnet-0.2.0",
                       out=tmp_path / "swapped")
    assert swapped.exit_code == 0
    # compare-only mode reads the same results
    again = _regress(datasets_root, tmp_path, run=False)
    pd.testing.assert_frame_equal(again.comparison, result.comparison)


def test_changed_data_recomputes_the_cached_sweep(datasets_root, fakes, tmp_path):
    _regress(datasets_root, tmp_path, seeds=[0, 1])
    _write_system(datasets_root, "cu-s", 12)  # labelling went on
    compared_only = _regress(datasets_root, tmp_path, seeds=[0, 1], run=False)
    assert any("other data than the datasets now hold" in n for n in compared_only.notes)
    result = _regress(datasets_root, tmp_path, seeds=[0, 1])
    assert any("other data" in n and "cu-s changed (10 → 12 structures)" in n for n in result.notes)
    n_test = pd.read_csv(tmp_path / "regress" / "sweep" / "results.csv").query("metric == 'n_test'").value
    assert set(n_test) == {3.0}  # every cell is from the 12-structure data


def test_a_regress_run_loads_the_data_once(datasets_root, fakes, tmp_path, monkeypatch):
    """The staleness check is the sweep's own (regress does not load every system again to ask first)."""
    import uipbench.harness.sweep as sweep_module

    calls, load = [], data_module.load_systems

    def counting(*args, **kwargs):
        calls.append(args)
        return load(*args, **kwargs)

    monkeypatch.setattr(data_module, "load_systems", counting)
    monkeypatch.setattr(sweep_module, "load_systems", counting)
    _regress(datasets_root, tmp_path, seeds=[0])
    assert len(calls) == 1


# --------------------------------------------------------------------------- a new metric (#11): the registry alone


def _within_5(split) -> float:
    return float(np.mean(np.abs(split.errors) < 5.0))


MAX_ERROR = WORST  # the harness's new metric (tests/core/test_metric_registry.py): scored, labelled, and here compared
WITHIN_5 = Metric("fraction_within_5_mev", "", "fraction within 5 meV/atom", False, _within_5)


def test_a_registered_metric_gets_its_direction_from_the_registry():
    """Nothing in regress names these metrics: compared, judged and gated by the registry's direction."""
    r = pd.concat([_results({"old": [10, 12, 11], "new": [13, 15, 14]}, metric=MAX_ERROR.name),
                   _results({"old": [0.9, 0.8, 0.85], "new": [0.5, 0.45, 0.5]}, metric=WITHIN_5.name)])
    with pytest.raises(RegressError, match="unknown gate metric"):
        GateRule(MAX_ERROR.name)
    with registered(MAX_ERROR), registered(WITHIN_5):
        table = compare(r, "old", "new").set_index("metric")
        assert table.loc[MAX_ERROR.name, "worse_by"] == pytest.approx(3.0)  # lower is better: higher is worse
        assert table.loc[WITHIN_5.name, "worse_by"] == pytest.approx(0.35 + 0.05 / 3)  # higher is better
        assert set(table.verdict) == {"worse"}
        assert _code(r, tolerance=1.0, metric=MAX_ERROR.name) == 1
        assert _code(r, tolerance=0.5, metric=WITHIN_5.name) == 0
        text = all_metrics_markdown(compare(r, "old", "new"))
        assert f"| {MAX_ERROR.name} (meV/atom) |" in text and f"| {WITHIN_5.name} |" in text
    assert MAX_ERROR.name not in compared_metrics()


def test_a_registered_metric_is_swept_compared_and_gated_end_to_end(datasets_root, fakes, tmp_path):
    with registered(MAX_ERROR):
        result = _regress(datasets_root, tmp_path, gate_metric=MAX_ERROR.name, tolerance=0.0)
    gated = result.comparison[(result.comparison.metric == MAX_ERROR.name) & (result.comparison.model == "raw")]
    assert len(gated) == 2 and (gated.n == 3).all()  # both training sizes, three seeds each
    assert result.rule.metric == MAX_ERROR.name
    text = (tmp_path / "regress" / "regress.md").read_text()
    assert f"## Gate: raw {MAX_ERROR.name} at the largest training size (meV/atom" in text
    assert f"`{MAX_ERROR.name}` is worse than the baseline's by more than 0 meV/atom" in text
    summary = json.loads((tmp_path / "regress" / "summary.json").read_text())
    assert summary["gate_metric"] == MAX_ERROR.name and {g["metric"] for g in summary["gate"]} == {MAX_ERROR.name}


# --------------------------------------------------------------------------- golden files


def _golden(backbone):
    return golden_record(backbone, [("cu-s", 0), ("ag-s", 4), ("au-s", 13)])


def test_golden_record_reproduces_itself():
    backbone = NamedFake("chgnet-0.3.0")
    golden = _golden(backbone)
    assert golden["width"] == 3 and len(golden["structures"]) == 3
    fp = golden["structures"][0]["embedding"]
    assert fp["shape"][1] == 3 and len(fp["atom_norms"]) == fp["shape"][0] and len(fp["entries"]) == 9
    assert compare_golden(golden, _golden(backbone)) == []


def test_altered_golden_file_fails_naming_backbone_structure_and_quantity(tmp_path):
    backbone = NamedFake("chgnet-0.3.0")
    path = tmp_path / "chgnet-0.3.0.json"
    path.write_text(json.dumps(_golden(backbone)))
    altered = json.loads(path.read_text())
    altered["structures"][1]["energy_ev"] += 0.01  # 10 meV off: beyond the 1 meV tolerance
    altered["structures"][2]["embedding"]["std"] *= 1.01
    path.write_text(json.dumps(altered))
    from uipbench.regress import load_golden

    with pytest.raises(GoldenMismatch) as info:
        assert_matches_golden(load_golden(path), _golden(backbone), path)
    message = str(info.value)
    sid1, sid2 = altered["structures"][1]["id"], altered["structures"][2]["id"]
    assert f"chgnet-0.3.0: structure {sid1}: energy" in message
    assert f"chgnet-0.3.0: structure {sid2}: embedding std" in message
    assert altered["structures"][0]["id"] not in message
    assert "(2 differences)" in message


def test_golden_comparison_across_backbones_or_widths_is_refused():
    golden = _golden(NamedFake("chgnet-0.3.0"))
    with pytest.raises(RegressError, match="only comparable with the backbone's own golden file"):
        compare_golden(golden, _golden(NamedFake("chgnet-0.2.0")))
    wider = copy.deepcopy(golden)
    wider["width"] = 64
    with pytest.raises(RegressError, match="width 3 but the golden file has width 64"):
        compare_golden(wider, _golden(NamedFake("chgnet-0.3.0")))
    changed = copy.deepcopy(golden)
    changed["metadata"]["weights_sha256"] = "0" * 64
    assert any("weights sha256" in p for p in compare_golden(changed, _golden(NamedFake("chgnet-0.3.0"))))


# --------------------------------------------------------------------------- golden checks that passed falsely (#13)


@pytest.fixture
def golden_file(tmp_path, monkeypatch):
    """A golden file of the fake under chgnet-0.3.0's name on the code's structures; checks load the same fake."""
    import uipbench.regress.golden as golden_module

    backbone = NamedFake("chgnet-0.3.0")
    monkeypatch.setattr(golden_module, "_load_for_golden", lambda name, random, in_process: (backbone, False))
    path = tmp_path / "chgnet-0.3.0.json"
    path.write_text(json.dumps(golden_record(backbone)))
    return path


def _edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_check_golden_uses_the_code_s_tolerances_not_the_file_s(golden_file):
    from uipbench.regress import check_golden

    assert check_golden("chgnet-0.3.0", golden_file)["backbone"] == "chgnet-0.3.0"  # the untouched file matches

    def loosen_and_shift(data):
        data["tolerances"] = {k: 1e6 for k in data["tolerances"]}  # would hide anything if it were believed
        data["structures"][0]["energy_ev"] += 5.0

    _edit(golden_file, loosen_and_shift)
    with pytest.raises(GoldenMismatch) as info:
        check_golden("chgnet-0.3.0", golden_file)
    message = str(info.value)
    assert "energy" in message and "diff -5.000e+00 eV; tolerance 0.001 eV" in message
    assert "recorded tolerances differ from the code's" in message and "energy_atol_ev 1000000.0" in message


def test_a_golden_file_whose_tolerances_alone_differ_is_reported(golden_file):
    from uipbench.regress import GOLDEN_TOLERANCES, check_golden

    _edit(golden_file, lambda data: data["tolerances"].update(energy_rtol=0.5))
    with pytest.raises(GoldenMismatch, match=r"\(1 difference\)") as info:
        check_golden("chgnet-0.3.0", golden_file)
    assert f"energy_rtol 0.5 (code {GOLDEN_TOLERANCES['energy_rtol']:g})" in str(info.value)


def test_a_golden_file_with_no_structures_fails(golden_file, capsys):
    from uipbench.regress import check_golden, load_golden

    golden = load_golden(golden_file)
    current = copy.deepcopy(golden)
    _edit(golden_file, lambda data: data.update(structures=[]))
    with pytest.raises(RegressError, match="holds no structures"):
        check_golden("chgnet-0.3.0", golden_file)
    with pytest.raises(RegressError, match="holds no structures"):
        compare_golden({**golden, "structures": []}, {**current, "structures": []})
    assert main(["regress", "golden", "--check", "chgnet-0.3.0", "--path", str(golden_file)]) == 2
    assert f"{golden_file}: holds no structures" in capsys.readouterr().err


def test_a_golden_file_with_fewer_structures_than_the_code_s_fails(golden_file):
    from uipbench.regress import check_golden

    _edit(golden_file, lambda data: data.update(structures=data["structures"][:1]))
    with pytest.raises(GoldenMismatch, match=r"\(8 differences\)") as info:
        check_golden("chgnet-0.3.0", golden_file)
    assert "evaluated now but not in the golden file" in str(info.value)


@pytest.mark.parametrize("where, key", [(None, "width"), (None, "structures"), (0, "energy_ev"),
                                        (1, "structure_hash"), ("embedding", "atom_norms")])
def test_a_missing_key_is_a_clear_error_naming_file_and_key(golden_file, capsys, where, key):
    from uipbench.regress import check_golden, load_golden

    def drop(data):
        record = data if where is None else (data["structures"][2]["embedding"] if where == "embedding"
                                             else data["structures"][where])
        del record[key]

    _edit(golden_file, drop)
    with pytest.raises(RegressError, match=f"missing key '{key}'") as info:
        load_golden(golden_file)
    assert str(info.value).startswith(str(golden_file))
    with pytest.raises(RegressError, match=f"missing key '{key}'"):
        check_golden("chgnet-0.3.0", golden_file)
    assert main(["regress", "golden", "--check", "chgnet-0.3.0", "--path", str(golden_file)]) == 2
    err = capsys.readouterr().err
    assert str(golden_file) in err and f"missing key '{key}'" in err and "Traceback" not in err


def test_a_mistyped_value_is_a_clear_error(golden_file):
    from uipbench.regress import load_golden

    _edit(golden_file, lambda data: data["structures"][0].update(energy_ev="-12.3"))
    with pytest.raises(RegressError, match=r"structures\[0\]: key 'energy_ev' should be a number, found str"):
        load_golden(golden_file)


def test_golden_path_with_several_backbones_is_an_error(golden_file, capsys):
    import uipbench.cli

    if not hasattr(uipbench.cli, "__path__"):
        pytest.skip("the --path check lives in uipbench/cli/regress.py (the cli package)")
    for flag in ("--check", "--write"):
        assert main(["regress", "golden", flag, "chgnet-0.3.0", "chgnet-0.2.0", "--path", str(golden_file)]) == 2
        assert "--path names one golden file" in capsys.readouterr().err
