"""Speed-regression benchmarks (pytest-benchmark).  Not part of the default test run (``testpaths = tests``).

    make bench-baseline   # save baselines in reports/baselines/speed (core env + every backbone env)
    make bench-compare    # measure again and print current / baseline ratios (benchmarks/compare_speed.py)

By hand, in one environment:

    .venvs/chgnet/bin/python -m pytest benchmarks/test_speed.py -k embed --benchmark-enable \\
        --benchmark-storage=reports/baselines/speed --benchmark-save=chgnet
    .venv/bin/python -m pytest benchmarks/test_speed.py -k delta --benchmark-enable --benchmark-json=now.json

* ``test_embed``: batched embedding extraction (energies + per-atom embeddings) of six 2x2 Cu(111)+S
  slabs from the generator plan, for every backbone whose package is importable in this environment
  (real weights when present, else the card's architecture with random weights, seed 0: the same
  computation, so the timing is comparable).
* ``test_delta_fit_predict``: ``DeltaGPR`` fit (with hyperparameter optimisation, no restarts) and
  predict on synthetic embeddings (width 64, 60 training / 20 test structures of 12–16 atoms), per
  aggregation; core environment, no backbone.

One BLAS/torch thread everywhere: the machine is small and shared, and a regression test needs
stable numbers more than fast ones.  Each benchmark is the statistics of ``ROUNDS`` rounds after a
warm-up; compare_speed.py flags on the ratio of the minima (other load only adds time).
"""
from __future__ import annotations

import numpy as np
import pytest

from uipbench.adapters.card import all_cards
from uipbench.adapters.registry import importable_here

ROUNDS = 5
HERE = [name for name, card in sorted(all_cards().items()) if importable_here(card)]
_loaded: dict[str, tuple[object, bool]] = {}


def _backbone(name: str):
    """Real weights when present, else the card's architecture with random weights (no download attempt)."""
    if name not in _loaded:
        from uipbench.regress import _load_for_golden

        _loaded[name] = _load_for_golden(name, None, in_process=True, download=False)
    return _loaded[name]


@pytest.mark.parametrize("name", HERE or [pytest.param("none", marks=pytest.mark.skip(
    reason="no backbone package is importable here: run in a backbone environment (.venvs/<env>/bin/python)"))])
def test_embed(benchmark, name):
    import torch

    from uipbench.datasets.generate import plan_entry

    torch.set_num_threads(1)
    backbone, random_weights = _backbone(name)
    structures = [plan_entry("cu-s", i).atoms for i in range(6)]
    benchmark.extra_info.update(backbone=name, random_weights=random_weights, structures=len(structures),
                                atoms=sum(len(a) for a in structures), torch_threads=1)
    batch = benchmark.pedantic(backbone.embed, args=(structures,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert len(batch) == len(structures)


def _synthetic(n: int, seed: int, width: int = 64):
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(123).normal(size=width) / np.sqrt(width)
    X, y = [], []
    for _ in range(n):
        numbers = rng.choice([16, 29], size=int(rng.integers(12, 17)), p=[0.2, 0.8])
        embedding = rng.normal(size=(len(numbers), width)) + 0.3 * (numbers[:, None] == 16)
        X.append((embedding, numbers))
        y.append(float(np.sum(0.3 * np.sin(embedding @ w))) + 0.7 * np.sum(numbers == 16))
    return X, np.array(y)


@pytest.mark.parametrize("aggregation", ["global", "species", "atomic"])
def test_delta_fit_predict(benchmark, aggregation):
    from uipbench.delta import DeltaGPR

    X_train, y_train = _synthetic(60, 0)
    X_test, _ = _synthetic(20, 1)

    def fit_predict():
        model = DeltaGPR(aggregation, n_restarts=0, random_state=0, blas_threads=1)
        model.fit(X_train, y_train)
        return model.predict(X_test)

    benchmark.extra_info.update(aggregation=aggregation, train=len(X_train), test=len(X_test), width=64,
                                blas_threads=1)
    predicted = benchmark.pedantic(fit_predict, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert np.all(np.isfinite(predicted))
