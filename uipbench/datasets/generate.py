"""Structure generator for S adatoms on fcc(111) slabs (reference protocol v1 geometry).

The generator is a deterministic *plan*: entry ``i`` of a system's plan is built
from a random generator seeded by ``(seed, system, i)`` alone, so extending a
dataset never changes the structures already planned.  Entries come in blocks of
three that share one composition and one motif (``adatom``, ``dispersed``,
``dimer``, ``cluster``) but differ in arrangement and variant:

* ``ideal``     – S at high-symmetry sites at typical heights, metal lightly rattled;
* ``distorted`` – positions rattled and S heights drawn from 1.3–2.5 Å;
* ``relaxed``   – the ideal geometry relaxed with a cheap backbone first.

Same composition at many arrangements is what a structure search must rank,
which is where backbones mis-order S–S against metal–S motifs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.build import fcc111
from ase.constraints import FixAtoms

from ..harness.metrics import S_S_BOND  # S–S distance (Å) below which two S atoms count as bonded
from .protocol import LATTICE_CONSTANTS, PROTOCOL_V1, ReferenceProtocol, system_metal

#: (surface cell repeat, number of S, motif); a block of three entries each.
BLOCK_SCHEDULE: tuple[tuple[int, int, str], ...] = (
    (2, 2, "dimer"),
    (2, 2, "dispersed"),
    (3, 2, "dimer"),
    (3, 2, "dispersed"),
    (2, 3, "cluster"),
    (2, 3, "dimer"),
    (3, 3, "dispersed"),
    (3, 3, "cluster"),
    (2, 4, "cluster"),
    (2, 1, "adatom"),
    (3, 4, "dimer"),
    (2, 2, "dimer"),
    (3, 4, "dispersed"),
    (3, 1, "adatom"),
    (2, 3, "dispersed"),
    (3, 3, "dimer"),
    (3, 4, "cluster"),
    (2, 1, "adatom"),
)
VARIANTS: tuple[str, ...] = ("ideal", "distorted", "relaxed")
BLOCK_SIZE = len(VARIANTS)

S_HEIGHT_RANGE = (1.3, 2.5)  # Å above the top metal layer, for distorted snapshots
S_S_BOND_RANGE = (1.95, 2.15)  # Å, S–S bond lengths in dimers and clusters
MIN_DISPERSED_SEPARATION = 2.5  # Å: dispersed S atoms are not bonded to each other
MIN_MOTIF_SEPARATION = 2.35  # Å (in-plane): an extra adatom beside an S_n motif is not bonded to it
_SITE_HEIGHT = {"fcc": 1.75, "hcp": 1.75, "bridge": 1.95, "ontop": 2.15}
_SITE_WEIGHTS = {"fcc": 0.35, "hcp": 0.35, "bridge": 0.15, "ontop": 0.15}


@dataclass(frozen=True)
class PlanEntry:
    """One planned structure before labelling."""

    plan_id: str
    system: str
    index: int
    repeat: int
    n_sulfur: int
    motif: str
    variant: str
    atoms: Atoms

    @property
    def needs_relaxation(self) -> bool:
        return self.variant == "relaxed"


def make_slab(metal: str, repeat: int, protocol: ReferenceProtocol = PROTOCOL_V1) -> Atoms:
    """fcc(111) slab of the protocol: 3 layers, 6 Å vacuum each side, pbc=(T, T, F)."""
    slab = fcc111(
        metal,
        size=(repeat, repeat, protocol.n_metal_layers),
        a=LATTICE_CONSTANTS[metal],
        vacuum=protocol.vacuum_angstrom,
        periodic=False,
    )
    slab.pbc = protocol.pbc
    return slab


def surface_sites(slab: Atoms) -> dict[str, np.ndarray]:
    """In-plane (x, y) coordinates of ontop, bridge, fcc and hcp sites of a 3-layer fcc(111) slab."""
    z = slab.positions[:, 2]
    layers = np.unique(np.round(z, 3))
    top, second, third = (slab.positions[np.isclose(z, layer, atol=1e-2)] for layer in layers[::-1][:3])
    ontop = top[:, :2]
    hcp = second[:, :2]  # hcp hollows sit above second-layer atoms
    fcc = third[:, :2]  # fcc hollows sit above third-layer atoms
    cell2d = slab.cell.array[:2, :2]
    bridges = []
    nn = _nearest_neighbour_distance(slab)
    for i, a in enumerate(ontop):
        for j, b in enumerate(ontop):
            for shift in _shifts():
                d = b + shift @ cell2d - a
                if abs(np.linalg.norm(d) - nn) < 0.05 and (j, tuple(shift)) > (i, (0, 0)):
                    bridges.append(a + 0.5 * d)
    bridge = _unique_wrapped(np.array(bridges), cell2d)
    return {"fcc": fcc, "hcp": hcp, "bridge": bridge, "ontop": ontop}


def _nearest_neighbour_distance(slab: Atoms) -> float:
    """Metal–metal nearest-neighbour distance of the slab's fcc lattice (Å)."""
    metal = slab.get_chemical_symbols()[0]
    return LATTICE_CONSTANTS[metal] / np.sqrt(2.0)


def _shifts() -> list[np.ndarray]:
    return [np.array([i, j]) for i in (-1, 0, 1) for j in (-1, 0, 1)]


def _unique_wrapped(points: np.ndarray, cell2d: np.ndarray) -> np.ndarray:
    frac = np.linalg.solve(cell2d.T, points.T).T % 1.0
    frac = np.round(frac, 4) % 1.0
    _, idx = np.unique(frac, axis=0, return_index=True)
    return (frac[np.sort(idx)]) @ cell2d


def _min_image_distance(a: np.ndarray, b: np.ndarray, cell2d: np.ndarray) -> float:
    d = b - a
    frac = np.linalg.solve(cell2d.T, d)
    frac -= np.round(frac)
    return float(np.linalg.norm(frac @ cell2d))


def _pick_sites(rng: np.random.Generator, sites: dict[str, np.ndarray], n: int, cell2d: np.ndarray,
                min_sep: float) -> list[tuple[str, np.ndarray]]:
    kinds = list(_SITE_WEIGHTS)
    probs = np.array([_SITE_WEIGHTS[k] for k in kinds])
    for _ in range(2000):
        chosen: list[tuple[str, np.ndarray]] = []
        for _ in range(n):
            kind = kinds[rng.choice(len(kinds), p=probs)]
            xy = sites[kind][rng.integers(len(sites[kind]))]
            if all(_min_image_distance(xy, other, cell2d) >= min_sep for _, other in chosen):
                chosen.append((kind, xy))
        if len(chosen) == n:
            return chosen
    raise RuntimeError(f"could not place {n} S atoms {min_sep} Å apart in this cell")


def _top_z(slab: Atoms) -> float:
    return float(slab.positions[:, 2].max())


def _cluster_offsets(rng: np.random.Generator, n: int) -> np.ndarray:
    """In-plane offsets of an S_n motif (dimer, bent trimer or zig-zag tetramer), slightly tilted."""
    bond = rng.uniform(*S_S_BOND_RANGE)
    angle = rng.uniform(95.0, 125.0) * np.pi / 180.0
    points = [np.zeros(3), np.array([bond, 0.0, 0.0])]
    direction = np.array([1.0, 0.0, 0.0])
    sign = 1.0
    while len(points) < n:
        sign = -sign
        rot = sign * (np.pi - angle)
        c, s = np.cos(rot), np.sin(rot)
        direction = np.array([c * direction[0] - s * direction[1], s * direction[0] + c * direction[1], 0.0])
        points.append(points[-1] + direction * rng.uniform(*S_S_BOND_RANGE))
    pts = np.array(points)
    pts -= pts.mean(axis=0)
    phi = rng.uniform(0, 2 * np.pi)
    rotz = np.array([[np.cos(phi), -np.sin(phi), 0], [np.sin(phi), np.cos(phi), 0], [0, 0, 1]])
    pts = pts @ rotz.T
    tilt = rng.normal(0.0, 0.15, size=n)  # small out-of-plane tilt (Å)
    pts[:, 2] += tilt - tilt.mean()
    return pts


def _sulfur_positions(rng: np.random.Generator, slab: Atoms, n_sulfur: int, motif: str) -> np.ndarray:
    sites = surface_sites(slab)
    cell2d = slab.cell.array[:2, :2]
    z0 = _top_z(slab)
    metal = slab.get_chemical_symbols()[0]
    height_shift = 0.0 if metal == "Cu" else 0.2
    if motif in ("adatom", "dispersed"):
        chosen = _pick_sites(rng, sites, n_sulfur, cell2d, MIN_DISPERSED_SEPARATION)
        return np.array([[xy[0], xy[1], z0 + _SITE_HEIGHT[k] + height_shift] for k, xy in chosen])
    size = 2 if motif == "dimer" else min(n_sulfur, 4)
    centre_kind, centre = _pick_sites(rng, sites, 1, cell2d, 0.0)[0]
    group = _cluster_offsets(rng, size)
    group[:, :2] += centre
    group[:, 2] += z0 + 2.0 + height_shift
    positions = list(group)
    rest = n_sulfur - size
    if rest > 0:
        for _ in range(2000):
            extra = _pick_sites(rng, sites, rest, cell2d, MIN_DISPERSED_SEPARATION)
            if all(_min_image_distance(xy, p[:2], cell2d) >= MIN_MOTIF_SEPARATION
                   for _, xy in extra for p in group):
                positions += [[xy[0], xy[1], z0 + _SITE_HEIGHT[k] + height_shift] for k, xy in extra]
                break
        else:
            raise RuntimeError("could not place the remaining S atoms next to the S motif")
    return np.array(positions)


#: closest contacts (Å) a generated geometry may have; closer ones are redrawn
MIN_CONTACT = {"S-S": 1.8, "M-S": 1.75, "M-M": 2.2}


def _is_physical(atoms: Atoms, n_metal: int, motif: str) -> bool:
    """No too-close contacts, and the motif survives: S–S motifs keep a bond, dispersed S stay unbonded."""
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    metal, sulfur = slice(0, n_metal), slice(n_metal, len(atoms))
    closest_ss = d[sulfur, sulfur].min(initial=np.inf)
    motif_ok = closest_ss < S_S_BOND if motif in ("dimer", "cluster") else closest_ss >= S_S_BOND
    return bool(
        closest_ss >= MIN_CONTACT["S-S"]
        and d[metal, sulfur].min(initial=np.inf) >= MIN_CONTACT["M-S"]
        and d[metal, metal].min() >= MIN_CONTACT["M-M"]
        and motif_ok
    )


def _rng(seed: int, system: str, index: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}:{system}:{index}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def plan_entry(system: str, index: int, seed: int = 0, protocol: ReferenceProtocol = PROTOCOL_V1) -> PlanEntry:
    """Entry ``index`` of the generator plan of ``system`` (deterministic)."""
    metal = system_metal(system)
    block, position = divmod(index, BLOCK_SIZE)
    repeat, n_sulfur, motif = BLOCK_SCHEDULE[block % len(BLOCK_SCHEDULE)]
    variant = VARIANTS[position]
    rng = _rng(seed, system, index)
    slab = make_slab(metal, repeat, protocol)
    slab.info.pop("adsorbate_info", None)
    n_metal = len(slab)
    for _ in range(200):
        sulfur = _sulfur_positions(rng, slab, n_sulfur, motif)
        atoms = slab + Atoms("S" * n_sulfur, positions=sulfur)
        atoms.cell = slab.cell
        atoms.pbc = protocol.pbc
        if variant == "ideal":
            atoms.positions[:n_metal] += rng.normal(0.0, 0.03, size=(n_metal, 3))
        elif variant == "distorted":
            atoms.positions += rng.normal(0.0, 0.1, size=atoms.positions.shape)
            heights = rng.uniform(*S_HEIGHT_RANGE, size=n_sulfur)
            atoms.positions[n_metal:, 2] = _top_z(slab) + heights
        if _is_physical(atoms, n_metal, motif):
            break
    else:
        raise RuntimeError(f"no physical geometry found for plan entry {index} of {system}")
    bottom = slab.positions[:, 2] < slab.positions[:, 2].min() + 0.1
    atoms.set_constraint(FixAtoms(mask=np.concatenate([bottom, np.zeros(n_sulfur, bool)])))
    plan_id = f"{system}-s{seed}-{index:05d}"
    atoms.info.update(plan_id=plan_id, system=system, motif=motif, variant=variant,
                      surface_cell=f"{repeat}x{repeat}")
    return PlanEntry(plan_id, system, index, repeat, n_sulfur, motif, variant, atoms)


def plan(system: str, n: int, seed: int = 0, protocol: ReferenceProtocol = PROTOCOL_V1) -> list[PlanEntry]:
    """The first ``n`` entries of the generator plan of ``system``."""
    return [plan_entry(system, i, seed, protocol) for i in range(n)]
