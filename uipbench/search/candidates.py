"""Candidate generation under physical constraints: random starts and basin-hopping moves.

Engine choice (issue #12, item 3).  Random starts come from ase-ga's ``StartGenerator``
(PyPI ``ase-ga`` 1.0.3, LGPL-2.1+, pure Python on top of ase; it installs beside our ase 3.29
and numpy 2.4 in the main and backbone environments and takes a NumPy ``Generator``, so a
candidate is a function of its seed).  It places the adsorbates in a box above the slab and
redraws until every contact respects the minimum distances (adsorbate–adsorbate and
adsorbate–slab), and no adsorbate is isolated (each within twice a minimum distance of
something).  Basin-hopping moves are ours (a few lines on ase-ga's distance tests), since
ase-ga's own mutations are GA operators on a population, not moves of one minimum.

AGOX (the paper's framework) was not chosen: it is GPL-3.0-only (this project is MIT),
pulls ray and friends (about 1 GB) and pins ``ase==3.27.0`` and ``numpy==2.2.6``, which would
downgrade the environments every backbone runs in.  What a search needs from an engine –
constrained random starts, local relaxation with any ASE calculator, a Metropolis walk, and a
similarity rule – is small with ase and ase-ga, and stays a pure function of its seed.
Measured (``benchmarks/bench_engines.py``, ``reports/benchmarks/engines.json``): AGOX 3.11.1's random
search against this one on ``cu-s3-3x3``, CHGNet 0.3.0, 10 relaxations, 5 seeds, the same template,
height range, fixed layer and BFGS settings: success (within 0.1 eV of the best either found) AGOX 2/5,
ours 1/5 (no difference 5 seeds can show); median CPU per run ours/AGOX 1.15×.

StartGenerator tests the distances to the slab only once every adsorbate is placed, so a composition
holding the slab's own metal (a Cu_nO_m overlayer on Cu: each Cu at least 2.2 Å from every slab Cu)
is rejected nearly every draw.  Such problems are placed atom by atom instead (:meth:`CandidateGenerator.
random`, :func:`_place_sequentially`): each adsorbate, in a random order, is drawn uniformly in the same
region until it respects the minimum distances to the slab and to the adsorbates placed before it and
lies within twice a minimum distance of one of them (StartGenerator's no-isolated-atom rule); the
candidate starts over when one cannot be placed.  Their basin-hopping moves go atom by atom likewise.
Problems of other adsorbates (S on a metal) keep StartGenerator's candidates and the all-at-once moves, so
their searches are what they were.
"""
from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from .problem import SearchProblem

#: draws StartGenerator may make for one candidate before the problem counts as unplaceable (a 3x3
#: problem with 3-4 S needs about 6 ms for a candidate, a failed one about 1 s at 0.25 ms a draw)
MAX_PLACEMENT_DRAWS = 4_000
#: draws for one atom placed atom by atom before the candidate starts over
TRIES_PER_ATOM = 200
#: atom-by-atom basin-hopping moves tried before a fresh random start
MOVE_ATTEMPTS = 5
#: basin-hopping moves drawn before one that respects the constraints; then a fresh random start
MAX_MOVE_DRAWS = 200


class CandidateError(ValueError):
    """No candidate respecting the problem's constraints could be generated."""


def blmin(problem: SearchProblem) -> dict[tuple[int, int], float]:
    """The problem's minimum distances in ase-ga's form: {(Z1, Z2): Å}, both orders."""
    out = {}
    for (a, b), d in problem.min_distances:
        za, zb = atomic_numbers[a], atomic_numbers[b]
        out[(za, zb)] = out[(zb, za)] = d
    return out


def top_height(template: Atoms) -> float:
    """z of the top metal layer of the template."""
    return float(template.positions[:, 2].max())


def region_box(problem: SearchProblem, template: Atoms) -> list:
    """``[p0, [v1, v2, v3]]``: the surface cell in-plane, ``height_range`` above the top layer."""
    low, high = problem.height_range
    cell = template.cell.array
    return [np.array([0.0, 0.0, top_height(template) + low]),
            [cell[0].copy(), cell[1].copy(), np.array([0.0, 0.0, high - low])]]


class CandidateGenerator:
    """Candidates of one problem: adsorbates in the region above the template, constraints respected."""

    def __init__(self, problem: SearchProblem, template: Atoms | None = None):
        self.problem = problem
        self.template = template if template is not None else problem.template()
        self.n_slab = len(self.template)
        self.blmin = blmin(problem)
        self.z_top = top_height(self.template)

    def random(self, rng: np.random.Generator) -> Atoms:
        """A random start (ase-ga StartGenerator), deterministic for a given ``rng`` state; the template
        itself for a clean-slab problem (no adsorbates)."""
        from ase_ga.startgenerator import StartGenerator

        if not self.problem.composition:
            return self._finish(self.template.copy())
        if self.atom_by_atom:
            return self._finish(self._sequential(rng))
        blocks = [(element, count) for element, count in self.problem.composition]
        generator = StartGenerator(self.template, blocks, self.blmin, box_to_place_in=region_box(self.problem,
                                   self.template), rng=rng)
        candidate = generator.get_new_candidate(maxiter=MAX_PLACEMENT_DRAWS)
        if candidate is None:
            raise CandidateError(
                f"{self.problem.name}: could not place {_formula(self.problem)} in the region "
                f"{self.problem.height_range} Å above the surface at the minimum distances in "
                f"{MAX_PLACEMENT_DRAWS} draws; the composition does not fit this cell")
        return self._finish(candidate)

    def _sequential(self, rng: np.random.Generator) -> Atoms:
        placed = _place_sequentially(self.template, self.problem.adsorbate_symbols, self.blmin,
                                     region_box(self.problem, self.template), rng)
        if placed is None:
            raise CandidateError(
                f"{self.problem.name}: could not place {_formula(self.problem)} atom by atom in the region "
                f"{self.problem.height_range} Å above the surface at the minimum distances in "
                f"{MAX_PLACEMENT_DRAWS} draws; the composition does not fit this cell")
        return placed

    @property
    def atom_by_atom(self) -> bool:
        """Adsorbates of the slab's own metal: placed and moved one atom at a time (the module docstring)."""
        return bool(set(self.problem.adsorbate_symbols) & set(self.template.get_chemical_symbols()))

    def perturb(self, atoms: Atoms, rng: np.random.Generator, step: float) -> Atoms | None:
        """Each adsorbate displaced by a random vector in a ball of radius ``step`` (Å), kept only when
        the result respects the constraints; ``None`` after :data:`MAX_MOVE_DRAWS` failed draws.  Problems
        placed atom by atom move atom by atom too (:meth:`_perturb_sequentially`)."""
        from ase.geometry import wrap_positions

        if self.atom_by_atom:
            return self._perturb_sequentially(atoms, rng, step)
        for _ in range(MAX_MOVE_DRAWS):
            moved = atoms.copy()
            shifted = moved.positions[self.n_slab:] + _ball(rng, len(atoms) - self.n_slab, step)
            moved.positions[self.n_slab:] = wrap_positions(shifted, moved.cell, moved.pbc)
            if self.is_valid(moved):
                return self._finish(moved)
        return None

    def _perturb_sequentially(self, atoms: Atoms, rng: np.random.Generator, step: float) -> Atoms | None:
        """Each adsorbate in a random order displaced by a random vector in a ball of radius ``step``, redrawn
        (up to :data:`TRIES_PER_ATOM` times, else left in place) until it respects the height range and the
        minimum distances to every other atom where they are then; ``None`` when the result is still not
        valid after :data:`MOVE_ATTEMPTS` such moves.  (Displacing all of many adsorbates at once, as for S,
        almost never respects every contact: 0 of 10 valid Cu5O4 candidates gave a valid move in 200 draws.)"""
        from ase.geometry import get_distances, wrap_positions

        low, high = self.problem.height_range
        for _ in range(MOVE_ATTEMPTS):
            moved = atoms.copy()
            for k in self.n_slab + rng.permutation(len(atoms) - self.n_slab):
                others = np.arange(len(moved)) != k
                limits = np.array([self.blmin[(int(moved.numbers[k]), int(z))] for z in moved.numbers[others]])
                for _ in range(TRIES_PER_ATOM):
                    point = wrap_positions(moved.positions[k] + _ball(rng, 1, step), moved.cell, moved.pbc)[0]
                    _, d = get_distances(point, moved.positions[others], cell=moved.cell, pbc=moved.pbc)
                    if low <= point[2] - self.z_top <= high and np.all(d[0] >= limits):
                        moved.positions[k] = point
                        break
            if self.is_valid(moved):
                return self._finish(moved)
        return None

    def is_valid(self, atoms: Atoms) -> bool:
        """Adsorbates inside the height range and no contact closer than the minimum distances."""
        from ase_ga.utilities import atoms_too_close, atoms_too_close_two_sets

        slab, adsorbates = atoms[:self.n_slab], atoms[self.n_slab:]
        heights = adsorbates.positions[:, 2] - self.z_top
        low, high = self.problem.height_range
        if np.any(heights < low) or np.any(heights > high):
            return False
        return not (atoms_too_close(adsorbates, self.blmin) or atoms_too_close_two_sets(slab, adsorbates, self.blmin))

    def _finish(self, candidate: Atoms) -> Atoms:
        candidate.set_constraint(self.template.constraints)
        candidate.pbc = self.template.pbc
        candidate.info = {"problem": self.problem.name}
        return candidate


def _place_sequentially(template: Atoms, symbols: list[str], blmin: dict[tuple[int, int], float], box: list,
                        rng: np.random.Generator) -> Atoms | None:
    """``template`` plus ``symbols`` (in this order) placed one at a time in ``box`` (see the module
    docstring); an atom not placed in :data:`TRIES_PER_ATOM` draws starts the candidate over; None after
    :data:`MAX_PLACEMENT_DRAWS` draws in all."""
    p0, vectors = box[0], np.array(box[1])
    numbers = [atomic_numbers[s] for s in symbols]
    draws = 0
    while draws < MAX_PLACEMENT_DRAWS:
        atoms, order = template.copy(), rng.permutation(len(symbols))
        for k in order:
            point, used = _draw_point(atoms, numbers[k], blmin, p0, vectors, rng,
                                      min(TRIES_PER_ATOM, MAX_PLACEMENT_DRAWS - draws))
            draws += used
            if point is None:
                break
            atoms += Atoms(numbers=[numbers[k]], positions=[point])
        else:
            n = len(template)
            out = atoms[list(range(n)) + [n + int(j) for j in np.argsort(order)]]  # the problem's order
            out.set_tags(list(template.get_tags()) + [0] * len(symbols))
            return out
    return None


def _draw_point(atoms: Atoms, number: int, blmin: dict[tuple[int, int], float], p0: np.ndarray,
                vectors: np.ndarray, rng: np.random.Generator, tries: int) -> tuple[np.ndarray | None, int]:
    """A point of the box at least the minimum distances from every atom of ``atoms`` and within twice
    one of them, and the draws it took (None when ``tries`` draws found none)."""
    from ase.geometry import get_distances

    limits = np.array([blmin[(number, int(z))] for z in atoms.numbers])
    for draw in range(1, tries + 1):
        point = p0 + rng.random(3) @ vectors
        _, d = get_distances(point, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        if np.all(d[0] >= limits) and np.any(d[0] < 2 * limits):
            return point, draw
    return None, tries


def _ball(rng: np.random.Generator, n: int, radius: float) -> np.ndarray:
    """``n`` vectors uniform in a ball of ``radius``."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * radius * rng.random((n, 1)) ** (1.0 / 3.0)


def _formula(problem: SearchProblem) -> str:
    return " ".join(f"{count} {element}" for element, count in problem.composition)
