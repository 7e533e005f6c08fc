"""Damaged inputs: small functions that turn a good file into a bad one (wrong format, cut, NaN, keys)."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd


def cut(path: Path, fraction: float) -> Path:
    """Keep the first ``fraction`` of the bytes of ``path``."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    return path


def cut_at_line(path: Path, keep: int) -> Path:
    """Keep the first ``keep`` lines (a cut exactly at a line boundary)."""
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:keep]))
    return path


def nan_energy(path: Path) -> Path:
    """The first structure of an extxyz file gets energy=nan."""
    path.write_text(re.sub(r"energy=(-?[0-9.eE+-]+)", "energy=nan", path.read_text(), count=1))
    return path


def no_energies(path: Path) -> Path:
    path.write_text(re.sub(r" energy=(-?[0-9.eE+-]+)", "", path.read_text()))
    return path


def nan_positions(path: Path) -> Path:
    """The first atom of an extxyz file sits at (nan, nan, nan)."""
    lines = path.read_text().splitlines(keepends=True)
    lines[2] = "Cu nan nan nan " + " ".join(lines[2].split()[4:]) + "\n"
    path.write_text("".join(lines))
    return path


def garbage(path: Path, data: bytes = b"\x89PNG\r\n\x1a\n\x00\x00not this kind of file") -> Path:
    path.write_bytes(data)
    return path


def nan_values(path: Path) -> Path:
    """Every value of a results table NaN."""
    table = pd.read_csv(path)
    table["value"] = float("nan")
    table.to_csv(path, index=False)
    return path


def edit_json(path: Path, edit) -> Path:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


def copy_datasets(datasets: Path, to: Path) -> Path:
    return Path(shutil.copytree(datasets, to))
