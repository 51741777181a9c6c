"""Export to ONNX / SavedModel, and predicting through ONNX Runtime without Keras or TensorFlow.

Marked e2e: the Makefile reruns them under JAX, where `export` hands the work
to a TensorFlow subprocess. The model is a real network saved untrained (see
tiny_run.py); parity does not need a trained one.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tiny_run import make_run, random_uint8, real_chest_xrays, write_images

from ultrasonic.cli import main
from ultrasonic.errors import MissingExtraError, RunError

pytestmark = pytest.mark.e2e

PARITY = 1e-4  # float32 through two runtimes: measured differences are ~1e-6


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    """The default preset's network (32 px, grey), exported to ONNX through the CLI."""
    run = make_run(tmp_path_factory.mktemp("gray") / "run", "default", size=32, channels=1, threshold=0.42)
    assert main(["export", str(run)]) == 0
    return run


@pytest.fixture(scope="module")
def seed_run(tmp_path_factory):
    """The seed network (VGG preprocessing, RGB), exported through the Python API."""
    from ultrasonic.inference.export import export

    run = make_run(tmp_path_factory.mktemp("seed") / "run", "seed", size=64, channels=3)
    export(run)
    return run


def test_onnx_file_carries_classes_threshold_and_input(gray_run):
    import onnx

    proto = onnx.load(str(gray_run / "model.onnx"))
    carried = {p.key: json.loads(p.value) for p in proto.metadata_props}
    meta = json.loads((gray_run / "meta.json").read_text())
    for key in ("classes", "threshold", "positive_class", "image_size", "channels", "model_id"):
        assert carried[key] == meta[key], key
    sidecar = json.loads((gray_run / "model.onnx.json").read_text())
    assert sidecar["threshold"] == 0.42 and sidecar["classes"] == ["normal", "pneumonia"]
    assert sidecar["input"]["dtype"] == "uint8" and sidecar["input"]["shape"] == [None, 32, 32, 1]
    graph_input = proto.graph.input[0].type.tensor_type
    assert graph_input.elem_type == onnx.TensorProto.UINT8  # raw pixels, as the .keras model takes


@pytest.mark.parametrize("run_name", ["gray_run", "seed_run"])
def test_onnx_runtime_matches_keras_on_synthetic_images(run_name, request):
    from ultrasonic import Predictor

    run = request.getfixturevalue(run_name)
    keras_engine, onnx_engine = Predictor(run), Predictor(run, engine="onnx")
    images = random_uint8(37, keras_engine.image_size[0], keras_engine.channels, seed=3)  # 37: a partial batch
    expected = keras_engine.predict_proba(images, batch_size=16)
    got = onnx_engine.predict_proba(images, batch_size=16)
    assert got.shape == expected.shape == (37, 2)
    assert np.abs(got - expected).max() < PARITY
    assert expected[:, 1].std() > 1e-3  # the images give different answers, so agreement means something


def test_onnx_runtime_matches_keras_on_real_chest_xrays(seed_run):
    from ultrasonic import Predictor

    files = real_chest_xrays(4)
    if not files:
        pytest.skip("../shared/data/chest_xray_224 is absent")
    by_keras = Predictor(seed_run).predict_files(files)
    by_onnx = Predictor(seed_run, engine="onnx").predict_files(files)
    for a, b in zip(by_keras, by_onnx):
        assert a["file"] == b["file"] and a["class"] == b["class"]
        for c in a["probabilities"]:
            assert abs(a["probabilities"][c] - b["probabilities"][c]) < PARITY


def test_predict_with_onnx_engine_imports_neither_keras_nor_tensorflow(gray_run, tmp_path):
    files = write_images(tmp_path / "imgs", 3, size=40)
    script = textwrap.dedent(f"""
        import json, sys
        from ultrasonic.cli import main
        from ultrasonic.inference.predictor import Predictor
        rows = Predictor({str(gray_run)!r}, engine="onnx").predict_files({[str(f) for f in files]!r})
        code = main(["-q", "predict", {str(gray_run)!r}, {str(tmp_path / "imgs")!r}, "--engine", "onnx",
                     "--out", {str(tmp_path / "p.csv")!r}])
        print(json.dumps({{"rows": rows, "code": code, "loaded": [m for m in ("keras", "tensorflow", "jax")
                                                                  if m in sys.modules]}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["code"] == 0 and len(result["rows"]) == 3
    assert all(r["class"] in ("normal", "pneumonia") and r["threshold"] == 0.42 for r in result["rows"])
    assert len((tmp_path / "p.csv").read_text().strip().splitlines()) == 1 + 3


def test_onnx_from_another_model_is_refused(gray_run, tmp_path):
    from ultrasonic import Predictor

    stale = make_run(tmp_path / "retrained", "default", size=32, channels=1, seed=1)
    (stale / "model.onnx").write_bytes((gray_run / "model.onnx").read_bytes())
    with pytest.raises(RunError, match="export it again"):
        Predictor(stale, engine="onnx")
    with pytest.raises(RunError, match="ultrasonic export"):
        Predictor(make_run(tmp_path / "never_exported"), engine="onnx")


def test_savedmodel_takes_uint8_and_gives_the_same_probabilities(gray_run, tmp_path, capsys):
    import tensorflow as tf

    from ultrasonic import Predictor

    out = tmp_path / "exported" / "sm"
    assert main(["export", str(gray_run), "--format", "savedmodel", "--out", str(out)]) == 0
    assert "exported:" in capsys.readouterr().out
    assert json.loads((tmp_path / "exported" / "sm.json").read_text())["format"] == "savedmodel"
    images = random_uint8(5, 32, 1, seed=7)
    loaded = tf.saved_model.load(str(out))  # kept: its variables die with it
    served = loaded.serve(tf.constant(images)).numpy()[:, 0]
    expected = Predictor(gray_run).predict_proba(images)[:, 1]
    assert np.abs(served - expected).max() < PARITY


def test_onnx_export_without_the_onnx_extra_names_the_pip_command(tmp_path, monkeypatch):
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("under another backend the export runs in a TensorFlow subprocess, which this cannot patch")
    from ultrasonic.inference.export import export

    run = make_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "tf2onnx", None)
    with pytest.raises(MissingExtraError, match=r"ONNX export needs .*'tf2onnx'.*pip install 'ultrasonic\[onnx\]'"):
        export(run)
    assert not (run / "model.onnx").exists()
