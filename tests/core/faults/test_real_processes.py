"""Real processes killed or interrupted at chosen moments (fast and deterministic; the random moments are in
test_kill.py): what a SIGKILL leaves behind is harmless and cleaned up, and Ctrl-C to a command with worker
processes ends it with its one line."""
from __future__ import annotations

import os
import sys
import textwrap


#: a cache write that stops halfway through its temporary file (then the test kills it)
KILLED_CACHE_WRITE = textwrap.dedent("""
    import sys, time
    import numpy as np
    from ase.io import read
    from uipbench.cache import EmbeddingCache, cached_embed
    from tests.core.fake_backbone import FakeBackbone

    def half_a_write(fh, **arrays):
        fh.write(b"PK\\x03\\x04 half an npz")
        fh.flush()
        print("writing", flush=True)
        time.sleep(60)

    np.savez = half_a_write
    cached_embed(FakeBackbone(), read(sys.argv[2], index=":1"), EmbeddingCache(sys.argv[1]))
""")


def test_the_temporary_file_of_a_cache_write_killed_midway_is_ignored_and_then_removed(tmp_path, datasets):
    """SIGKILL during a cache write leaves its temporary file: it is never read (no warning, the entry is a
    miss) and the next write into its folder removes it, its writer being gone."""
    import subprocess
    import warnings

    from ase.io import read

    from uipbench.cache import EmbeddingCache, cached_embed
    from uipbench.paths import repo_root

    from ..fake_backbone import FakeBackbone

    cache, structures = tmp_path / "cache", datasets / "cu-s" / "structures.extxyz"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root()), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CACHE_WRITE, str(cache), str(structures)], cwd=repo_root(),
                            env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.kill()
        proc.wait()
    (leftover,) = cache.rglob(".*.tmp")
    backbone = FakeBackbone()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a leftover read as an entry would warn (corrupt cache file)
        batch = cached_embed(backbone, read(structures, index=":2"), EmbeddingCache(cache))
    assert backbone.calls == 1 and len(batch) == 2
    assert not leftover.exists(), "the killed write's temporary file is still there"
    assert sorted(p.parent == leftover.parent for p in cache.rglob("*.npz")) == [True, True]
    assert list(cache.rglob(".*.tmp")) == []
    from uipbench._atomic import host_tag, temporary_owner

    assert temporary_owner(leftover) == (host_tag(), proc.pid), f"{leftover.name} does not name its writer"
