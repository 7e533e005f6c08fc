"""What a sweep works on: the reference data of each system and each backbone's view of it."""
from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ..adapters.registry import load_backbone
from ..cache import EmbeddingCache, cached_embed
from ..datasets.io import (STRUCTURES_FILE, VALIDATION_FILE, available_systems, describe_systems, group_key, load,
                           load_validation, system_dir, train_test_split)
from ..datasets.protocol import SYSTEMS
from .metrics import count_s_s_pairs

POOLED = "all"


@dataclass
class SystemData:
    """Reference (DFT) data of one system, or of all systems pooled; ``validation``: its independent
    validation set (the members' ``validation.extxyz``, pooled likewise), scored on, never fitted on."""

    name: str
    structures: list[Atoms]
    members: list[str]  # the shipped systems it is made of
    system_of: list[str]  # per structure
    file_sha256: dict[str, str] = field(default_factory=dict)
    validation: SystemData | None = None

    def __post_init__(self) -> None:
        self.energy = np.array([a.get_potential_energy() for a in self.structures])
        self.forces = [a.get_forces() for a in self.structures]
        self.n_atoms = np.array([len(a) for a in self.structures])
        self.groups = [f"{s}:{group_key(a)}" for s, a in zip(self.system_of, self.structures)]
        self.n_ss_pairs = np.array([count_s_s_pairs(a.numbers, a.get_all_distances(mic=True))
                                    for a in self.structures])
        self.ids = [str(a.info.get("plan_id", i)) for i, a in enumerate(self.structures)]

    def __len__(self) -> int:
        return len(self.structures)

    def split(self, seed: int, test_fraction: float) -> tuple[list[int], list[int]]:
        """Train order (nested prefixes give the training sets) and test indices.

        Pooled data: each member system is split on its own with the same seed, and the
        training orders are interleaved so small training sets draw from every system.
        """
        per_system = []
        for member in self.members:
            idx = [i for i, s in enumerate(self.system_of) if s == member]
            train, test = train_test_split(idx, test_fraction=test_fraction, seed=seed)
            order = np.random.default_rng(seed).permutation(len(train))
            per_system.append(([idx[train[j]] for j in order], [idx[t] for t in test]))
        train_order = [i for group in _interleave([t for t, _ in per_system]) for i in group]
        test = sorted(i for _, t in per_system for i in t)
        return train_order, test


def _interleave(lists: list[list[int]]) -> list[list[int]]:
    out = []
    for k in range(max((len(x) for x in lists), default=0)):
        out.append([x[k] for x in lists if k < len(x)])
    return out


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class MixedProtocolError(ValueError):
    """One system's structures were labelled with more than one reference protocol."""


def protocol_of(system: str, structures: list[Atoms], root: Path | None = None) -> str:
    """The one reference protocol of a system's structures (``unknown`` where none is recorded).

    Energies of different protocols (functional, code, settings) differ by far more than any model
    error, so a system that mixes them is refused before any work, naming the file and the counts.
    """
    counts = Counter(str(a.info.get("protocol", "unknown")) for a in structures)
    if len(counts) > 1:
        path = system_dir(system, root) / STRUCTURES_FILE
        found = ", ".join(f"{p!r}: {n} structures" for p, n in counts.most_common())
        raise MixedProtocolError(f"{path}: system {system} mixes reference protocols ({found}); energies of "
                                 f"different protocols do not compare, so put each protocol's structures in a "
                                 f"system folder of its own")
    return next(iter(counts), "unknown")


def load_systems(names: list[str], root: Path | None = None, skip_small: int | None = None) -> dict[str, SystemData]:
    """The named systems (``all`` pools every shipped system); unknown names are a clear error.

    ``skip_small``: leave out (with a warning) shipped systems with fewer labelled structures.
    Each system carries its validation set where its members have one (:func:`validation_data`).
    """
    present = available_systems(root)
    unknown = [n for n in names if n != POOLED and n not in SYSTEMS and n not in present]
    if unknown:
        raise ValueError(f"unknown system(s) {', '.join(unknown)}; {describe_systems(root, POOLED)}")
    members = list(dict.fromkeys(s for s in [*SYSTEMS, *present] if s in names or (POOLED in names and s in present)))
    loaded = {s: load(s, root) for s in members}
    if skip_small:
        for s in list(loaded):
            if len(loaded[s]) < skip_small:
                warnings.warn(f"{s}: only {len(loaded[s])} labelled structures (< {skip_small}); left out",
                              stacklevel=2)
                del loaded[s]
                members.remove(s)
        names = [n for n in names if n == POOLED or n in loaded]
    protocols = {s: protocol_of(s, loaded[s], root) for s in members if loaded[s]}
    shas = {s: file_sha256(system_dir(s, root) / STRUCTURES_FILE) for s in members}
    validation = {s: load_validation(s, root) for s in members}
    for s in members:
        _check_validation_protocol(s, validation[s], protocols.get(s), root)
    out = {}
    for name in names:
        parts = [m for m in members if loaded[m]] if name == POOLED else [name]
        if name == POOLED and len(parts) < 2 and skip_small:
            continue  # pooling one system repeats it
        if name == POOLED and len({protocols[m] for m in parts}) > 1:
            warnings.warn(f"'{POOLED}' left out: its members were labelled with different reference protocols "
                          f"({ {m: protocols[m] for m in parts} }); energies of different protocols do not pool",
                          stacklevel=2)
            continue
        structures = [a for p in parts for a in loaded[p]]
        if not structures:
            raise ValueError(f"system {name} has no labelled structures")
        out[name] = SystemData(name, structures, parts, [p for p in parts for _ in loaded[p]],
                               {p: shas[p] for p in parts}, validation_data(name, parts, validation, root))
    return out


def _check_validation_protocol(system: str, structures: list[Atoms], protocol: str | None,
                               root: Path | None) -> None:
    """A validation set labelled with another protocol than its system's training data cannot score it."""
    if not structures:
        return
    found = Counter(str(a.info.get("protocol", "unknown")) for a in structures)
    if protocol is not None and set(found) != {protocol}:
        path = system_dir(system, root) / VALIDATION_FILE
        raise MixedProtocolError(f"{path}: the validation set of {system} is labelled with "
                                 f"{', '.join(sorted(found))}, its training data with {protocol}; energies of "
                                 f"different protocols do not compare")


def validation_data(name: str, parts: list[str], validation: dict[str, list[Atoms]],
                    root: Path | None = None) -> SystemData | None:
    """The validation set of system ``name`` made of ``parts`` (each member's own, pooled); None without one."""
    having = [p for p in parts if validation.get(p)]
    if not having:
        return None
    return SystemData(name, [a for p in having for a in validation[p]], having,
                      [p for p in having for _ in validation[p]],
                      {p: file_sha256(system_dir(p, root) / VALIDATION_FILE) for p in having})


@dataclass
class BackboneView:
    """A backbone's energies, forces and embeddings of every structure of the sweep (by structure hash)."""

    name: str
    metadata: dict
    energy: dict[str, float]
    forces: dict[str, np.ndarray]
    embedding: dict[str, np.ndarray]


def embed_systems(backbone_name: str, systems: dict[str, SystemData], cache: EmbeddingCache | None = None,
                  trust_unpinned_weights: bool = False) -> BackboneView:
    """Embed every distinct structure, validation structures included, once (cache first, then one worker call)."""
    from ..datasets.io import structure_hash

    unique: dict[str, Atoms] = {}
    for data in systems.values():
        for atoms in [*data.structures, *(data.validation.structures if data.validation is not None else [])]:
            unique.setdefault(structure_hash(atoms), atoms)
    keys = list(unique)
    backbone = load_backbone(backbone_name, trust_unpinned_weights=trust_unpinned_weights)
    batch = cached_embed(backbone, [unique[k] for k in keys], cache, forces=True)
    return BackboneView(
        backbone_name, batch.metadata.to_dict(),
        {k: s.energy for k, s in zip(keys, batch.structures)},
        {k: s.forces for k, s in zip(keys, batch.structures)},
        {k: s.embedding for k, s in zip(keys, batch.structures)},
    )
