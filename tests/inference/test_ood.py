"""The out-of-distribution gate: its scores and threshold (pure numpy), and the gate in every place a
prediction goes: the Predictor under the seed, default and a keras.applications network, ONNX, the CLI.

The networks are untrained (tiny_run.make_run); the gate is fitted on synthetic lesion images, as
`train` fits it on the training split. Untrained features still separate a constant, noise or
gradient image from the lesion images by far; benchmarks/ood.py measures trained models.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from tiny_run import gated_run, make_run

from ultrasonic.config import load_config
from ultrasonic.data.synthetic import lesion_images
from ultrasonic.errors import ConfigError, RunError
from ultrasonic.inference.ood import (MESSAGE, OodGate, auroc, energy_scores, fit_gate, fit_mahalanobis,
                                      mahalanobis_scores, msp_scores, pooled, threshold_for)

SIZE = 32


# ---- the scores, pure numpy ----

def test_msp_of_a_sigmoid_is_one_minus_the_larger_of_p_and_one_minus_p():
    probs = np.array([[0.1, 0.9], [0.5, 0.5], [0.7, 0.3]])
    np.testing.assert_allclose(msp_scores(probs), [0.1, 0.5, 0.3])


def test_energy_of_a_sigmoid_uses_the_centred_logits_and_ranks_as_msp():
    p = np.array([0.5, 0.73, 0.99, 0.02])
    probs = np.stack([1 - p, p], axis=1)
    z = np.log(p / (1 - p)) / 2  # the two-logit softmax form of a sigmoid: [-z, z]
    np.testing.assert_allclose(energy_scores(probs), -np.logaddexp(-z, z), rtol=1e-9)
    assert (np.argsort(energy_scores(probs)) == np.argsort(msp_scores(probs))).all()


def test_energy_is_highest_for_a_flat_softmax():
    probs = np.array([[1 / 3, 1 / 3, 1 / 3], [0.8, 0.1, 0.1], [0.98, 0.01, 0.01]])
    energy = energy_scores(probs)
    assert energy[0] > energy[1] > energy[2]


def test_mahalanobis_is_small_near_a_class_mean_and_large_far_away():
    rng = np.random.default_rng(0)
    features = np.concatenate([rng.normal(0, 1, (200, 8)), rng.normal(5, 1, (200, 8))])
    labels = np.repeat([0, 1], 200)
    means, precision = fit_mahalanobis(features, labels, 2)
    np.testing.assert_allclose(means[1], 5, atol=0.3)
    at_mean, near, far = mahalanobis_scores(np.stack([means[0], means[1] + 0.1, np.full(8, 30.0)]), means, precision)
    assert at_mean < 1e-9 and near < 1 and far > 1000
    # squared distance in the shared covariance's metric: about D = 8 on average for a sample of a class
    assert 6 < mahalanobis_scores(rng.normal(0, 1, (500, 8)), means, precision).mean() < 10


def test_the_ridge_makes_fewer_images_than_features_usable():
    rng = np.random.default_rng(1)
    means, precision = fit_mahalanobis(rng.normal(0, 1, (10, 64)), np.arange(10) % 2, 2)
    assert np.isfinite(precision).all()
    assert np.isfinite(mahalanobis_scores(rng.normal(0, 1, (3, 64)), means, precision)).all()


def test_a_feature_map_is_pooled_over_space():
    maps = np.arange(2 * 3 * 3 * 4, dtype=float).reshape(2, 3, 3, 4)
    np.testing.assert_allclose(pooled(maps), maps.mean(axis=(1, 2)))


def test_threshold_refuses_at_most_the_chosen_share_of_validation_scores():
    scores = np.random.default_rng(2).normal(size=1000)
    for rate in (0.01, 0.05, 0.2):
        assert np.mean(scores > threshold_for(scores, rate)) <= rate
        assert np.mean(scores > threshold_for(scores, rate)) >= rate - 0.002


def test_auroc_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(3)
    inside, outside = rng.integers(0, 5, 50).astype(float), rng.integers(2, 8, 30).astype(float)
    expected = roc_auc_score(np.r_[np.zeros(50), np.ones(30)], np.r_[inside, outside])
    assert auroc(inside, outside) == pytest.approx(expected)
    assert auroc(np.zeros(3), np.ones(4)) == 1.0


def test_gate_saves_and_loads_and_refuses_a_bad_block(tmp_path):
    rng = np.random.default_rng(4)
    gate = fit_gate(rng.normal(size=(40, 6)), np.arange(40) % 2, 2, np.full((20, 2), 0.5), rng.normal(size=(20, 6)))
    gate.save(tmp_path / "ood.npz")
    again = OodGate.load(tmp_path / "ood.npz", {"method": gate.method, "thresholds": gate.thresholds})
    np.testing.assert_array_equal(again.precision, gate.precision)
    assert again.threshold == gate.threshold
    with pytest.raises(RunError, match="key 'ood'"):
        OodGate.load(tmp_path / "ood.npz", {"method": "guess", "thresholds": {}})
    (tmp_path / "bad.npz").write_bytes(b"not numpy")
    with pytest.raises(RunError, match="bad.npz"):
        OodGate.load(tmp_path / "bad.npz", {"method": "msp", "thresholds": {"msp": 0.1}})


def test_false_rejection_setting_is_checked_up_front():
    assert load_config().ood_false_rejection == 0.01
    with pytest.raises(ConfigError, match="ood_false_rejection"):
        load_config(overrides={"ood_false_rejection": 0.6})
    with pytest.raises(ConfigError, match="ood_method"):
        load_config(overrides={"ood_method": "vibes"})


# ---- the gate in a run ----

def out_of_distribution() -> np.ndarray:
    """Constant (black, grey, white), noise and gradient images at the runs' size."""
    rng = np.random.default_rng(5)
    ramp = np.tile(np.linspace(0, 255, SIZE)[None, :], (SIZE, 1))
    images = [np.zeros((SIZE, SIZE)), np.full((SIZE, SIZE), 128), np.full((SIZE, SIZE), 255),
              rng.integers(0, 256, (SIZE, SIZE)), ramp, ramp.T]
    return np.stack(images).astype(np.uint8)[..., None]


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    return gated_run(tmp_path_factory.mktemp("ood_default") / "run")


@pytest.mark.e2e
@pytest.mark.parametrize("preset,model,channels", [("default", None, 1),
                                                     # the gate on a second network: the same code (4 min under JAX)
                                                     pytest.param("default", "mobilenetv2", 1, marks=pytest.mark.once)])
def test_gate_passes_lesion_images_and_refuses_constant_noise_and_gradients(tmp_path, preset, model, channels):
    from ultrasonic.inference.predictor import Predictor

    predictor = Predictor(gated_run(tmp_path / "run", preset, model, channels))
    inside, _, _ = lesion_images(40, size=SIZE, channels=channels, seed=9)  # images the gate never saw
    outside = np.repeat(out_of_distribution(), channels, axis=-1)
    rows = predictor.rows([f"in{i}" for i in range(40)], *predictor.predict_scored(inside))
    refused = predictor.rows([f"out{i}" for i in range(len(outside))], *predictor.predict_scored(outside))
    assert sum(not r["in_distribution"] for r in rows) <= 4  # 1 % on validation; 40 new images
    assert all(r["class"] in predictor.classes and "message" not in r for r in rows if r["in_distribution"])
    assert all(not r["in_distribution"] and r["class"] is None for r in refused), \
        [(r["ood_score"], predictor.gate.threshold) for r in refused]
    assert all(r["message"].startswith(MESSAGE) and f"{r['ood_score']:.4g}" in r["message"] for r in refused)
    assert all(r["probabilities"] for r in refused)  # the model's answer stays visible


@pytest.mark.e2e
def test_gate_runs_on_the_seed_network(tmp_path):
    """The seed's "drop_features" is a feature map (before its pooling): the gate pools it. Its features do
    not separate these synthetic sets (untrained, or trained briefly on lesions; LayerNormalization over
    the image height removes the brightness a constant image differs by): only the mechanism is pinned."""
    from ultrasonic.inference.predictor import Predictor

    predictor = Predictor(gated_run(tmp_path / "run", "seed", None, 3))
    inside, _, _ = lesion_images(40, size=SIZE, channels=3, seed=9)
    probs, scores = predictor.predict_scored(inside)
    assert scores.shape == (40,) and np.isfinite(scores).all()
    assert np.mean(scores > predictor.gate.threshold) <= 0.1


def test_warn_keeps_the_class_and_off_scores_nothing(default_run):
    from ultrasonic.inference.predictor import Predictor

    black = out_of_distribution()[:1]
    warned = Predictor(default_run, ood="warn")
    row = warned.rows(["black"], *warned.predict_scored(black))[0]
    assert row["class"] in warned.classes and row["in_distribution"] is False and MESSAGE in row["message"]
    off = Predictor(default_run, ood="off")
    row = off.rows(["black"], *off.predict_scored(black))[0]
    assert row["class"] in off.classes and row["ood_score"] is None and row["in_distribution"] is None
    with pytest.raises(ConfigError, match="--ood"):
        Predictor(default_run, ood="sometimes")


def test_a_run_from_before_the_gate_predicts_without_one(tmp_path):
    from ultrasonic.inference.predictor import Predictor

    predictor = Predictor(make_run(tmp_path / "old", size=SIZE))
    row = predictor.rows(["black"], *predictor.predict_scored(out_of_distribution()[:1]))[0]
    assert row["class"] in predictor.classes and row["ood_score"] is None and row["in_distribution"] is None


def test_keras_model_file_stays_single_output(default_run):
    import keras

    model = keras.saving.load_model(default_run / "model.keras", safe_mode=True, compile=False)
    assert len(model.outputs) == 1


@pytest.mark.e2e
def test_onnx_scores_equal_keras_scores(default_run):
    pytest.importorskip("onnxruntime")
    from ultrasonic.inference.export import export
    from ultrasonic.inference.predictor import Predictor

    export(default_run)
    images = np.concatenate([lesion_images(8, size=SIZE, seed=3)[0], out_of_distribution()])
    keras_probs, keras_scores = Predictor(default_run).predict_scored(images)
    onnx_probs, onnx_scores = Predictor(default_run, engine="onnx").predict_scored(images)
    np.testing.assert_allclose(onnx_probs, keras_probs, atol=1e-4)
    np.testing.assert_allclose(onnx_scores, keras_scores, rtol=1e-3)


def test_cli_predict_says_not_like_the_training_images_in_table_csv_and_json(default_run, tmp_path, capsys):
    from PIL import Image

    from ultrasonic.cli import main

    black = tmp_path / "gradient.png"  # an all-black image is refused before the gate: blank (data/quality.py)
    Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))).save(black)
    assert main(["predict", str(default_run), str(black)]) == 0
    assert MESSAGE in capsys.readouterr().out
    assert main(["predict", str(default_run), str(black), "--format", "json"]) == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["class"] is None and row["in_distribution"] is False and row["ood_score"] > 0
    assert main(["predict", str(default_run), str(black), "--format", "csv"]) == 0
    line = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert line["class"] == "" and line["in_distribution"] == "false" and line["message"].startswith(MESSAGE)
    assert main(["predict", str(default_run), str(black), "--format", "json", "--ood", "off"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["class"] is not None


def test_audit_log_records_the_verdict_and_an_old_log_gets_the_columns(tmp_path):
    from ultrasonic.serve.audit import SCHEMA, AuditLog

    path = tmp_path / "audit.sqlite"
    with sqlite3.connect(path) as conn:  # a log written before the gate
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO predictions (time, model_id, sha256, file, class, probabilities, threshold, "
                     "client) VALUES ('t', 'm', 's', 'old.png', 'normal', '{}', 0.5, NULL)")
    log = AuditLog(path)
    log.record(model_id="m", sha256="s2", file="black.png", label=None, probabilities={"normal": 0.2},
               threshold=0.5, client=None, ood_score=1234.5, in_distribution=False, message=f"{MESSAGE} (...)")
    new, old = log.page()
    assert new["class"] is None and new["in_distribution"] is False and new["ood_score"] == 1234.5
    assert new["message"].startswith(MESSAGE)
    assert old["class"] == "normal" and old["in_distribution"] is None and old["ood_score"] is None
