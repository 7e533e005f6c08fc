"""Backbone cards: one TOML file per backbone variant in ``backbones/``, read into typed records.

A card's schema is checked when it is read: a missing, unknown or mistyped field is a
:class:`CardError` naming the file and the field.  Cards are read once per process and
directory (again only when a file there changes).
"""
from __future__ import annotations

import functools
import os
import tomllib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from ..paths import cards_dir
from .errors import CardError, WeightsError

__all__ = ["BackboneCard", "CardError", "WeightsError", "WeightsSpec", "EmbeddingSpec", "TrainingData",
           "PackageSpec", "EnvironmentSpec", "MaceArchitecture", "OrbArchitecture", "all_cards", "get_card",
           "read_table"]


@dataclass(frozen=True)
class PackageSpec:
    name: str
    version: str


@dataclass(frozen=True)
class WeightsSpec:
    """Where a backbone's weights come from and how they are checked (``[weights]``)."""

    source: str  # a URL, or a sentence saying where the file comes from
    sha256: str = ""  # empty: not pinned (a file that would be unpickled is then refused unless trusted)
    local_path_env: str = ""  # environment variable naming a local copy
    file: str = ""  # file name of the published weights
    loader: str = ""  # how the package itself loads them (documentation)
    model_name: str = ""  # the package's own name for the model
    package_path: str = ""  # inside the package's wheel (site-packages relative)
    cache_path: str = ""  # a fixed file where the package caches a download
    cache_dir: str = ""  # cached_path's cache directory (file names hashed from the URL)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra arguments of the package's builder


@dataclass(frozen=True)
class TrainingData:
    name: str
    reference: str = ""
    functional: str = ""
    elements: str = ""


@dataclass(frozen=True)
class EmbeddingSpec:
    layer: str
    width: int
    note: str = ""


@dataclass(frozen=True)
class EnvironmentSpec:
    name: str
    requirements: tuple[str, ...]


@dataclass(frozen=True)
class MaceArchitecture:
    """Hyperparameters of a MACE model (``[architecture]``), for random weights."""

    model: str
    interaction_first: str
    interaction: str
    hidden_irreps: str
    MLP_irreps: str
    r_max: float
    num_bessel: int
    num_polynomial_cutoff: int
    max_ell: int
    num_interactions: int
    correlation: int
    radial_MLP: tuple[int, ...]
    gate: str


@dataclass(frozen=True)
class OrbArchitecture:
    """An ORB builder and its arguments (``[architecture]``)."""

    builder: str
    radius: float
    max_num_neighbors: int
    num_message_passing_steps: int


#: family -> the schema of its ``[architecture]`` table (required for these families)
ARCHITECTURES: dict[str, type] = {"mace": MaceArchitecture, "orb": OrbArchitecture}


@dataclass(frozen=True)
class BackboneCard:
    """One backbone variant.  The ``[package]``, ``[embedding]`` and ``[environment]`` tables are
    checked against their schemas and kept as flat fields; ``[weights]``, ``[training_data]`` and
    ``[architecture]`` as typed records."""

    name: str
    family: str
    description: str
    cutoff: float
    package: str
    package_version: str
    weights: WeightsSpec
    training_data: TrainingData
    embedding_layer: str
    embedding_width: int
    environment: str
    requirements: tuple[str, ...]
    architecture: Any  # MaceArchitecture, OrbArchitecture, or None for families that take none
    path: Path

    @property
    def weights_sha256(self) -> str | None:
        """The pinned sha256 of the weights file, or ``None`` when the card pins none."""
        return self.weights.sha256 or None

    @property
    def weights_env_var(self) -> str:
        return self.weights.local_path_env or "UIPBENCH_WEIGHTS_" + self.name.upper().replace("-", "_").replace(".", "_")

    def local_weights(self, override: str | os.PathLike | None = None) -> Path | None:
        """A local weights file chosen by argument or environment variable, if any."""
        chosen = override or os.environ.get(self.weights_env_var)
        return Path(chosen).expanduser() if chosen else None

    @classmethod
    def from_file(cls, path: Path) -> "BackboneCard":
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise CardError(f"{path}: cannot read backbone card ({exc})") from exc
        return cls.from_dict(raw, path)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], path: Path) -> "BackboneCard":
        top = read_table(_TopLevel, {k: v for k, v in raw.items() if not isinstance(v, dict)}, path, "")
        tables = {k for k, v in raw.items() if isinstance(v, dict)}
        unknown = sorted(tables - {"package", "weights", "training_data", "embedding", "environment",
                                   "architecture"})
        if unknown:
            raise CardError(f"{path}: unknown table [{unknown[0]}] in backbone card")
        schema = ARCHITECTURES.get(top.family)
        if schema is None and "architecture" in raw:
            raise CardError(f"{path}: family {top.family!r} takes no [architecture] table")
        package = read_table(PackageSpec, raw.get("package"), path, "package")
        embedding = read_table(EmbeddingSpec, raw.get("embedding"), path, "embedding")
        env = read_table(EnvironmentSpec, raw.get("environment"), path, "environment")
        return cls(
            name=top.name, family=top.family, description=top.description, cutoff=top.cutoff,
            package=package.name, package_version=package.version,
            weights=read_table(WeightsSpec, raw.get("weights"), path, "weights"),
            training_data=read_table(TrainingData, raw.get("training_data"), path, "training_data"),
            embedding_layer=embedding.layer, embedding_width=embedding.width,
            environment=env.name, requirements=env.requirements,
            architecture=read_table(schema, raw.get("architecture"), path, "architecture") if schema else None,
            path=path,
        )


@dataclass(frozen=True)
class _TopLevel:
    name: str
    family: str
    cutoff: float
    description: str = ""


def read_table(schema: type, table: Any, path: Path, section: str) -> Any:
    """``table`` (a TOML table) as the dataclass ``schema``; a :class:`CardError` naming the file and
    the field when a field is missing, unknown or of the wrong type."""
    prefix = f"{section}." if section else ""
    if table is None:
        raise CardError(f"{path}: backbone card lacks the table [{section}]")
    hints = typing.get_type_hints(schema)
    names = {f.name for f in fields(schema)}
    unknown = sorted(set(table) - names)
    if unknown:
        raise CardError(f"{path}: unknown field {prefix}{unknown[0]} in backbone card; "
                        f"known: {', '.join(sorted(names))}")
    values = {}
    for f in fields(schema):
        if f.name in table:
            values[f.name] = _typed(table[f.name], hints[f.name], path, prefix + f.name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise CardError(f"{path}: backbone card lacks the field {prefix}{f.name}")
    return schema(**values)


def _typed(value: Any, hint: Any, path: Path, where: str) -> Any:
    """``value`` checked against (and converted to) the type ``hint``."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise CardError(f"{path}: field {where} must be a list, not {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_typed(v, item, path, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise CardError(f"{path}: field {where} must be a table, not {value!r}")
        return dict(value)
    accepted = (int, float) if hint is float else hint
    if isinstance(value, bool) and hint is not bool or not isinstance(value, accepted):
        raise CardError(f"{path}: field {where} must be of type {hint.__name__}, not {value!r}")
    return float(value) if hint is float else value


@functools.lru_cache(maxsize=8)
def _read_directory(directory: Path, signature: tuple[tuple[str, int, int], ...]) -> dict[str, BackboneCard]:
    """The cards of ``directory``; ``signature`` (names, mtimes, sizes) is the cache key."""
    cards: dict[str, BackboneCard] = {}
    for name, _, _ in signature:
        card = BackboneCard.from_file(directory / name)
        if card.name in cards:
            raise CardError(f"two cards name the backbone {card.name!r}: {cards[card.name].path} and {card.path}")
        cards[card.name] = card
    return cards


def all_cards(directory: Path | None = None) -> dict[str, BackboneCard]:
    """Every card of ``directory`` (default: the checkout's ``backbones/``), by backbone name."""
    directory = Path(directory or cards_dir())
    signature = []
    for path in sorted(directory.glob("*.toml")):
        stat = path.stat()
        signature.append((path.name, stat.st_mtime_ns, stat.st_size))
    return dict(_read_directory(directory, tuple(signature)))


def get_card(name: str, directory: Path | None = None) -> BackboneCard:
    cards = all_cards(directory)
    if name not in cards:
        raise CardError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(cards))}")
    return cards[name]
