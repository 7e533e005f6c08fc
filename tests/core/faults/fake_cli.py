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
import sys
from typing import Callable

# light at the top, like the ``uipbench`` script: the signal handling starts before anything heavy is imported
from uipbench._interrupt import WORKER_PREFIX  # noqa: F401  (re-exported)


def fake_backbone():
    from ..fake_backbone import FakeBackbone

    if os.environ.get("FAKE_WORKER") == "1":
        from .fake_remote import FakeWorkerBackbone

        return FakeWorkerBackbone()
    return FakeBackbone()


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
    from uipbench._interrupt import Interrupted, handle_signals
    from uipbench.cli import main as uipbench
    from uipbench.cli.common import interrupted

    with handle_signals():  # installing the fake imports the heavy modules
        try:
            install()
        except Interrupted as exc:
            return interrupted(exc)
        return uipbench(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
