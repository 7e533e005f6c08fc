"""The fake backbone's worker process: ``python -m tests.core.faults.fake_worker IN OUT PARENT FORCES``."""
from __future__ import annotations

import os
import sys
import time

import numpy as np
from ase.io import read

from uipbench._interrupt import child_process_init

from ..fake_backbone import FakeBackbone


def main(argv: list[str]) -> int:
    inp, out, forces = argv
    child_process_init()
    structures = read(inp, index=":", format="extxyz")
    time.sleep(float(os.environ.get("FAKE_WORKER_DELAY", "0")))
    done = FakeBackbone()._embed_batch(structures, forces == "1")
    arrays = {"energy": np.array([s.energy for s in done]),
              "embedding": np.concatenate([s.embedding for s in done]),
              "numbers": np.concatenate([s.numbers for s in done]),
              "structure_index": np.repeat(np.arange(len(done)), [len(s.numbers) for s in done])}
    if forces == "1":
        arrays["forces"] = np.concatenate([s.forces for s in done])
    tmp = f"{out}.part"
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
