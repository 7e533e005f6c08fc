"""Figures choose no matplotlib backend and use no pyplot: importing the report imports no matplotlib."""
from __future__ import annotations

import os
import subprocess
import sys

DRAW = """
import sys
import pandas as pd
from pathlib import Path
import uipbench.report.render
assert "matplotlib" not in sys.modules, "the report imports matplotlib only when it draws"
from uipbench.report import figures
rows = []
for seed in (0, 1):
    for model, agg, mae in (("raw", "-", 20.0 + seed), ("delta", "global", 8.0 + seed)):
        base = dict(backbone="b", system="cu-s", model=model, descriptor="embedding" if model == "delta" else "-",
                    aggregation=agg, train_size=10, seed=seed, note="")
        rows.append({**base, "metric": "energy_mae_mev_per_atom", "value": mae})
        if model == "delta":
            rows.append({**base, "metric": "log_marginal_likelihood", "value": -1.0})
results = pd.DataFrame(rows)
out = Path(sys.argv[1])
figures.heatmap(results, out)
figures.learning_curves(results, out)
import matplotlib
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules)
"""


def test_drawing_keeps_the_callers_backend_and_no_pyplot(tmp_path):
    env_backend = "svg"
    out = subprocess.run([sys.executable, "-c", DRAW, str(tmp_path)], capture_output=True, text=True, check=False,
                         env={**os.environ, "MPLBACKEND": env_backend})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [env_backend, "False"]
    assert (tmp_path / "heatmap.png").stat().st_size > 1000 and (tmp_path / "learning_curves.svg").exists()
