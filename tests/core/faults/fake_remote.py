"""The fake backbone computed in a worker process, the way RemoteBackbone runs one (see :mod:`.fake_cli`)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from ase.io import write

from uipbench._interrupt import child_env, run_child, worker_tempdir
from uipbench.embedding import StructureEmbedding

from ..fake_backbone import FakeBackbone


class FakeWorkerBackbone(FakeBackbone):
    """The fake backbone, computed in a child process (one call per embed, like RemoteBackbone)."""

    batch_size = 10**9

    def _embed_batch(self, structures, forces):
        self.calls += 1
        with worker_tempdir() as tmp:  # as RemoteBackbone._call
            inp, out = Path(tmp) / "input.extxyz", Path(tmp) / "embedding.npz"
            write(inp, structures, format="extxyz")
            cmd = [sys.executable, "-m", "tests.core.faults.fake_worker", str(inp), str(out),
                   "1" if forces else "0"]
            proc = run_child(cmd, stdout=subprocess.DEVNULL, env=child_env())
            if proc.returncode != 0:
                raise RuntimeError(f"fake worker failed (exit {proc.returncode})")
            with np.load(out, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        index = arrays["structure_index"]
        return [StructureEmbedding(float(arrays["energy"][i]), arrays["embedding"][index == i],
                                   arrays["numbers"][index == i], arrays["forces"][index == i] if forces else None)
                for i in range(len(structures))]
