"""``uipbench oxide phase-diagram``: read the searches, the references and the DFT points; write the diagram.

Every input is read and checked before the backbone is loaded (:mod:`.searches`, :mod:`.references`);
the backbone's energies of the reference structures go through the embedding cache (the backbone runs
in its own environment, as ``uipbench embed`` does) and must come from the searches' weights.  One run
per output folder (:class:`uipbench._lock.OutputLock`); every file is written atomically.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from ase import Atoms

from .._lock import OutputLock
from ..datasets.io import REFERENCES_FILE, STRUCTURES_FILE, read_structures, system_dir
from ..embedding import StructureEmbedding
from .corrected import Embed, corrected_method
from .diagram import Evaluate, PhaseDiagram, build
from .phase import MU_O_MIN
from .references import SYSTEM, ReferenceError
from .report import write_outputs
from .searches import pool, read_run, search_folders


def read_references(root: Path | None = None) -> tuple[Path, list[Atoms]]:
    """The labelled references of ``cu-o`` (a clear error naming the file when there are none)."""
    path = system_dir(SYSTEM, root) / REFERENCES_FILE
    structures = read_structures(path) if path.is_file() else []
    if not structures:
        raise ReferenceError(f"{path}: no reference energies (bulk Cu, the O2 molecule, bulk Cu2O); label them with "
                             f"`uipbench oxide references`")
    return path, structures


def backbone_views(name: str, weights_sha256: str, weights: str | None = None,
                   cache_dir: Path | None = None) -> Embed:
    """The backbone's embeddings (with energies) of structures, through the embedding cache, refused unless
    they come from ``weights_sha256`` (the searches' weights)."""
    def embed(structures: Sequence[Atoms]) -> list[StructureEmbedding]:
        from ..adapters.registry import load_backbone
        from ..cache import EmbeddingCache, cached_embed

        batch = cached_embed(load_backbone(name, weights), list(structures), EmbeddingCache(cache_dir))
        if batch.metadata.weights_sha256 != weights_sha256:
            raise ValueError(f"{name}: these weights ({batch.metadata.weights_sha256[:12]}…) are not the searches' "
                             f"({weights_sha256[:12]}…); give the searches' weights with --weights")
        return batch.structures

    return embed


def backbone_evaluator(embed: Embed) -> Evaluate:
    """The backbone's energies of structures, from its embeddings."""
    return lambda structures: [view.energy for view in embed(structures)]


def phase_diagram(searches: Sequence[Path], backbone: str, out: Path, *, root: Path | None = None,
                  mu_min: float = MU_O_MIN, mu_max: float | None = None, mus: Sequence[float] | None = None,
                  evaluate: Evaluate | None = None, weights: str | None = None, corrected: bool = False,
                  embed: Embed | None = None) -> tuple[PhaseDiagram, Path]:
    """Write the phase diagram of ``backbone``'s ``searches`` into ``out``; ``evaluate`` (default: the backbone
    through the embedding cache) gives the backbone's energies of the reference structures.  ``corrected``:
    also the backbone + Δ diagram (:mod:`.corrected`), from ``embed`` (default: the backbone's embeddings
    through the cache)."""
    runs = [read_run(p) for p in search_folders(searches)]
    pooled = pool(runs, backbone)
    where, references = read_references(root)
    labelled_path = system_dir(SYSTEM, root) / STRUCTURES_FILE
    labelled = read_structures(labelled_path) if labelled_path.is_file() else []
    embed = embed or backbone_views(backbone, runs[0].weights_sha256, weights)
    evaluate = evaluate or backbone_evaluator(embed)
    with OutputLock(out, command=" ".join(["uipbench", *sys.argv[1:]])):
        diagram = build(pooled, backbone, references, evaluate, labelled, mu_min, mu_max, str(where))
        if corrected:
            diagram.corrected, diagram.held_out = corrected_method(
                pooled, references, labelled, embed, diagram.area, f"{backbone} + Δ", mu_min=mu_min, mu_max=mu_max,
                where=str(where))
        provenance = {"searches": [str(r.path) for r in runs], "weights_sha256": runs[0].weights_sha256,
                      "references": str(where), "labelled": str(labelled_path) if labelled else None}
        minima = {name: problem.minima for name, problem in pooled.items()}
        return diagram, write_outputs(diagram, Path(out), provenance, mus, minima)


def summary(diagrams: Sequence[Path], out: Path, *, root: Path | None = None, mu_min: float = MU_O_MIN) -> Path:
    """``uipbench oxide summary``: the ``diagrams`` folders side by side, with DFT over all labelled minima."""
    from .summary import summary as write_summary

    where, references = read_references(root)
    labelled_path = system_dir(SYSTEM, root) / STRUCTURES_FILE
    if not labelled_path.is_file():
        raise ReferenceError(f"{labelled_path}: no labelled minima; label them with `uipbench oxide label`")
    return write_summary(diagrams, Path(out), references, read_structures(labelled_path), mu_min, str(where))
