"""What every ``uipbench`` command shares: the error → exit-code rule, output checks, shared arguments.

Nothing here imports more than the standard library (and :mod:`uipbench.harness.defaults`,
:mod:`uipbench._interrupt`), so every command's parser stays cheap to build.
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .._interrupt import Interrupted, end_children, handle_signals
from ..harness.defaults import AGGREGATIONS, DEFAULT_SEEDS, DEFAULT_SIZES

#: exit code of a command stopped by bad input (argparse uses the same)
EXIT_BAD_INPUT = 2
#: errors that mean the user's input (arguments, files, paths) is at fault: one line, exit 2
BAD_INPUT_ERRORS = (ValueError, FileNotFoundError, RuntimeError, PermissionError, IsADirectoryError,
                    NotADirectoryError)


def dispatch(args: argparse.Namespace) -> int:
    """Run the parsed subcommand; bad input becomes one ``uipbench: error: ...`` line and exit 2.

    SIGINT and SIGTERM end the command through normal unwinding (:mod:`uipbench._interrupt`): locks
    are released, temporary folders removed, child processes ended; then one line
    (``uipbench: interrupted (SIGTERM); ...``, with the command's ``resume_hint``) and exit 130 / 143.
    """
    with handle_signals():
        try:
            return _run(args)
        except Interrupted as exc:
            return interrupted(exc, getattr(args, "resume_hint", None))


def _run(args: argparse.Namespace) -> int:
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` & co.: stop quietly, as other Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except BAD_INPUT_ERRORS as exc:
        print(f"uipbench: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def interrupted(exc: Interrupted, hint: str | None = None) -> int:
    """End the children still alive, say so in one line, and return the signal's exit code."""
    end_children()
    exc.__traceback__ = None  # frees the unwound frames: progress bars they held close now, before the line
    gc.collect()
    print(f"uipbench: interrupted ({exc.signal_name})" + (f"; {hint}" if hint else ""), file=sys.stderr)
    return exc.exit_code


#: what the interruption line tells the user of a command that resumes
RESUME_HINT = "finished work is kept; run the same command to resume"


def command_line() -> list[str]:
    """The command as the user typed it, for a run's metadata."""
    return ["uipbench", *sys.argv[1:]]


def training_sizes(values: list[str] | None) -> list[int | str] | None:
    """``--sizes`` values: integers or the word ``max``."""
    if not values:
        return None
    try:
        return [v if v == "max" else int(v) for v in values]
    except ValueError:
        raise ValueError(f"training sizes are integers or 'max', got {values}") from None


def given(**options: object) -> dict[str, object]:
    """The options the user gave (not ``None``), so the library's own defaults apply to the rest.

    A parser that left such defaults to the library need not import it to show them.
    """
    return {name: value for name, value in options.items() if value is not None}


# --- output paths, checked before any work starts -------------------------------------------------------

def _writable_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise NotADirectoryError(f"{what}: {folder} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}: folder {folder} is not writable")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    return a.exists() and b.exists() and os.path.samefile(a, b)


def check_input_files(inputs: Mapping[str, Path | None]) -> None:
    """Refuse, before any work, input files (``{label: path}``; ``None`` = not given) that are absent."""
    for label, path in inputs.items():
        if path is None:
            continue
        if not Path(path).exists():
            raise FileNotFoundError(f"{label} {path} does not exist")
        if Path(path).is_dir():
            raise IsADirectoryError(f"{label} {path} is a folder, not a file")


def check_output_files(outputs: Mapping[str, Path], inputs: Mapping[str, Path] | None = None) -> None:
    """Refuse files a command would write (``{label: path}``) that would fail or destroy something.

    Each output must not be an existing folder, must sit in an existing, writable folder, and must be
    none of the ``inputs`` and none of the other outputs. Raises ``ValueError``/``OSError`` naming the
    flag and the path; :func:`dispatch` turns them into one line and exit 2.
    """
    inputs = inputs or {}
    seen: dict[Path, str] = {}
    for label, path in outputs.items():
        path = Path(path)
        if path.is_dir():
            raise IsADirectoryError(f"{label} {path} is a folder; give the name of a file to write")
        if not path.parent.exists():
            raise FileNotFoundError(f"{label} {path}: folder {path.parent} does not exist")
        _writable_folder(path.parent, f"{label} {path}")
        for input_label, source in inputs.items():
            if _same_file(path, Path(source)):
                raise ValueError(f"{label} {path} is the same file as {input_label} {source}; "
                                 f"writing it would overwrite the input")
        key = path.resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {label} would both be written to {path}")
        seen[key] = label


def check_output_folder(label: str, path: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse a folder a command would create or write into, if that cannot work.

    An existing path must be a writable folder; a new one is created with its parents, so its
    nearest existing ancestor must be a writable folder. It must not be any of the command's ``inputs``.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"{label} {path} is a file, not a folder")
        _writable_folder(path, label)
    else:
        ancestor = next(p for p in path.absolute().parents if p.exists())
        _writable_folder(ancestor, f"{label} {path} (to be created in {ancestor})")
    for source in inputs:
        if _same_file(path, Path(source)):
            raise ValueError(f"{label} {path} is an input of this command, not a place to write")


# --- arguments several commands share -------------------------------------------------------------------

def positive_int(text: str) -> int:
    """argparse ``type`` of a count that must be at least 1 (``--workers``, ``--mpi-ranks``, ``--chunk-size``):
    anything else is an argparse error (usage line, ``argument --workers: ...``, exit 2) before any work."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (1 or more), got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse ``type`` of a quantity that must be above 0 (``--fmax``): anything else is an argparse error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return value


def add_trust_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-unpinned-weights", action="store_true",
                        help="load a weights file whose sha256 the card does not pin even where the family's "
                             "loader unpickles it (MACE): this can run code from the file; only for files you trust")


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "json"), default="table")


def add_datasets_root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--datasets-root", type=Path, default=None,
                        help="datasets folder (default: the shipped one); each subfolder with a structures.extxyz "
                             "of labelled structures is a system")


def add_grid_arguments(parser: argparse.ArgumentParser) -> None:
    """``--sizes``, ``--seeds`` and ``--aggregations`` of a sweep (``sweep`` and ``regress``)."""
    parser.add_argument("--sizes", nargs="*", help="training sizes (integers or 'max'); default "
                                                   + " ".join(str(s) for s in DEFAULT_SIZES))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(DEFAULT_SEEDS))
    parser.add_argument("--aggregations", nargs="*", default=list(AGGREGATIONS))
