"""Output paths are checked before any work starts: a clear line and exit 2, nothing overwritten."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from ase.io import write

from uipbench.cli import main
from uipbench.cli.common import check_output_files, check_output_folder


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading a backbone or starting a sweep."""
    from uipbench.adapters import registry
    from uipbench.harness import sweep as sweep_module

    def started(*args, **kwargs):
        raise AssertionError("the command started its work before checking its output paths")

    monkeypatch.setattr(registry, "load_backbone", started)
    monkeypatch.setattr(sweep_module, "sweep", started)


@pytest.fixture
def extxyz(tmp_path, slab_structures) -> Path:
    path = tmp_path / "in.extxyz"
    write(path, slab_structures[:2])
    return path


def _embed(extxyz: Path, output: Path, *extra: str) -> int:
    return main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(extxyz), "--output", str(output),
                 "--cache-dir", str(extxyz.parent / "cache"), *extra])


def test_embed_output_ending_in_json_is_refused(extxyz, tmp_path, capsys, no_work):
    assert _embed(extxyz, tmp_path / "x.json") == 2
    err = capsys.readouterr().err
    assert "--output and its metadata JSON (--output with the suffix .json) would both be written to" in err
    assert "x.json" in err
    assert not (tmp_path / "x.json").exists()


def test_embed_output_equal_to_input_is_refused(extxyz, capsys, no_work):
    before = extxyz.read_bytes()
    assert _embed(extxyz, extxyz) == 2
    assert "is the same file as --input" in capsys.readouterr().err
    assert extxyz.read_bytes() == before


def test_embed_metadata_beside_the_output_must_not_be_the_input(tmp_path, slab_structures, capsys, no_work):
    source = tmp_path / "data.json"  # an extxyz file under another name
    write(source, slab_structures[:1], format="extxyz")
    before = source.read_bytes()
    assert _embed(source, tmp_path / "data.npz") == 2
    assert "its metadata JSON" in capsys.readouterr().err and source.read_bytes() == before


def test_embed_output_that_is_a_folder_is_refused(extxyz, tmp_path, capsys, no_work):
    (tmp_path / "out").mkdir()
    assert _embed(extxyz, tmp_path / "out") == 2
    assert f"--output {tmp_path / 'out'} is a folder" in capsys.readouterr().err


def test_embed_output_in_a_missing_folder_is_refused(extxyz, tmp_path, capsys, no_work):
    assert _embed(extxyz, tmp_path / "nope" / "out.npz") == 2
    assert f"folder {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def _deny_writes_to(monkeypatch, folder: Path) -> None:
    """As root, permissions do not stop writes, so the check's view of them is patched."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path).resolve() == folder.resolve() and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_embed_output_in_a_folder_that_is_not_writable_is_refused(extxyz, tmp_path, capsys, monkeypatch, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    _deny_writes_to(monkeypatch, locked)
    assert _embed(extxyz, locked / "out.npz") == 2
    assert f"folder {locked} is not writable" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_for_real(extxyz, tmp_path, capsys, no_work):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert _embed(extxyz, locked / "out.npz") == 2
    finally:
        locked.chmod(0o700)
    assert "is not writable" in capsys.readouterr().err


def test_embed_cache_that_cannot_be_written_is_refused_before_the_work(extxyz, tmp_path, capsys, monkeypatch,
                                                                       no_work):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    assert _embed(extxyz, tmp_path / "out.npz") == 2
    assert f"--cache-dir {tmp_path / 'cache'} is a file, not a folder" in capsys.readouterr().err
    monkeypatch.setenv("UIPBENCH_CACHE_DIR", str(tmp_path / "cache" / "sub"))
    assert main(["embed", "--backbone", "chgnet-0.3.0", "--input", str(extxyz), "--output",
                 str(tmp_path / "out.npz")]) == 2
    assert "the embedding cache (UIPBENCH_CACHE_DIR)" in capsys.readouterr().err
    with pytest.raises(AssertionError, match="started its work"):  # --no-cache: no cache to check
        _embed(extxyz, tmp_path / "out.npz", "--no-cache")


@pytest.mark.parametrize("command", [
    ["sweep", "--out", "{file}"],
    ["demo", "--out", "{file}"],
    ["report", "{run}", "--out", "{file}"],
    ["regress", "--baseline", "chgnet-0.2.0", "--candidate", "chgnet-0.3.0", "--out", "{file}"],
    ["mptrj-envs", "{run}/results.csv", "--output", "{file}", "--no-progress"],
    ["dataset", "build", "cu-s", "--n", "1", "--root", "{file}"],
])
def test_run_folders_that_are_files_are_refused(command, tmp_path, capsys, no_work):
    file = tmp_path / "a-file"
    file.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.csv").write_text("backbone\n")
    argv = [a.format(file=file, run=tmp_path / "run") for a in command]
    assert main(argv) == 2
    assert f"{file} is a file, not a folder" in capsys.readouterr().err
    assert file.read_text() == "keep me"


def test_mptrj_envs_missing_inputs_are_named_before_counting(tmp_path, capsys):
    assert main(["mptrj-envs", str(tmp_path / "absent.json"), "--no-progress"]) == 2
    assert f"PATH {tmp_path / 'absent.json'} does not exist" in capsys.readouterr().err
    (tmp_path / "f.json").write_text("{}")
    assert main(["mptrj-envs", str(tmp_path / "f.json"), "--sweep-results", str(tmp_path / "no.csv"),
                 "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "--sweep-results" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_golden_path_goes_with_one_backbone(tmp_path, capsys):
    assert main(["regress", "golden", "--check", "chgnet-0.2.0", "chgnet-0.3.0", "--path", str(tmp_path / "g")]) == 2
    assert "--path names one golden file; give one backbone with it, not 2" in capsys.readouterr().err
    assert main(["regress", "golden", "--write", "chgnet-0.3.0", "--path", str(tmp_path / "no" / "g.json")]) == 2
    assert f"folder {tmp_path / 'no'} does not exist" in capsys.readouterr().err


def test_check_output_folder_creates_nothing_and_accepts_new_nested_folders(tmp_path):
    check_output_folder("--out", tmp_path / "a" / "b" / "c")
    check_output_folder("--out", tmp_path)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(NotADirectoryError, match=r"--out .*f/new \(to be created in .*\): .*f is not a folder"):
        check_output_folder("--out", tmp_path / "f" / "new")
    with pytest.raises(ValueError, match="is an input of this command"):
        check_output_folder("--out", tmp_path / "d", inputs=[tmp_path / "d"])


def test_check_output_files_names_both_sides_of_a_clash(tmp_path):
    check_output_files({"--a": tmp_path / "a.npz", "--b": tmp_path / "b.npz"}, inputs={"--in": tmp_path / "c"})
    with pytest.raises(ValueError, match="--a and --b would both be written to"):
        check_output_files({"--a": tmp_path / "x", "--b": tmp_path / "." / "x"})
    (tmp_path / "in").write_text("")
    os.link(tmp_path / "in", tmp_path / "hard")
    with pytest.raises(ValueError, match="--a .*hard is the same file as --in"):
        check_output_files({"--a": tmp_path / "hard"}, inputs={"--in": tmp_path / "in"})
