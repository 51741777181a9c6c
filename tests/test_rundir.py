"""RunDir and RunMeta: the file names of a run, and meta.json read back checked, key by key."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ultrasonic.errors import RunError
from ultrasonic.rundir import CARRIED, META_FORMAT, EvalDir, RunDir, RunMeta, sidecar_path

# The keys `train` writes, in its order: users and scripts read meta.json as JSON.
TRAIN_KEYS = ["format", "model_id", "task", "classes", "positive_class", "image_size", "channels", "input",
              "threshold", "threshold_method", "operating_point", "temperature", "calibration", "validation",
              "best_epoch", "train_seconds", "preset", "data", "backend", "versions", "created", "ood", "external"]


def full_meta() -> RunMeta:
    return RunMeta(model_id="0123456789abcdef", task="binary", classes=["NORMAL", "PNEUMONIA"],
                   positive_class="PNEUMONIA", image_size=(64, 64), channels=1, threshold=0.37,
                   threshold_method="Youden's J on the validation split", operating_point="youden",
                   temperature=1.7, calibration={"before": {"ece": 0.1}, "after": {"ece": 0.02}},
                   validation={"roc_auc": 0.9, "accuracy": 0.8}, best_epoch=3, train_seconds=12.5, preset="default",
                   data={"path": "/data/cxr", "kind": "folder", "fingerprint": "f" * 32, "counts": {}},
                   backend="tensorflow", versions={"ultrasonic": "0.1.0"}, created="2025-01-01T00:00:00+00:00")


def write_raw(tmp_path, obj) -> RunDir:
    run = RunDir(tmp_path)
    run.meta_path.write_text(json.dumps(obj))
    return run


def test_meta_round_trips_and_keeps_the_json_train_has_always_written(tmp_path):
    run = RunDir(tmp_path)
    run.write_meta(full_meta())
    assert run.read_meta() == full_meta()
    on_disk = json.loads(run.meta_path.read_text())
    assert list(on_disk) == TRAIN_KEYS
    assert on_disk["format"] == META_FORMAT and on_disk["image_size"] == [64, 64]


def test_a_meta_from_before_calibration_loads_with_no_temperature(tmp_path):
    obj = full_meta().to_json()
    for key in ("operating_point", "temperature", "calibration"):
        del obj[key]
    meta = write_raw(tmp_path, obj).read_meta()
    assert meta.temperature is None and meta.calibration is None and meta.operating_point is None


@pytest.mark.parametrize("key", CARRIED)
def test_a_missing_required_key_is_a_run_error_naming_the_file_and_the_key(tmp_path, key):
    obj = full_meta().to_json()
    del obj[key]
    run = write_raw(tmp_path, obj)
    with pytest.raises(RunError, match=f"key '{key}' is missing") as info:
        run.read_meta()
    assert str(info.value).startswith(f"{run.meta_path}: ")


@pytest.mark.parametrize("key, value, expected", [
    ("image_size", "64", "a list of 2 integers"),
    ("image_size", [64, 64, 64], "a list of 2 integers"),
    ("channels", True, "an integer"),
    ("threshold", "0.5", "a number"),
    ("classes", ["a", 2], "a list of strings"),
    ("best_epoch", 2.5, "an integer or null"),
    ("external", "eval_external", "an object or null"),
])
def test_a_value_of_the_wrong_type_is_a_run_error_naming_the_key(tmp_path, key, value, expected):
    run = write_raw(tmp_path, {**full_meta().to_json(), key: value})
    with pytest.raises(RunError, match=f"key '{key}' is .*, not {expected};") as info:
        run.read_meta()
    assert str(info.value).startswith(f"{run.meta_path}: ")


def test_a_positive_class_that_is_not_a_class_is_refused(tmp_path):
    run = write_raw(tmp_path, {**full_meta().to_json(), "positive_class": "pneumonia"})
    with pytest.raises(RunError, match="key 'positive_class' 'pneumonia' is not one of"):
        run.read_meta()


def test_a_newer_format_asks_for_an_upgrade(tmp_path):
    run = write_raw(tmp_path, {**full_meta().to_json(), "format": META_FORMAT + 1, "classes": None})
    with pytest.raises(RunError, match=f"{run.meta_path}: made by a newer ultrasonic .* upgrade"):
        run.read_meta()


@pytest.mark.parametrize("text", ['{"model_id": ', "[1, 2]", "\xff\xfe"])
def test_bad_json_is_a_run_error_naming_the_file(tmp_path, text):
    run = RunDir(tmp_path)
    run.meta_path.write_bytes(text.encode("latin-1"))
    with pytest.raises(RunError, match="not valid JSON|not a JSON object") as info:
        run.read_meta()
    assert str(info.value).startswith(f"{run.meta_path}: ")


def test_no_meta_json_says_this_is_not_a_finished_run(tmp_path):
    with pytest.raises(RunError, match="no meta.json"):
        RunDir(tmp_path).read_meta()


def test_unknown_keys_are_kept_and_written_back(tmp_path):
    run = write_raw(tmp_path, {**full_meta().to_json(), "lineage": {"from": "runs/old"}})
    meta = run.read_meta()
    assert meta.extra == {"lineage": {"from": "runs/old"}}
    run.write_meta(replace(meta, threshold=0.4))
    assert json.loads(run.meta_path.read_text())["lineage"] == {"from": "runs/old"}


def test_a_run_without_the_training_record_still_loads(tmp_path):
    """Only what the model is is required; how it was trained (data, versions, ...) may be absent."""
    run = write_raw(tmp_path, full_meta().carried())
    meta = run.read_meta()
    assert meta.classes == ["NORMAL", "PNEUMONIA"] and meta.image_size == (64, 64)
    assert meta.data is None and meta.best_epoch is None and meta.versions == {}


def test_carried_is_what_an_exported_model_takes_with_it():
    assert full_meta().carried() == {"model_id": "0123456789abcdef", "task": "binary",
                                     "classes": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA",
                                     "image_size": [64, 64], "channels": 1, "threshold": 0.37}


def test_the_file_names_a_user_sees(tmp_path):
    run = RunDir(tmp_path)
    names = {name: getattr(run, name).name for name in ("model", "checkpoint_state", "meta_path", "config",
                                                        "splits", "history", "curves", "data_report", "onnx",
                                                        "savedmodel", "audit", "eval", "eval_external",
                                                        "folds", "cv", "cv_predictions")}
    assert names == {"model": "model.keras", "checkpoint_state": "checkpoint.json", "meta_path": "meta.json",
                     "config": "config.yaml", "splits": "splits.csv", "history": "history.csv",
                     "curves": "curves.png", "data_report": "data_report.json", "onnx": "model.onnx",
                     "savedmodel": "savedmodel", "audit": "audit.sqlite", "eval": "eval",
                     "eval_external": "eval_external", "folds": "folds", "cv": "cv.json",
                     "cv_predictions": "cv_predictions.csv"}
    out = run.evaluation
    assert [p.relative_to(tmp_path).as_posix() for p in (out.metrics, out.confusion_matrix, out.roc, out.pr,
                                                         out.report)] == \
        ["eval/metrics.json", "eval/confusion_matrix.png", "eval/roc.png", "eval/pr.png", "eval/report.html"]
    assert EvalDir(tmp_path / "elsewhere").report == tmp_path / "elsewhere" / "report.html"
    assert sidecar_path(run.onnx) == tmp_path / "model.onnx.json"
    assert sidecar_path(run.savedmodel) == tmp_path / "savedmodel.json"


def test_model_file_of_each_engine_and_an_unknown_engine(tmp_path):
    run = RunDir(tmp_path)
    assert run.model_file("keras") == run.model and run.model_file("onnx") == run.onnx
    with pytest.raises(RunError, match="engine 'torch' is not one of"):
        run.model_file("torch")
