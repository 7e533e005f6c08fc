"""Per-backbone virtual environments, created and used by the suite itself.

mace-torch pins e3nn==0.4.4 while sevenn needs e3nn>=0.5, so backbones cannot
share one environment.  Each card names its environment; all cards naming one
environment must ask for the same requirements.  An environment lives in
``.venvs/<name>/`` (or ``$UIPBENCH_ENVS_DIR/<name>``) and is built in this order:
``torch==2.13.0`` first (the local CPU build; an unpinned torch would pull CUDA
wheels), then the card's requirements, then uipbench itself (editable).  A
marker file records what was installed, so a changed card triggers a rebuild.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .._atomic import write_json_atomic
from ..paths import envs_dir, repo_root
from .card import BackboneCard, all_cards
from .errors import CardError

TORCH_REQUIREMENT = "torch==2.13.0"
MARKER = "uipbench-env.json"


@dataclass(frozen=True)
class EnvSpec:
    name: str
    requirements: tuple[str, ...]
    backbones: tuple[str, ...]

    @property
    def path(self) -> Path:
        return envs_dir() / self.name

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def fingerprint(self) -> str:
        text = json.dumps([TORCH_REQUIREMENT, *self.requirements])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def env_specs(cards: dict[str, BackboneCard] | None = None) -> dict[str, EnvSpec]:
    cards = cards if cards is not None else all_cards()
    grouped: dict[str, list[BackboneCard]] = {}
    for card in cards.values():
        grouped.setdefault(card.environment, []).append(card)
    specs = {}
    for name, members in sorted(grouped.items()):
        requirements = {c.requirements for c in members}
        if len(requirements) > 1:
            raise CardError(f"cards of environment {name!r} ask for different requirements: "
                            + "; ".join(f"{c.name}: {list(c.requirements)}" for c in members))
        specs[name] = EnvSpec(name, members[0].requirements, tuple(sorted(c.name for c in members)))
    return specs


def env_for(card: BackboneCard) -> EnvSpec:
    return env_specs()[card.environment]


def is_ready(spec: EnvSpec) -> bool:
    marker = spec.path / MARKER
    if not spec.python.exists() or not marker.exists():
        return False
    try:
        return json.loads(marker.read_text()).get("fingerprint") == spec.fingerprint
    except json.JSONDecodeError:
        return False


def _pip(spec: EnvSpec, *args: str) -> None:
    cmd = [str(spec.python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"environment {spec.name}: `{' '.join(cmd[2:])}` failed:\n{proc.stderr[-3000:]}")


def sync(spec: EnvSpec, force: bool = False, log=print) -> float:
    """Create or update one environment; returns the seconds it took (0 when already current)."""
    if is_ready(spec) and not force:
        return 0.0
    start = time.perf_counter()
    log(f"uipbench: creating environment {spec.name} in {spec.path} (for {', '.join(spec.backbones)}) ...")
    if not spec.python.exists():
        base = getattr(sys, "_base_executable", None) or sys.executable
        subprocess.run([base, "-m", "venv", str(spec.path)], check=True)
    _pip(spec, TORCH_REQUIREMENT)
    _pip(spec, TORCH_REQUIREMENT, *spec.requirements)
    _pip(spec, TORCH_REQUIREMENT, "-e", f"{repo_root()}[test]")
    write_json_atomic(spec.path / MARKER, {"name": spec.name, "fingerprint": spec.fingerprint,
                                            "requirements": [TORCH_REQUIREMENT, *spec.requirements]})
    seconds = time.perf_counter() - start
    log(f"uipbench: environment {spec.name} ready ({seconds:.0f} s)")
    return seconds


def ensure(card: BackboneCard, log=print) -> EnvSpec:
    """The environment of ``card``, created on first use."""
    spec = env_for(card)
    sync(spec, log=log)
    return spec


def site_packages(spec: EnvSpec) -> Path | None:
    candidates = sorted((spec.path / "lib").glob("python3*/site-packages"))
    return candidates[0] if candidates else None
