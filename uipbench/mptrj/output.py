"""Output of a count: the tidy table, the files written (CSV, parquet, metadata, figures), the summary."""
from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .records import UNITS, CountResult, CountSpec, Tally

TABLE_COLUMNS = ["center", "category", "neighbor", "unit", "count"]


def tally_to_table(tally: Tally, spec: CountSpec) -> Any:
    """Tidy table (pandas): one row per centre, category, neighbour and unit (zeros included)."""
    import pandas as pd

    keys = spec.expected_keys()
    extra = sorted(set(tally.atoms) - set(keys))
    rows = []
    for key in keys + extra:
        center, category, neighbor = key
        values = {"atoms": tally.atoms.get(key, 0), "frames": tally.frames.get(key, 0),
                  "materials": tally.materials.get(key, 0)}
        for unit in UNITS:
            rows.append({"center": center, "category": category, "neighbor": neighbor, "unit": unit,
                         "count": int(values[unit])})
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _have_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def _write_figures(result: CountResult, out: Path, stem: str) -> dict[str, Path]:
    from .figures import plot_counts

    written: dict[str, Path] = {}
    for center in result.metadata.centers:
        paths = plot_counts(result.table, out / f"{stem}_{center}", center=center,
                            title=f"{Path(result.metadata.input_path).name}: {center} environments within "
                                  f"{result.metadata.cutoff_angstrom:g} Å")
        written[f"figure_{center}_png"], written[f"figure_{center}_svg"] = paths
    return written


def write_outputs(result: CountResult, out_dir: str | os.PathLike, stem: str = "mptrj_envs",
                  figure: bool = True) -> dict[str, Path]:
    """Write the table (CSV, and parquet when pyarrow is installed), the metadata JSON and the figure."""
    from .._atomic import write_atomic, write_json_atomic, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {"csv": out / f"{stem}.csv"}
    write_text_atomic(written["csv"], result.table.to_csv(index=False))
    if _have_pyarrow():
        written["parquet"] = out / f"{stem}.parquet"
        write_atomic(written["parquet"], lambda fh: result.table.to_parquet(fh, index=False), mode="wb")
    if figure:
        written.update(_write_figures(result, out, stem))
    written["metadata"] = out / f"{stem}.meta.json"
    meta = asdict(result.metadata)
    meta["outputs"] = {k: str(v) for k, v in written.items()}
    meta["parquet"] = "written" if "parquet" in written else "skipped: pyarrow is not installed"
    write_json_atomic(written["metadata"], meta)
    return written


def format_summary(result: CountResult) -> str:
    """Human-readable summary: counts per category in the three units, then the skips."""
    meta = result.metadata
    lines = [f"{meta.input_path} ({meta.format}, {meta.input_bytes} bytes): {meta.frames_read} frames read, "
             f"{meta.frames_counted} counted, {meta.frames_skipped} skipped; "
             f"{meta.materials_read} materials; cutoff {meta.cutoff_angstrom:g} Å; "
             f"{meta.elapsed_s:.1f} s ({meta.frames_per_s:g} frames/s, {meta.workers} worker(s))"]
    wide = result.table.pivot_table(index=["center", "category", "neighbor"], columns="unit", values="count",
                                    sort=False).reset_index()
    lines.append(f"{'center':<7}{'category':<18}{'neighbor':<9}{'atoms':>12}{'frames':>12}{'materials':>12}")
    for row in wide.itertuples(index=False):
        lines.append(f"{row.center:<7}{row.category:<18}{row.neighbor:<9}{int(row.atoms):>12}{int(row.frames):>12}"
                     f"{int(row.materials):>12}")
    if meta.material_id_fallbacks:
        lines.append(f"note: {meta.material_id_fallbacks} frame(s) had no material id in their info "
                     f"({meta.material_id_source}); each counts as its own material")
    if meta.frames_skipped:
        lines.append(f"skipped {meta.frames_skipped} frame(s):")
        lines.extend(f"  {n:>10}  {reason}" for reason, n in meta.skipped_by_reason.items())
    return "\n".join(lines)
