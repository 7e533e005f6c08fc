"""Safe save/load of a fitted Δ-model: arrays in ``.npz`` + everything else in ``.json``. Never pickle.

``save(delta, "models/cu-s-chgnet", ...)`` writes ``models/cu-s-chgnet.npz`` then
``models/cu-s-chgnet.json`` (each atomically: temporary file, fsync, rename).  The
JSON records the format version, the estimator's parameters, scalar fitted
attributes, the backbone card name and weights sha256 the model was fitted for,
and the sha256 of the ``.npz`` bytes.  The ``.npz`` in turn holds the sha256 of the
JSON's canonical form (sorted keys, no whitespace, every field but ``npz_sha256``),
so the two files pin each other: a torn pair, a corrupt file, or an edit of either
(a parameter, an attribute, the backbone) is refused on load with an error naming
the file.  Re-indenting the JSON changes nothing.  The hashes detect edits and
accidents, not a forger who rewrites both files: they are not a signature.
"""
from __future__ import annotations

import hashlib
import inspect
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .._atomic import write_atomic, write_json_atomic
from .gpr import DeltaGPR

FORMAT = "uipbench-delta"
FORMAT_VERSION = 2         # 2: the npz pins the JSON's canonical sha256 (1 had the npz's hash only)
JSON_HASH_KEY = "__json_sha256__"   # the npz entry holding the JSON's canonical sha256


class DeltaFileError(ValueError):
    """A saved Δ-model is missing, corrupt, or of an unknown format."""


class BackboneMismatchError(ValueError):
    """A Δ-model is used with another backbone (or other weights) than it was fitted for."""


@dataclass(frozen=True)
class Provenance:
    """What a loaded Δ-model was fitted for (set as ``delta.provenance_`` by :func:`load`)."""

    backbone: str
    weights_sha256: str
    format_version: int = FORMAT_VERSION


def model_paths(path: str | Path) -> tuple[Path, Path]:
    """``(json, npz)`` paths for a base path (a ``.json`` or ``.npz`` suffix is dropped)."""
    path = Path(path)
    if path.suffix in (".json", ".npz"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".json"), path.with_name(path.name + ".npz")


def _scalar(name: str, value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_scalar(name, v) for v in value]
    raise TypeError(f"cannot save {name}={value!r} ({type(value).__name__}) without pickling; "
                    f"use plain numbers, strings or None")


def _split_state(delta: DeltaGPR) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    arrays: dict[str, np.ndarray] = {}
    scalars: dict[str, Any] = {}
    for name, value in vars(delta).items():
        if not name.endswith("_") or name.startswith("_") or name == "provenance_":
            continue
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "O" and all(isinstance(v, str) for v in value.ravel()):
                value = value.astype(str)  # feature_names_in_: saved as unicode, restored as object
            if value.dtype.kind not in "biufU":
                raise TypeError(f"cannot save array {name} of dtype {value.dtype} without pickling")
            arrays[name] = value
        else:
            scalars[name] = _scalar(name, value)
    return arrays, scalars


def save(delta: DeltaGPR, path: str | Path, backbone_card_name: str, weights_sha256: str) -> Path:
    """Save a fitted ``delta`` for the given backbone card and weights; returns the JSON path."""
    check_is_fitted(delta)
    if not backbone_card_name:
        raise ValueError("backbone_card_name must name the backbone card the Δ-model was fitted on")
    json_path, npz_path = model_paths(path)
    params = {k: _scalar(k, v) for k, v in delta.get_params(deep=False).items()}
    arrays, scalars = _split_state(delta)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "estimator": type(delta).__name__,
        "backbone": backbone_card_name,
        "weights_sha256": weights_sha256,
        "params": params,
        "attributes": scalars,
        "arrays": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in arrays.items()},
        "npz_file": npz_path.name,
    }
    meta = json.loads(json.dumps(meta))  # the hash is of what load will read back
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{JSON_HASH_KEY: np.array(json_sha256(meta))})
    data = buffer.getvalue()
    meta["npz_sha256"] = hashlib.sha256(data).hexdigest()
    write_atomic(npz_path, lambda fh: fh.write(data), mode="wb")
    write_json_atomic(json_path, meta)
    return json_path


def json_sha256(meta: dict[str, Any]) -> str:
    """sha256 of a Δ-model JSON's canonical form: sorted keys, no whitespace, without ``npz_sha256``."""
    content = {k: v for k, v in meta.items() if k != "npz_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _read_meta(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise FileNotFoundError(f"no saved Δ-model at {json_path}")
    try:
        meta = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeltaFileError(f"{json_path}: corrupt Δ-model file (not valid JSON: {exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DeltaFileError(f"{json_path}: not a uipbench Δ-model file")
    if meta.get("format_version") != FORMAT_VERSION:
        older = (" (saved by an older uipbench, whose JSON no hash covers: refit and save the model again)"
                 if meta.get("format_version") == 1 else "")
        raise DeltaFileError(f"{json_path}: format version {meta.get('format_version')!r}, this uipbench "
                             f"reads version {FORMAT_VERSION}{older}")
    missing = {"estimator", "backbone", "weights_sha256", "params", "attributes", "arrays", "npz_sha256"} - set(meta)
    if missing:
        raise DeltaFileError(f"{json_path}: corrupt Δ-model file (missing {', '.join(sorted(missing))})")
    if meta["estimator"] != DeltaGPR.__name__:
        raise DeltaFileError(f"{json_path}: holds a {meta['estimator']!r}, not a DeltaGPR")
    return meta


def _check_expected(meta: dict[str, Any], json_path: Path, expect_backbone: str | None,
                    expect_sha256: str | None) -> None:
    if expect_backbone is not None and meta["backbone"] != expect_backbone:
        raise BackboneMismatchError(f"{json_path}: Δ-model was fitted on backbone {meta['backbone']!r}, "
                                    f"not {expect_backbone!r}")
    if expect_sha256 is not None and meta["weights_sha256"] != expect_sha256:
        raise BackboneMismatchError(f"{json_path}: Δ-model was fitted on {meta['backbone']} weights with sha256 "
                                    f"{meta['weights_sha256']}, not {expect_sha256}; refit it for these weights")


def _read_arrays(npz_path: Path, meta: dict[str, Any], json_path: Path) -> dict[str, np.ndarray]:
    if not npz_path.is_file():
        raise DeltaFileError(f"{npz_path}: array file of the Δ-model is missing")
    data = npz_path.read_bytes()
    if hashlib.sha256(data).hexdigest() != meta["npz_sha256"]:
        raise DeltaFileError(f"{npz_path}: corrupt Δ-model arrays (sha256 differs from the one recorded in "
                             f"the JSON file: truncated, edited, or from another save)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DeltaFileError(f"{npz_path}: corrupt Δ-model arrays ({exc})") from exc
    _check_json_hash(arrays.pop(JSON_HASH_KEY, None), meta, json_path, npz_path)
    if set(arrays) != set(meta["arrays"]):
        raise DeltaFileError(f"{npz_path}: arrays {sorted(arrays)} differ from those recorded {sorted(meta['arrays'])}")
    for name, spec in meta["arrays"].items():
        if list(arrays[name].shape) != spec["shape"] or arrays[name].dtype.str != spec["dtype"]:
            raise DeltaFileError(f"{npz_path}: array {name} has shape {arrays[name].shape} and dtype "
                                 f"{arrays[name].dtype}, recorded {tuple(spec['shape'])} {spec['dtype']}")
    return arrays


def _check_json_hash(recorded: np.ndarray | None, meta: dict[str, Any], json_path: Path, npz_path: Path) -> None:
    """Refuse a JSON whose canonical sha256 is not the one its npz recorded when both were saved."""
    if recorded is None or recorded.shape != () or recorded.dtype.kind != "U":
        raise DeltaFileError(f"{npz_path}: no hash of the Δ-model's JSON in the array file; the pair is not "
                             f"one uipbench saved")
    actual = json_sha256(meta)
    if str(recorded) != actual:
        raise DeltaFileError(f"{json_path}: the Δ-model's JSON was changed after it was saved (its sha256 "
                             f"{actual[:12]}… differs from {str(recorded)[:12]}… recorded in "
                             f"{npz_path.name}); its parameters cannot be trusted: refit and save it again "
                             f"instead of editing the file")


def _params(meta_params: dict[str, Any], json_path: Path) -> dict[str, Any]:
    signature = inspect.signature(DeltaGPR.__init__).parameters
    unknown = set(meta_params) - set(signature)
    if unknown:
        raise DeltaFileError(f"{json_path}: unknown DeltaGPR parameters {sorted(unknown)}")
    params = dict(meta_params)
    for name, value in params.items():
        if isinstance(signature[name].default, tuple) and isinstance(value, list):
            params[name] = tuple(value)
    return params


def load(path: str | Path, expect_backbone: str | None = None, expect_sha256: str | None = None) -> DeltaGPR:
    """Load a Δ-model saved by :func:`save`; with ``expect_*`` refuse one fitted for another backbone/weights.

    The returned estimator carries ``provenance_`` (:class:`Provenance`).
    """
    json_path, npz_path = model_paths(path)
    meta = _read_meta(json_path)
    arrays = _read_arrays(npz_path, meta, json_path)
    _check_expected(meta, json_path, expect_backbone, expect_sha256)
    delta = DeltaGPR(**_params(meta["params"], json_path))
    for name, value in {**meta["attributes"], **arrays}.items():
        if not name.endswith("_") or name.startswith("_"):
            raise DeltaFileError(f"{json_path}: {name!r} is not a fitted attribute")
        if isinstance(value, np.ndarray) and value.dtype.kind == "U":
            value = value.astype(object)
        setattr(delta, name, value)
    delta.provenance_ = Provenance(meta["backbone"], meta["weights_sha256"], meta["format_version"])
    return delta
