"""What the family adapters share: weights (resolve, verify, trust, download), precision, the
random-weights identity, MPtrj's elements, and turning a batch's outputs into per-structure records.

Imports no ML package; the family modules import their package inside the functions that need it.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from ase import Atoms

from ..embedding import StructureEmbedding
from .card import BackboneCard
from .errors import PrecisionError, UntrustedWeightsError, WeightsError

#: elements of MPtrj (Z = 1-83 and 89-94), the training set of MACE-MP-0 and the ``mptrj-only`` ORB models
MPTRJ_NUMBERS = frozenset(range(1, 84)) | frozenset(range(89, 95))

#: precisions an adapter may be asked for
PRECISIONS = ("float32", "float64")
#: the precisions each family's adapter runs in, its default first (the adapters' own ``PRECISIONS``)
FAMILY_PRECISIONS: dict[str, tuple[str, ...]] = {"chgnet": ("float32", "float64"), "sevennet": ("float32", "float64"),
                                                 "mace": ("float64",), "orb": ("float64",)}


def random_identity(seed: int) -> str:
    """What stands for the weights sha256 of a model with random weights drawn from ``seed``
    (the same in-process and through a worker, so both share cache entries)."""
    return f"random:seed={int(seed)}"


def check_precision(family: str, precision: str | None, supported: tuple[str, ...]) -> str:
    """``precision`` (``None``: the family's default, the first of ``supported``), or a clear error."""
    chosen = supported[0] if precision is None else precision
    if chosen not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    if chosen not in supported:
        raise PrecisionError(f"{family} backbones cannot run in precision {chosen!r}: "
                             f"the {family} adapter runs in {' or '.join(supported)} only")
    return chosen


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(card: BackboneCard, path: Path) -> str:
    """sha256 of ``path``; an error when the file is absent or the card pins a different sha256."""
    if not path.is_file():
        raise WeightsError(f"{card.name}: weights file {path} not found")
    digest = sha256_file(path)
    expected = card.weights_sha256
    if expected and digest != expected:
        raise WeightsError(f"{card.name}: weights file {path} has sha256 {digest}, the card expects {expected}")
    return digest


def checked_weights(card: BackboneCard, path: Path, *, unpickles: bool, trust_unpinned: bool) -> str:
    """The sha256 of ``path``, verified against the card.

    A file the family's loader would unpickle (which can run code) is refused when the card pins
    no sha256, unless the user trusts it explicitly (``trust_unpinned``); a file read with a
    weights-only loader is used with a warning naming its digest.
    """
    digest = verify_weights(card, path)
    if card.weights_sha256:
        return digest
    if unpickles and not trust_unpinned:
        raise UntrustedWeightsError(
            f"{card.name}: refusing to load {path} (sha256 {digest}): the {card.family} loader unpickles "
            f"this file, which can run code, and the card {card.path} pins no sha256. If you trust the file, "
            f"pass --trust-unpinned-weights (trust_unpinned_weights=True in Python), or pin its sha256 as "
            f"[weights] sha256 = \"{digest}\" in the card")
    how = "trusted by the user" if unpickles else "unverified, read weights-only"
    warnings.warn(f"{card.name}: the card pins no sha256; using {path} with sha256 {digest} ({how})",
                  stacklevel=3)
    return digest


@contextlib.contextmanager
def weights_only_read(card: BackboneCard, path: Path) -> Iterator[None]:
    """Inside the block, a file that ``torch.load(weights_only=True)`` refuses (it holds more than
    tensors and plain containers) or cannot parse is a :class:`WeightsError` naming it."""
    import pickle

    try:
        yield
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        reason = next((line for line in lines if "WeightsUnpickler error" in line), lines[0])
        raise WeightsError(f"{card.name}: {path} cannot be read weights-only (tensors and plain containers), "
                           f"so it is not used: {reason}") from exc


def package_weights(card: BackboneCard) -> Path | None:
    """The weights file shipped inside the package's wheel (``[weights] package_path``), found
    without importing the package; ``None`` when the package is not installed here."""
    top, _, relative = card.weights.package_path.partition("/")
    spec = importlib.util.find_spec(top) if top else None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / relative


def missing_weights_message(card: BackboneCard, looked_in: Path | str | None = None) -> str:
    source = card.weights.source
    where = f" (not in {looked_in})" if looked_in else ""
    fix = (f"download {source} and set {card.weights_env_var} to its path" if source.startswith(("http:", "https:"))
           else f"set {card.weights_env_var} to a local copy ({source})")
    return f"{card.name}: weights file {card.weights.file or source} not available{where}; {fix} (or pass --weights)"


def resolve_weights(card: BackboneCard, weights: Path | str | None, default: Path | None,
                    fetch: Callable[[], Any] | None = None, download: bool = True) -> Path:
    """The weights file to use: ``weights``, else the card's environment variable, else ``default``
    (the package's wheel or cache) when it exists, else (``download``) what ``fetch()`` downloads."""
    chosen = card.local_weights(weights)
    if chosen is not None:
        return chosen
    if default is not None and default.is_file():
        return default
    if fetch is None or not download:
        raise WeightsError(missing_weights_message(card, default))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout clean for worker protocols
            return Path(fetch())
    except Exception as exc:  # network and file errors come in many kinds
        raise WeightsError(f"{missing_weights_message(card, default)} (download failed: {exc})") from exc


def split_flat(structures: Sequence[Atoms], energies: np.ndarray, features: np.ndarray,
               forces: np.ndarray | None, ptr: np.ndarray) -> list[StructureEmbedding]:
    """Per-structure records from a batch's flat arrays; structure ``i`` owns rows ``ptr[i]:ptr[i+1]``."""
    return [
        StructureEmbedding(
            energy=float(energies[i]),
            embedding=np.ascontiguousarray(features[start:stop], dtype=np.float64),
            numbers=np.asarray(atoms.numbers, dtype=np.int64).copy(),
            forces=None if forces is None else np.ascontiguousarray(forces[start:stop], dtype=np.float64),
        )
        for i, (atoms, start, stop) in enumerate(zip(structures, ptr[:-1], ptr[1:]))
    ]


def from_tensors(structures: Sequence[Atoms], energies: Any, embeddings: Sequence[Any],
                 gradients: Sequence[Any]) -> list[StructureEmbedding]:
    """Per-structure records from torch tensors: energies [n], embeddings and energy gradients per
    structure (``None`` when forces were not asked for; forces are minus the gradient)."""
    return [
        StructureEmbedding(float(energy.detach()), embedding.detach().double().numpy().copy(),
                           atoms.numbers.astype(np.int64).copy(),
                           None if gradient is None else -gradient.detach().double().numpy())
        for energy, embedding, atoms, gradient in zip(energies, embeddings, structures, gradients)
    ]
