"""Search problems: one TOML card per problem in ``problems/``, read by code and checked when read.

A card names a template slab (metal, surface cell, layers, fixed layers, vacuum: the geometry
of a reference protocol) and the adsorbates a search places on it (composition, the height
range above the top metal layer candidates are placed in, and the closest contacts a generated
candidate may have).  ``problems/cu-s3-3x3.toml`` is the model; every field is required::

    name = "cu-s3-3x3"
    description = "..."
    protocol = "gpaw-lcao-dzp-pbe-v1"
    [slab]
    metal = "Cu"; surface_cell = [3, 3]; layers = 3; fixed_layers = 1; vacuum = 6.0
    [adsorbates]
    composition = { S = 3 }; height_range = [1.2, 3.2]
    [min_distances]
    S-S = 1.8; Cu-S = 1.8; Cu-Cu = 2.2

``surface_cell`` is ``[n, n]`` (repeats of the 1x1 cell, as above) or a 2×2 integer matrix of the 1x1
cell vectors (60° basis, :mod:`uipbench.datasets.cells`), e.g. ``[[3, 2], [-1, 2]]``: the '8' cell of the
Cu oxide.  ``composition`` may hold several elements, the slab's metal among them (``{ Cu = 5, O = 4 }``:
a Cu5O4 overlayer), and ``min_distances`` then names every pair; an empty composition (``{}``) is the
clean slab, whose one candidate is the template itself (``--budget 1`` relaxes it).  A composition that
cannot fit the cell (more adsorbates of an element, or in all, than disks of the minimum distance pack
in the cell's area, per layer of that spacing in the height range) is refused when the card is read.

A bad card is refused with the file and the field named (:class:`ProblemError`).
"""
from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from ..datasets.protocol import LATTICE_CONSTANTS, PROTOCOL_V1, ReferenceProtocol
from ..paths import repo_root

#: reference protocols a card may name (their slab geometry is what ``template()`` builds)
PROTOCOLS: dict[str, ReferenceProtocol] = {PROTOCOL_V1.name: PROTOCOL_V1}


class ProblemError(ValueError):
    """A search-problem card is missing, malformed, or inconsistent with its protocol."""


def problems_dir() -> Path:
    """``problems/`` of the checkout: the shipped search-problem cards."""
    return repo_root() / "problems"


@dataclass(frozen=True)
class SearchProblem:
    """A template slab plus the adsorbates a structure search places on it."""

    name: str
    description: str
    protocol: str
    metal: str
    #: ``(n, n)`` repeats of the 1x1 cell, or a 2×2 matrix ``((a, b), (c, d))`` of its vectors
    surface_cell: tuple[int, int] | tuple[tuple[int, int], tuple[int, int]]
    layers: int
    fixed_layers: int
    vacuum: float
    composition: tuple[tuple[str, int], ...]  # (element, count), sorted by element
    height_range: tuple[float, float]  # Å above the top metal layer
    min_distances: tuple[tuple[tuple[str, str], float], ...]  # ((a, b) sorted, Å)
    path: Path | None = field(default=None, compare=False)
    #: a slab of one's own instead of the protocol's (from Python); checked like any template
    slab: Atoms | None = field(default=None, compare=False, repr=False)

    @property
    def adsorbate_symbols(self) -> list[str]:
        return [element for element, count in self.composition for _ in range(count)]

    @property
    def n_adsorbates(self) -> int:
        return sum(count for _, count in self.composition)

    def min_distance(self, a: str, b: str) -> float:
        return dict(self.min_distances)[tuple(sorted((a, b)))]

    @property
    def is_matrix_cell(self) -> bool:
        return isinstance(self.surface_cell[0], tuple)

    @property
    def cell_matrix(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """The surface cell as a matrix of the 1x1 cell vectors (``n x n`` is ``((n, 0), (0, n))``)."""
        if self.is_matrix_cell:
            return self.surface_cell  # type: ignore[return-value]
        n, m = self.surface_cell  # type: ignore[misc]
        return ((n, 0), (0, m))

    @property
    def cell_label(self) -> str:
        """``3x3``, or the matrix ``[[3, 2], [-1, 2]]``."""
        if self.is_matrix_cell:
            return str([list(row) for row in self.surface_cell])
        return f"{self.surface_cell[0]}x{self.surface_cell[1]}"

    def template(self) -> Atoms:
        """The slab candidates are built on: protocol geometry, bottom ``fixed_layers`` held by FixAtoms."""
        if self.slab is not None:
            return self.slab.copy()
        from ase.constraints import FixAtoms

        if self.is_matrix_cell:
            from ..datasets.cells import CellShape, make_cell_slab

            slab = make_cell_slab(self.metal, CellShape(self.cell_label, self.cell_matrix),
                                  PROTOCOLS[self.protocol])
        else:
            from ..datasets.generate import make_slab

            slab = make_slab(self.metal, self.surface_cell[0], PROTOCOLS[self.protocol])
        slab.info.pop("adsorbate_info", None)
        z = slab.positions[:, 2]
        layers = np.unique(np.round(z, 3))
        fixed = z < layers[self.fixed_layers - 1] + 0.1 if self.fixed_layers else np.zeros(len(slab), bool)
        slab.set_constraint(FixAtoms(mask=fixed))
        slab.info["problem"] = self.name
        return slab

    def with_template(self, slab: Atoms) -> "SearchProblem":
        """The same problem on another slab (e.g. one relaxed elsewhere)."""
        return replace(self, slab=slab.copy())

    def to_dict(self) -> dict[str, Any]:
        """The card's content as plain data (what identifies the problem in a search's settings)."""
        data = {
            "name": self.name, "description": self.description, "protocol": self.protocol,
            "slab": {"metal": self.metal, "surface_cell": _cell_to_list(self.surface_cell), "layers": self.layers,
                     "fixed_layers": self.fixed_layers, "vacuum": self.vacuum},
            "adsorbates": {"composition": dict(self.composition), "height_range": list(self.height_range)},
            "min_distances": {f"{a}-{b}": d for (a, b), d in self.min_distances},
        }
        if self.slab is not None:
            data["template_sha256"] = _atoms_sha256(self.slab)
        return data


def _cell_to_list(cell: tuple) -> list:
    return [list(row) for row in cell] if isinstance(cell[0], tuple) else list(cell)


def capacity(d_min: float, area: float, height_range: tuple[float, float]) -> int:
    """Upper bound on how many atoms at least ``d_min`` apart fit a region of ``area`` (Å²) and
    ``height_range``: disks of diameter ``d_min`` packed hexagonally, per layer of spacing ``d_min``."""
    per_layer = math.floor(area / (math.sqrt(3.0) / 2.0 * d_min * d_min))
    low, high = height_range
    return per_layer * (1 + math.floor((high - low) / d_min))


def overfilled(problem: "SearchProblem", area: float) -> str | None:
    """Why the composition cannot fit a cell of ``area`` (Å²), or None: all adsorbates at the smallest
    adsorbate–adsorbate minimum distance, and each element at its own like-pair distance (a necessary
    condition; placement may still fail)."""
    elements = [e for e, _ in problem.composition]
    if not elements:
        return None
    d = min(problem.min_distance(a, b) for a in elements for b in elements)
    limit = capacity(d, area, problem.height_range)
    if problem.n_adsorbates > limit:
        return (f"{problem.n_adsorbates} adsorbates cannot fit the {problem.cell_label} cell: at most {limit} fit "
                f"the region {problem.height_range} Å above the surface at the minimum adsorbate distance")
    for element, count in problem.composition:
        limit = capacity(problem.min_distance(element, element), area, problem.height_range)
        if count > limit:
            return (f"{count} {element} cannot fit the {problem.cell_label} cell: at most {limit} {element} fit "
                    f"the region {problem.height_range} Å above the surface at the {element}-{element} minimum "
                    f"distance {problem.min_distance(element, element)} Å")
    return None


def _atoms_sha256(atoms: Atoms) -> str:
    payload = json.dumps([atoms.numbers.tolist(), np.round(atoms.positions, 6).tolist(),
                          np.round(atoms.cell.array, 6).tolist(), atoms.pbc.tolist()])
    return hashlib.sha256(payload.encode()).hexdigest()


# ----------------------------------------------------------------------------- reading cards

class _Fields:
    """Typed access to a card's fields; every error names the file and the field."""

    def __init__(self, raw: dict[str, Any], path: Path):
        self.raw, self.path = raw, path

    def error(self, name: str, what: str) -> ProblemError:
        return ProblemError(f"{self.path}: field '{name}': {what}")

    def get(self, name: str, kind: type | tuple[type, ...]) -> Any:
        value: Any = self.raw
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise self.error(name, "missing")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(name, f"expected {names}, got {value!r}")
        return value

    def element(self, name: str, symbol: str) -> str:
        if symbol not in atomic_numbers:
            raise self.error(name, f"{symbol!r} is not a chemical element")
        return symbol

    def number(self, name: str, positive: bool = True) -> float:
        value = float(self.get(name, (int, float)))
        if not np.isfinite(value) or (positive and value <= 0):
            raise self.error(name, f"must be a positive number, got {value}")
        return value


def _composition(f: _Fields) -> tuple[tuple[str, int], ...]:
    """The adsorbates by element (several elements, the metal among them, or none: the clean slab)."""
    raw = f.get("adsorbates.composition", dict)
    out = []
    for symbol, count in raw.items():
        f.element("adsorbates.composition", symbol)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise f.error(f"adsorbates.composition.{symbol}", f"expected a positive integer, got {count!r}")
        out.append((symbol, count))
    return tuple(sorted(out))


def _min_distances(f: _Fields, elements: list[str]) -> tuple[tuple[tuple[str, str], float], ...]:
    raw = f.get("min_distances", dict)
    out: dict[tuple[str, str], float] = {}
    for key in raw:
        parts = key.split("-")
        if len(parts) != 2:
            raise f.error(f"min_distances.{key}", "keys are element pairs like 'S-S' or 'Cu-S'")
        pair = tuple(sorted(f.element(f"min_distances.{key}", p) for p in parts))
        out[pair] = f.number(f"min_distances.{key}")
    needed = {tuple(sorted((a, b))) for a in elements for b in elements}
    missing = sorted(needed - set(out))
    if missing:
        raise f.error("min_distances", "every pair of elements needs a minimum distance; missing "
                      + ", ".join(f"{a}-{b}" for a, b in missing))
    return tuple(sorted(out.items()))


def _integer(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool)


def _surface_cell(f: _Fields, protocol: ReferenceProtocol, cell: list) -> tuple:
    """``[n, n]`` as ``(n, n)``, or a 2×2 integer matrix of positive determinant as a tuple of rows."""
    if len(cell) == 2 and all(isinstance(row, list) for row in cell):
        if not all(len(row) == 2 and all(_integer(n) for n in row) for row in cell):
            raise f.error("slab.surface_cell", f"a matrix cell is two rows of two integers, got {cell!r}")
        (a, b), (c, d) = cell
        if a * d - b * c <= 0:
            raise f.error("slab.surface_cell", f"the matrix {cell} has determinant {a * d - b * c}; a cell needs a "
                          f"positive one (a right-handed cell of at least one 1x1 cell)")
        return ((a, b), (c, d))
    if len(cell) != 2 or any(not _integer(n) or n < 1 for n in cell):
        raise f.error("slab.surface_cell", f"expected two positive integers or a 2x2 integer matrix, got {cell!r}")
    if cell[0] != cell[1]:
        raise f.error("slab.surface_cell", f"protocol {protocol.name} builds square n x n cells, or a cell given "
                      f"as a 2x2 matrix of the 1x1 cell vectors; got {cell}")
    return (cell[0], cell[1])


def _check_geometry(f: _Fields, protocol: ReferenceProtocol, metal: str, layers: int,
                    fixed: int, vacuum: float) -> None:
    if metal not in LATTICE_CONSTANTS:
        raise f.error("slab.metal", f"{metal!r} has no lattice constant in the protocol (known: "
                      f"{', '.join(LATTICE_CONSTANTS)})")
    if layers != protocol.n_metal_layers:
        raise f.error("slab.layers", f"protocol {protocol.name} has {protocol.n_metal_layers} metal layers, "
                      f"the card says {layers}")
    if not 0 <= fixed < layers:
        raise f.error("slab.fixed_layers", f"must be between 0 and {layers - 1} (some layers must move), "
                      f"got {fixed}")
    if abs(vacuum - protocol.vacuum_angstrom) > 1e-9:
        raise f.error("slab.vacuum", f"protocol {protocol.name} has {protocol.vacuum_angstrom} Å of vacuum, "
                      f"the card says {vacuum}")


def read_problem(path: Path) -> SearchProblem:
    """Read and check one card."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProblemError(f"{path}: cannot read search-problem card ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(f"{path}: not valid TOML ({exc})") from exc
    f = _Fields(raw, path)
    protocol_name = f.get("protocol", str)
    if protocol_name not in PROTOCOLS:
        raise f.error("protocol", f"unknown protocol {protocol_name!r}; known: {', '.join(PROTOCOLS)}")
    metal = f.element("slab.metal", f.get("slab.metal", str))
    cell, layers = f.get("slab.surface_cell", list), f.get("slab.layers", int)
    fixed, vacuum = f.get("slab.fixed_layers", int), f.number("slab.vacuum")
    _check_geometry(f, PROTOCOLS[protocol_name], metal, layers, fixed, vacuum)
    surface_cell = _surface_cell(f, PROTOCOLS[protocol_name], cell)
    composition = _composition(f)
    heights = f.get("adsorbates.height_range", list)
    if len(heights) != 2 or not all(isinstance(h, (int, float)) and not isinstance(h, bool) for h in heights) \
            or not 0 < heights[0] < heights[1]:
        raise f.error("adsorbates.height_range", f"expected [low, high] with 0 < low < high (Å), got {heights!r}")
    elements = sorted({metal, *(e for e, _ in composition)})
    problem = SearchProblem(
        name=f.get("name", str), description=f.get("description", str), protocol=protocol_name, metal=metal,
        surface_cell=surface_cell, layers=layers, fixed_layers=fixed, vacuum=vacuum,
        composition=composition, height_range=(float(heights[0]), float(heights[1])),
        min_distances=_min_distances(f, elements), path=path,
    )
    from ..datasets.cells import cell_area

    why = overfilled(problem, cell_area(metal, problem.cell_matrix))
    if why:
        raise f.error("adsorbates.composition", f"{why}; use a larger cell or fewer adsorbates")
    return problem


def all_problems(directory: Path | None = None) -> dict[str, SearchProblem]:
    directory = directory or problems_dir()
    problems: dict[str, SearchProblem] = {}
    for path in sorted(directory.glob("*.toml")):
        problem = read_problem(path)
        if problem.name in problems:
            raise ProblemError(f"two cards name the problem {problem.name!r}: {problems[problem.name].path} and {path}")
        problems[problem.name] = problem
    return problems


def load_problem(name_or_path: str | Path) -> SearchProblem:
    """A shipped problem by name (``cu-s3-3x3``) or any card by its path (``my/problem.toml``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ProblemError(f"{path}: no such search-problem card")
        return read_problem(path)
    candidate = problems_dir() / f"{name_or_path}.toml"
    if candidate.is_file():
        problem = read_problem(candidate)
        if problem.name != str(name_or_path):
            raise ProblemError(f"{candidate}: field 'name': {problem.name!r} differs from the file name")
        return problem
    known = ", ".join(sorted(p.stem for p in problems_dir().glob("*.toml")))
    raise ProblemError(f"unknown search problem {str(name_or_path)!r}; known: {known} (or pass a path to a .toml card)")
