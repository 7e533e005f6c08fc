"""Backbone cards: one TOML file per backbone variant in ``backbones/``, read by code."""
from __future__ import annotations

import hashlib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..paths import cards_dir


class CardError(ValueError):
    """A card is missing, malformed or names an unknown backbone."""





@dataclass(frozen=True)
class BackboneCard:
    name: str
    family: str
    description: str
    cutoff: float
    package: str
    package_version: str
    weights: dict[str, Any]
    training_data: dict[str, Any]
    embedding_layer: str
    embedding_width: int
    environment: str
    requirements: tuple[str, ...]
    path: Path
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def weights_sha256(self) -> str | None:
        return self.weights.get("sha256") or None

    @property
    def weights_env_var(self) -> str:
        return self.weights.get("local_path_env") or "UIPBENCH_WEIGHTS_" + self.name.upper().replace("-", "_").replace(".", "_")

    def local_weights(self, override: str | os.PathLike | None = None) -> Path | None:
        """A local weights file chosen by argument or environment variable, if any."""
        chosen = override or os.environ.get(self.weights_env_var)
        return Path(chosen).expanduser() if chosen else None

    @classmethod
    def from_file(cls, path: Path) -> "BackboneCard":
        try:
            raw = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CardError(f"{path}: cannot read backbone card ({exc})") from exc
        try:
            return cls(
                name=raw["name"],
                family=raw["family"],
                description=raw.get("description", ""),
                cutoff=float(raw["cutoff"]),
                package=raw["package"]["name"],
                package_version=raw["package"]["version"],
                weights=dict(raw["weights"]),
                training_data=dict(raw.get("training_data", {})),
                embedding_layer=raw["embedding"]["layer"],
                embedding_width=int(raw["embedding"]["width"]),
                environment=raw["environment"]["name"],
                requirements=tuple(raw["environment"]["requirements"]),
                path=path,
                raw=raw,
            )
        except KeyError as exc:
            raise CardError(f"{path}: backbone card lacks the field {exc}") from None


def all_cards(directory: Path | None = None) -> dict[str, BackboneCard]:
    directory = directory or cards_dir()
    cards = {}
    for path in sorted(directory.glob("*.toml")):
        card = BackboneCard.from_file(path)
        if card.name in cards:
            raise CardError(f"two cards name the backbone {card.name!r}: {cards[card.name].path} and {path}")
        cards[card.name] = card
    return cards


def get_card(name: str, directory: Path | None = None) -> BackboneCard:
    cards = all_cards(directory)
    if name not in cards:
        raise CardError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(cards))}")
    return cards[name]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


class WeightsError(FileNotFoundError):
    """Weights are missing or do not match their card."""


def verify_weights(card: BackboneCard, path: Path) -> str:
    """sha256 of ``path``; an error when the card records a different one."""
    if not path.is_file():
        raise WeightsError(f"{card.name}: weights file {path} not found")
    digest = sha256_file(path)
    expected = card.weights_sha256
    if expected and digest != expected:
        raise WeightsError(f"{card.name}: weights file {path} has sha256 {digest}, the card expects {expected}")
    return digest
