"""From a backbone name to a working adapter: in-process when the package is importable here,
otherwise through a worker in the backbone's own environment."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from .card import BackboneCard, all_cards, get_card
from .envs import env_for, is_ready, site_packages
from .errors import CardError
from .interface import Backbone

#: family -> (adapter module, the package's import name)
FAMILIES: dict[str, tuple[str, str]] = {
    "chgnet": ("uipbench.adapters.chgnet", "chgnet"),
    "sevennet": ("uipbench.adapters.sevennet", "sevenn"),
    "mace": ("uipbench.adapters.mace", "mace"),
    "orb": ("uipbench.adapters.orb", "orb_models"),
}


def family_of(card: BackboneCard) -> tuple[str, str]:
    try:
        return FAMILIES[card.family]
    except KeyError:
        raise CardError(f"{card.path}: unknown backbone family {card.family!r}; known: {', '.join(FAMILIES)}") from None


def importable_here(card: BackboneCard) -> bool:
    return importlib.util.find_spec(family_of(card)[1]) is not None


def load_backbone(name: str, weights: str | os.PathLike | None = None, *, random_weights: bool = False,
                  seed: int = 0, in_process: bool | None = None, precision: str | None = None,
                  trust_unpinned_weights: bool = False, download: bool = True) -> Backbone:
    """The adapter of backbone ``name``.

    In-process (with the differentiable path) when the backbone's package is importable
    in this environment; otherwise a :class:`~uipbench.adapters.remote.RemoteBackbone`
    whose ``embed`` runs in the backbone's own environment (created on first use).  The
    other arguments are those of the one load signature
    (:class:`~uipbench.adapters.interface.Loader`), the same in both cases.
    """
    card = get_card(name)
    module_name, _ = family_of(card)
    options = dict(random_weights=random_weights, seed=seed, precision=precision,
                   trust_unpinned_weights=trust_unpinned_weights, download=download)
    path = Path(weights) if weights else None
    if importable_here(card) if in_process is None else in_process:
        return importlib.import_module(module_name).load(card, path, **options)
    from .remote import RemoteBackbone

    return RemoteBackbone(card, path, **options)


@dataclass(frozen=True)
class BackboneStatus:
    name: str
    family: str
    environment: str
    environment_ready: bool
    weights: Path | None
    weights_present: bool
    width: int
    layer: str
    hint: str

    @property
    def state(self) -> str:
        if not self.weights_present:
            return "weights missing"
        if not self.environment_ready:
            return "environment not created"
        return "ready"


def weights_location(card: BackboneCard) -> Path | None:
    """Where the weights file is expected: a local override, the package's wheel, or the package cache."""
    local = card.local_weights()
    if local is not None:
        return local
    if card.weights.package_path:
        sp = site_packages(env_for(card))
        return sp / card.weights.package_path if sp else None
    if card.weights.cache_path:
        return Path(os.path.expanduser(card.weights.cache_path))
    if card.weights.cache_dir:
        return cached_path_file(card.weights.source, card.weights.cache_dir)
    return None


def cached_path_file(url: str, cache_dir: str) -> Path | None:
    """The newest copy of ``url`` in a ``cached_path`` cache, found the way ``cached_path.find_latest_cached``
    finds it (file name = sha256 of the URL [+ "." + sha256 of the ETag]), without importing the package.

    ``CACHED_PATH_CACHE_ROOT`` overrides ``cache_dir``, as it does for cached_path itself.
    """
    root = Path(os.environ.get("CACHED_PATH_CACHE_ROOT") or os.path.expanduser(cache_dir))
    prefix = hashlib.sha256(url.encode("utf-8")).hexdigest()
    candidates = [path for path in root.glob(f"{prefix}*")
                  if path.suffix not in {".json", ".lock"} and not path.name.endswith("-extracted")
                  and path.is_file()]
    return max(candidates, key=lambda path: path.stat().st_mtime, default=None)


def status(card: BackboneCard) -> BackboneStatus:
    spec = env_for(card)
    ready = is_ready(spec)
    path = weights_location(card)
    # weights that ship in the package's wheel arrive with the environment
    comes_with_env = bool(card.weights.package_path) and card.local_weights() is None and not ready
    present = comes_with_env or (path is not None and path.is_file())
    if not present:
        hint = (f"download {card.weights.source} and set "
                f"{card.weights_env_var}=/path/to/file (or pass --weights)")
    elif not ready:
        hint = f"run `uipbench env sync {spec.name}` (or any command that needs it)"
    else:
        hint = ""
    return BackboneStatus(card.name, card.family, spec.name, ready, path, present, card.embedding_width,
                          card.embedding_layer, hint)


def all_status() -> list[BackboneStatus]:
    return [status(card) for card in all_cards().values()]


def available_backbones() -> list[str]:
    """Names of backbones whose weights are present (the default set of a sweep)."""
    return [s.name for s in all_status() if s.weights_present]
