"""``python -m tests.core.faults.fake_cli ARGS...``: the ``uipbench`` command with the fake backbone.

The command line is ``uipbench.cli.main`` unchanged (its signal handling, locks and exit codes are
what the fault tests check); only the backbones are replaced: every name loads
:class:`~tests.core.fake_backbone.FakeBackbone`, and with ``FAKE_WORKER=1`` the fake computes its
embeddings in a worker subprocess inside a ``uipbench-worker-<pid>-*`` temporary folder, the way
:class:`~uipbench.adapters.remote.RemoteBackbone` runs a backbone of another environment
(``FAKE_WORKER_DELAY`` seconds of sleep in the worker, so that kills land there too).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
from ase.io import write

from uipbench._interrupt import WORKER_PREFIX, child_env, run_child, worker_tempdir  # noqa: F401  (WORKER_PREFIX re-exported)
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


def fake_backbone() -> FakeBackbone:
    return FakeWorkerBackbone() if os.environ.get("FAKE_WORKER") == "1" else FakeBackbone()


def install(patch: Callable[[object, str, object], None] = setattr) -> None:
    """Every backbone name loads the fake (sweep, regress, embed, demo); every card counts as present.
    ``patch``: how to set the attributes (``monkeypatch.setattr`` in a test)."""
    import uipbench.adapters.registry as registry
    import uipbench.harness.data as data

    def load(name, *args, **kwargs):
        from uipbench.adapters.card import get_card

        get_card(name)  # unknown names still fail the way they do for real backbones
        return fake_backbone()

    patch(registry, "load_backbone", load)
    patch(data, "load_backbone", load)
    patch(registry, "available_backbones", lambda: ["chgnet-0.3.0"])


def main(argv: list[str]) -> int:
    install()
    from uipbench.cli import main as uipbench

    return uipbench(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
