"""A stand-in for ``python -m uipbench.search.command`` in the seed-task tests (no backbone, no ase).

It takes the same ``--seed``/``--out``/``--budget`` options (others are ignored), and does what a
search does to its folder: one atomic ``evaluations/NNNNNN.json`` per finished "relaxation",
skipping those already there (so a retried task resumes), then ``search.json``.  The problem
argument is a JSON control file: ``seconds`` per evaluation and ``fail`` (seeds that exit 1).
Every evaluation it computes is appended to ``<out>/../computed.log`` and its own pid to
``<out>/../pids.log``, so tests see what ran where.  It holds the folder's lock while it works, as a search does.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from uipbench.search.command import _die_with_parent


def _write(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main() -> int:
    _die_with_parent()
    parser = argparse.ArgumentParser()
    parser.add_argument("problem")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget", type=int, required=True)
    args, _ = parser.parse_known_args()
    control = json.loads(Path(args.problem).read_text())
    with open(args.out.parent / "pids.log", "a") as log:
        log.write(f"{args.seed} {os.getpid()} {os.getppid()}\n")
    if args.seed in control.get("fail", []):
        print(f"seed {args.seed}: made to fail", file=sys.stderr)
        return 1
    from uipbench._lock import OutputLock

    with OutputLock(args.out, command="fake search"):  # as a search does: a dead predecessor's lock is taken over
        return _search(args, control)


def _search(args: argparse.Namespace, control: dict) -> int:
    (args.out / "evaluations").mkdir(parents=True, exist_ok=True)
    energies = []
    for i in range(args.budget):
        path = args.out / "evaluations" / f"{i:06d}.json"
        if not path.exists():
            time.sleep(control.get("seconds", 0.0))
            _write(path, {"index": i, "energy": -float(args.seed) - 0.1 * i})
            with open(args.out.parent / "computed.log", "a") as log:
                log.write(f"{args.seed}:{i}\n")
        energies.append(json.loads(path.read_text())["energy"])
    _write(args.out / "search.json", {"status": "finished", "best_energy": min(energies),
                                      "evaluations": len(energies), "distinct_minima": len(energies)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
