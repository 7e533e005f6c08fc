"""Safe save/load of Δ-models: identical predictions, provenance checks, corrupt files, no pickle."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from tests.core.delta_synthetic import make
from uipbench.delta import BackboneMismatchError, DeltaFileError, DeltaGPR, load, save
from uipbench.delta.io import model_paths

SHA = "0123456789abcdef" * 4


@pytest.fixture(scope="module")
def data():
    return make(40, seed=0), make(15, seed=1)


@pytest.mark.parametrize("model", [
    DeltaGPR("global", random_state=0),
    DeltaGPR("species", reduce="mean", random_state=0),
    DeltaGPR("atomic", same_species=True, random_state=0),
    DeltaGPR("atomic", sparse=True, n_inducing=40, random_state=0),
], ids=["global", "species", "atomic", "atomic-sparse"])
def test_round_trip_gives_identical_predictions(data, tmp_path, model):
    train, test = data
    model.fit(train.X, train.y)
    json_path = save(model, tmp_path / "delta", "chgnet-0.3.0", SHA)
    assert json_path == tmp_path / "delta.json" and (tmp_path / "delta.npz").is_file()
    loaded = load(tmp_path / "delta", expect_backbone="chgnet-0.3.0", expect_sha256=SHA)
    assert loaded.get_params() == model.get_params()
    assert loaded.provenance_.backbone == "chgnet-0.3.0" and loaded.provenance_.weights_sha256 == SHA
    mean, std = model.predict(test.X, return_std=True)
    mean2, std2 = loaded.predict(test.X, return_std=True)
    np.testing.assert_array_equal(mean, mean2)
    np.testing.assert_array_equal(std, std2)
    np.testing.assert_array_equal(model.predict_baseline(test.X), loaded.predict_baseline(test.X))
    np.load(tmp_path / "delta.npz", allow_pickle=False)  # readable without pickle
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left


def test_round_trip_of_a_dataframe_fit(tmp_path):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(20, 3)), columns=["a", "b", "c"])
    y = X["a"].to_numpy() ** 2
    model = DeltaGPR(random_state=0).fit(X, y)
    loaded = load(save(model, tmp_path / "df.json", "toy", SHA))
    np.testing.assert_array_equal(loaded.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(model.predict(X), loaded.predict(X))


def test_other_backbone_or_weights_is_refused(data, tmp_path):
    train, _ = data
    save(DeltaGPR(random_state=0).fit(train.X, train.y), tmp_path / "m", "chgnet-0.3.0", SHA)
    with pytest.raises(BackboneMismatchError, match="fitted on backbone 'chgnet-0.3.0', not 'sevennet-0'"):
        load(tmp_path / "m", expect_backbone="sevennet-0")
    with pytest.raises(BackboneMismatchError, match="refit it for these weights"):
        load(tmp_path / "m", expect_backbone="chgnet-0.3.0", expect_sha256="f" * 64)


@pytest.fixture
def saved(data, tmp_path):
    train, _ = data
    save(DeltaGPR(random_state=0).fit(train.X, train.y), tmp_path / "m", "toy", SHA)
    return model_paths(tmp_path / "m")


def test_corrupt_json(saved):
    json_path, _ = saved
    json_path.write_text(json_path.read_text()[:50])
    with pytest.raises(DeltaFileError, match="not valid JSON"):
        load(json_path)


def test_corrupt_or_swapped_npz(saved, data, tmp_path):
    json_path, npz_path = saved
    data_bytes = npz_path.read_bytes()
    npz_path.write_bytes(data_bytes[: len(data_bytes) // 2])
    with pytest.raises(DeltaFileError, match="sha256 differs"):
        load(json_path)
    npz_path.unlink()
    with pytest.raises(DeltaFileError, match="missing"):
        load(json_path)


def test_npz_that_is_not_a_zip_is_a_clear_error(saved):
    json_path, npz_path = saved
    npz_path.write_bytes(b"not a zip file at all")
    meta = json.loads(json_path.read_text())
    meta["npz_sha256"] = hashlib.sha256(b"not a zip file at all").hexdigest()
    json_path.write_text(json.dumps(meta))
    with pytest.raises(DeltaFileError, match="corrupt Δ-model arrays"):
        load(json_path)


def test_wrong_format_or_version(saved):
    json_path, _ = saved
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps(dict(meta, format_version=99)))
    with pytest.raises(DeltaFileError, match="format version 99"):
        load(json_path)
    json_path.write_text(json.dumps({"something": "else"}))
    with pytest.raises(DeltaFileError, match="not a uipbench Δ-model"):
        load(json_path)


def test_missing_file_and_unfitted_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved Δ-model"):
        load(tmp_path / "nothing")
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        save(DeltaGPR(), tmp_path / "x", "toy", SHA)


def test_unsaveable_random_state_is_refused(data, tmp_path):
    train, _ = data
    model = DeltaGPR(random_state=np.random.RandomState(0)).fit(train.X, train.y)
    with pytest.raises(TypeError, match="without pickling"):
        save(model, tmp_path / "m", "toy", SHA)
    assert not (tmp_path / "m.json").exists()


def _edit_json(json_path, edit) -> None:
    meta = json.loads(json_path.read_text())
    edit(meta)
    json_path.write_text(json.dumps(meta, indent=2))


@pytest.mark.parametrize("field, edit", [
    ("params.aggregation", lambda m: m["params"].update(aggregation="atomic")),
    ("params.reduce", lambda m: m["params"].update(reduce="mean")),
    ("an attribute", lambda m: m["attributes"].update({next(iter(m["attributes"])): 1.0})),
    ("backbone", lambda m: m.update(backbone="sevennet-0")),
    ("weights_sha256", lambda m: m.update(weights_sha256="f" * 64)),
    ("an added field", lambda m: m.update(note="hello")),
], ids=["aggregation", "reduce", "attribute", "backbone", "weights", "added-field"])
def test_edited_json_is_refused_with_the_file_named(saved, field, edit):
    json_path, npz_path = saved
    npz_before = npz_path.read_bytes()
    _edit_json(json_path, edit)
    assert npz_path.read_bytes() == npz_before                    # the npz is untouched: its own hash still holds
    with pytest.raises(DeltaFileError) as info:
        load(json_path)
    msg = str(info.value)
    assert msg.startswith(f"{json_path}: the Δ-model's JSON was changed after it was saved"), msg
    assert npz_path.name in msg and "refit" in msg


def test_edited_json_is_refused_before_it_is_used(saved):
    """A JSON edited to claim another backbone is refused as edited, not reported as a backbone mismatch."""
    json_path, _ = saved
    _edit_json(json_path, lambda m: m.update(backbone="sevennet-0"))
    with pytest.raises(DeltaFileError, match="JSON was changed after it was saved"):
        load(json_path, expect_backbone="sevennet-0")


def test_reformatted_json_still_loads_and_predicts_identically(data, tmp_path):
    train, test = data
    model = DeltaGPR("species", random_state=0).fit(train.X, train.y)
    json_path = save(model, tmp_path / "m", "toy", SHA)
    meta = json.loads(json_path.read_text())
    json_path.write_text(json.dumps(dict(reversed(list(meta.items())))))  # other key order, no indentation
    loaded = load(json_path)
    np.testing.assert_array_equal(model.predict(test.X), loaded.predict(test.X))


def test_npz_without_the_json_hash_is_refused(saved):
    """A pair whose npz does not pin the JSON (e.g. written by hand, npz_sha256 updated to match) is refused."""
    import io as _io

    json_path, npz_path = saved
    with np.load(npz_path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files if k != "__json_sha256__"}
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    npz_path.write_bytes(buffer.getvalue())
    _edit_json(json_path, lambda m: m.update(npz_sha256=hashlib.sha256(buffer.getvalue()).hexdigest()))
    with pytest.raises(DeltaFileError, match="no hash of the Δ-model's JSON"):
        load(json_path)


def test_a_version_1_file_asks_for_a_refit(saved):
    json_path, _ = saved
    _edit_json(json_path, lambda m: m.update(format_version=1))
    with pytest.raises(DeltaFileError, match="format version 1, this uipbench reads version 2 .*refit"):
        load(json_path)
