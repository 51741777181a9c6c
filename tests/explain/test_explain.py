"""Grad-CAM: the arithmetic, the backend gradient against an analytic one, the overlay PNG, a pointing
game on both classes of a network whose weights are set by hand (evidence for each class at a known place,
the positive decision carried by the bias as in the 2-epoch chest X-ray model of gradcam.py), and a
pointing game on trained models: on synthetic chests where only a small lesion decides the class, the
heat map's peak must fall inside the lesion.

Tests marked e2e run again under KERAS_BACKEND=jax (Makefile): the gradient is backend-specific.
The pointing games (also marked slow: five trainings) run under TensorFlow only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from ultrasonic.data.synthetic import lesion_images
from ultrasonic.errors import RunError, UltrasonicError
from ultrasonic.explain.gradcam import _cam, _cam_names, default_target_layer, gradcam, last_conv_layer, overlay_png
from ultrasonic.explain.gradients import conv_output_and_grad, conv_output_grad_and_score
from ultrasonic.explain.overlay import is_empty
from ultrasonic.models.build import LOGITS, TEMPERATURE

SIZE = 64  # the lesion radius is 4-6 px at 64 px
POINTING = 0.8  # share of positive test images whose heat-map peak must be in the lesion
DILATE = 2  # px added around the lesion mask: the peak of a map upsampled from 8 x 8 cells may sit on its rim


def gap_model(channels: int = 3, units: int = 1) -> keras.Model:
    """uint8 image -> conv -> ReLU -> global average -> Dense: d logit / dA is known exactly."""
    inputs = keras.Input((8, 8, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(channels, 3, padding="same", name="conv")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(units, activation="sigmoid" if units == 1 else "softmax", name="probability")(x)
    return keras.Model(inputs, outputs)


def random_images(n: int, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)


# ---- arithmetic and checks ------------------------------------------------------------------------

def test_cam_is_relu_of_gradient_weighted_maps():
    fmap = np.zeros((1, 2, 2, 2), np.float32)
    fmap[0, :, :, 0] = [[1, 0], [0, 0]]
    fmap[0, :, :, 1] = [[0, 0], [0, 3]]
    grads = np.zeros_like(fmap)
    grads[0, ..., 0], grads[0, ..., 1] = 2.0, -1.0  # weights 2 and -1
    assert np.allclose(_cam(fmap, grads)[0], [[2, 0], [0, 0]])  # -3 at (1, 1) is cut by the ReLU


def test_the_baseline_shifts_an_all_negative_map_so_its_least_negative_cell_shows():
    fmap = np.ones((1, 2, 2, 1), np.float32)
    fmap[0, :, :, 0] = [[1, 2], [3, 4]]
    grads = np.full_like(fmap, -1.0)  # every cell pushes against the class: plain Grad-CAM is all zero
    assert not _cam(fmap, grads).any()
    shifted = _cam(fmap, grads, offset=np.array([3.0]))  # [[2, 1], [0, -1]] before the ReLU
    assert np.allclose(shifted[0], [[2, 1], [0, 0]])
    tiny = _cam(fmap, grads, offset=np.array([1.0 + 1e-9]))  # a positive peak that is rounding noise
    assert not tiny.any()


@pytest.mark.e2e
def test_gradient_matches_the_analytic_one_for_each_class():
    model = gap_model()
    images = random_images(4)
    fmap, grads = conv_output_and_grad(model, images, "relu", None)
    w = keras.ops.convert_to_numpy(model.get_layer("probability").kernel)[:, 0]
    expected = np.broadcast_to(w / 64, grads.shape)  # d logit / dA = w_k / (h * w) everywhere
    assert np.allclose(grads, expected, atol=1e-6)
    assert fmap.shape == (4, 8, 8, 3) and fmap.min() >= 0
    _, negative = conv_output_and_grad(model, images, "relu", 0)
    assert np.allclose(negative, -expected, atol=1e-6)  # class 0 of a sigmoid model: -logit


@pytest.mark.e2e
def test_softmax_class_none_explains_the_arg_max_class():
    model = gap_model(units=3)
    images = random_images(6, seed=1)
    chosen = model.predict(images, verbose=0).argmax(axis=1)
    _, grads = conv_output_and_grad(model, images, "relu", None)
    kernel = keras.ops.convert_to_numpy(model.get_layer("probability").kernel)
    assert np.allclose(grads[:, 0, 0, :], kernel[:, chosen].T / 64, atol=1e-6)


def test_gradcam_shape_range_and_input_checks():
    model = gap_model()
    maps = gradcam(model, random_images(3), layer="relu")
    assert maps.shape == (3, 8, 8) and maps.dtype == np.float32
    assert maps.min() >= 0 and all(m.max() in (0.0, 1.0) for m in maps)
    with pytest.raises(UltrasonicError, match="uint8"):
        gradcam(model, random_images(1).astype(np.float32))
    with pytest.raises(UltrasonicError, match="shape"):
        gradcam(model, random_images(1, size=9))
    with pytest.raises(UltrasonicError, match="out of range"):
        gradcam(model, random_images(1), class_index=2)
    with pytest.raises(RunError, match="no layer 'nope'.*conv"):
        gradcam(model, random_images(1), layer="nope")
    with pytest.raises(RunError, match="4-D"):
        gradcam(model, random_images(1), layer="gap")


# ---- both classes: a network set by hand, evidence for each class at a known place ----------------------

SPOT, BACKGROUND = 4, 128  # a 4 x 4 px spot on a 16 x 16 px mid-grey image (no feature fires on it, borders too)


def two_spot_model(temperature: float = 2.0) -> keras.Model:
    """Bright spot = class 1, dark spot = class 0; a third feature fires everywhere and pushes to class 0.

    As in the 2-epoch chest X-ray model (gradcam.py): every cell's linear push is toward class 0, even on
    the bright spot (100 * 0.4 - 50 < 0), and the positive calls come from the bias. Plain Grad-CAM gives the
    positive class an all-zero map there.
    """
    inputs = keras.Input((16, 16, 1), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    conv = keras.layers.Conv2D(3, 3, padding="same", name="conv")
    x = keras.layers.ReLU(name="relu")(conv(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(1, name=LOGITS)
    x = keras.layers.Rescaling(1 / temperature, name=TEMPERATURE)(logits(x))
    model = keras.Model(inputs, keras.layers.Activation("sigmoid")(x))
    kernel = np.zeros((3, 3, 1, 3), np.float32)
    kernel[..., 0, 0], kernel[..., 0, 1] = 1 / 9, -1 / 9  # local brightness above 0.6; darkness below 0.2
    conv.set_weights([kernel, np.array([-0.6, 0.2, 1.0], np.float32)])  # channel 2: 1 in every cell
    logits.set_weights([np.array([[100.0], [-100.0], [-50.0]], np.float32), np.array([49.4], np.float32)])
    return model


def spot_images(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images (n, 16, 16, 1), labels (half bright = 1, half dark = 0), the spots' masks."""
    rng = np.random.default_rng(seed)
    images = np.full((n, 16, 16, 1), BACKGROUND, np.uint8)
    labels, masks = np.arange(n) % 2, np.zeros((n, 16, 16), bool)
    for i in range(n):
        r, c = rng.integers(1, 16 - SPOT, 2)
        masks[i, r:r + SPOT, c:c + SPOT] = True
        images[i, masks[i]] = 255 if labels[i] else 0
    return images, labels, masks


@pytest.mark.e2e
def test_both_classes_point_at_their_spot_where_plain_gradcam_is_empty_for_one():
    model, threshold = two_spot_model(), 0.45
    images, labels, masks = spot_images(12)
    probs = keras.ops.convert_to_numpy(model(images))[:, 0]
    assert ((probs >= threshold) == labels).all()  # the bias-carried decisions are right at this threshold
    bright = images[labels == 1]
    fmap, grads, scores = conv_output_grad_and_score(model, bright, "relu", 1)
    assert not _cam(fmap, grads).any()  # the fault: plain Grad-CAM sees nothing on the positive calls
    assert np.allclose(scores, 2.0 * np.log(probs[labels == 1] / (1 - probs[labels == 1])), atol=1e-4)
    for label in (0, 1):
        picked = labels == label
        maps = gradcam(model, images[picked], class_index=label, layer="relu", threshold=threshold)
        peaks = maps.reshape(len(maps), -1).argmax(axis=1)
        inside = masks[picked].reshape(len(maps), -1)[np.arange(len(maps)), peaks]
        assert inside.all() and not any(is_empty(m) for m in maps), (label, inside)


@pytest.mark.e2e
def test_a_map_with_nothing_in_it_is_empty_and_the_overlay_says_so():
    model = two_spot_model()
    blank = np.full((1, 16, 16, 1), BACKGROUND, np.uint8)  # no spot: every cell pushes the same way
    for label in (0, 1):
        heat = gradcam(model, blank, class_index=label, layer="relu", threshold=0.45)[0]
        assert is_empty(heat), label
    png = overlay_png(blank[0], heat, "lesion 0.61", class_name="lesion")
    out = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    body = out[-100:, -100:]
    assert (np.abs(body - BACKGROUND) <= 1).all()  # the image as it is, no blue wash
    box = out[:80, :240]  # the caption box has two lines: the class, then "no region stood out for lesion"
    lines = np.flatnonzero((box.min(axis=2) > 230).any(axis=1))
    assert lines.size and lines.max() - lines.min() > 25
    coloured = overlay_png(blank[0], np.ones((16, 16), np.float32), "lesion 0.61", class_name="lesion")
    assert Image.open(io.BytesIO(coloured)).size == Image.open(io.BytesIO(png)).size


def test_threshold_must_be_a_probability_and_may_be_saturated():
    for bad in (1.5, -0.1):
        with pytest.raises(UltrasonicError, match=f"threshold {bad}"):
            gradcam(two_spot_model(), spot_images(2)[0], threshold=bad)
    # a run whose probabilities saturate can store 0 or 1 ("p >= 1.0"): the margin is measured from the
    # float32 limit, so the maps are those of a threshold just inside it
    from ultrasonic.explain.gradcam import SATURATED

    images = spot_images(2)[0]
    for edge, inside in ((1.0, 1 - SATURATED), (0.0, SATURATED)):
        assert np.allclose(gradcam(two_spot_model(), images, threshold=edge),
                           gradcam(two_spot_model(), images, threshold=inside), atol=1e-4)


def keras_nodes(model: keras.Model) -> int:
    """How many Keras graph nodes in this process belong to the model's layers (not other tests' garbage)."""
    import gc

    gc.collect()
    layers = {id(layer) for layer in model.layers}
    return sum(1 for o in gc.get_objects() if type(o).__name__ == "Node" and type(o).__module__.startswith("keras")
               and id(getattr(o, "operation", None)) in layers)


@pytest.mark.e2e
def test_repeated_gradcam_leaves_the_model_graph_as_it_was():
    """`ultrasonic serve` explains every request with one model: building the sub-models on each call added
    nodes to its layers that were never freed (about 30 KB per prediction; docs/reliability.md, Load test)."""
    model = gap_model()
    images = random_images(1)
    first = gradcam(model, images)
    nodes = keras_nodes(model)
    for _ in range(5):
        assert np.allclose(gradcam(model, images), first)
    assert keras_nodes(model) == nodes


def test_target_layers_of_the_project_networks():
    from ultrasonic.config import load_config
    from ultrasonic.models import build_model

    seed = build_model(load_config("seed", overrides={"image_size": SIZE}), 2)
    compact = build_model(load_config("default", overrides={"image_size": SIZE, "width": 16}), 2)
    assert last_conv_layer(seed) == "conv5" and last_conv_layer(compact) == "s4b_conv"
    for model in (seed, compact):  # the default target sits at 1/8 of the input: 8 x 8 cells at 64 px
        assert model.get_layer(default_target_layer(model)).output.shape[1:3] == (SIZE // 8, SIZE // 8)
    dense_only = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    with pytest.raises(RunError, match="no Conv2D"):
        last_conv_layer(dense_only)


# ---- the overlay ----------------------------------------------------------------------------------

def test_overlay_is_a_legible_png_with_the_heat_where_the_map_is():
    image = np.full((32, 48, 1), 128, np.uint8)
    heat = np.zeros((32, 48), np.float32)
    heat[24:, 36:] = 1.0  # hot in the bottom-right corner
    out = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat, "PNEUMONIA 0.93"))).convert("RGB")).astype(int)
    assert out.shape == (256, 384, 3)  # scaled up: the shorter side is 256 px
    hot, cold = out[-20:, -20:].mean(axis=(0, 1)), out[128:140, 100:140].mean(axis=(0, 1))
    assert hot[0] > hot[2] + 40 and cold[2] > cold[0] + 40  # (dark) red where the map is 1, blue where 0
    box = out[:40, :150]
    assert (box.sum(axis=2) < 150).mean() > 0.4 and (box.min(axis=2) > 230).sum() > 50  # dark box, white text


def test_overlay_takes_rgb_and_rejects_other_arrays():
    rgb = np.zeros((300, 300, 3), np.uint8)
    png = overlay_png(rgb, np.zeros((10, 10)), "x")
    assert Image.open(io.BytesIO(png)).size == (300, 300)  # big enough already: not scaled
    with pytest.raises(UltrasonicError, match="uint8"):
        overlay_png(rgb.astype(float), np.zeros((10, 10)), "x")


def test_cam_names_stay_unique():
    from pathlib import Path

    names = _cam_names([Path("a/x.png"), Path("b/x.png"), Path("x.dcm"), Path("x_2.png")])
    assert names == ["x_cam.png", "x_2_cam.png", "x_3_cam.png", "x_2_2_cam.png"]


# ---- the pointing game on trained networks -----------------------------------------------------------

def train_on_lesions(tmp_path, preset: str, epochs: int, **settings):
    """A run trained on 400 synthetic chests (test split: the last 60); returns (run_dir, images, labels, masks)."""
    from ultrasonic import train

    images, labels, masks = lesion_images(400, size=SIZE, seed=7)
    npz = tmp_path / "lesions.npz"
    cut = {"train": slice(0, 300), "val": slice(300, 340), "test": slice(340, 400)}
    np.savez(npz, **{f"{k}_images": images[s, ..., 0] for k, s in cut.items()},
             **{f"{k}_labels": labels[s, None].astype(np.uint8) for k, s in cut.items()})
    settings = {"seed": 1, **settings}
    result = train(str(npz), str(tmp_path / preset), preset=preset, image_size=SIZE, epochs=epochs,
                   min_split_images=10, tensorboard=False, verbose=0, classes=["normal", "lesion"],
                   cache_dir=str(tmp_path / "cache"), **settings)
    test = cut["test"]
    return result.run_dir, images[test], labels[test], masks[test]


def pointing_game(model, images, labels, masks, layer=None) -> float:
    """Share of positive images whose heat-map arg-max lies in the lesion mask dilated by DILATE px."""
    positive = labels == 1
    channels = model.inputs[0].shape[-1]
    maps = gradcam(model, np.repeat(images[positive], channels, axis=-1), layer=layer)
    peaks = maps.reshape(len(maps), -1).argmax(axis=1)
    inside = np.stack([binary_dilation(m, iterations=DILATE) for m in masks[positive]])
    return float(inside.reshape(len(maps), -1)[np.arange(len(maps)), peaks].mean())


def auc(model, images, labels) -> float:
    from sklearn.metrics import roc_auc_score

    from ultrasonic.inference.engines import predict_array

    channels = model.inputs[0].shape[-1]
    return roc_auc_score(labels, predict_array(model, np.repeat(images, channels, axis=-1))[:, 1])


TRAINING_SEEDS = (1, 2, 3)  # the pointing game varies between trainings: judge the median of three
# Measured (docs/explain.md): GroupNorm, which normalises each image on its own, localises reliably
# (median >= 0.8); the BatchNorm default, chosen for accuracy (docs/results.md), less so: 0.49-0.94,
# median 0.71 over these seeds, and since its intensity augmentation (issue #12) 0.31 (the xfail below). Each keeps a bar far above chance (a random peak lands in the
# dilated lesion for about 4 % of images), and the strict one is for `--set norm=group`.
POINTING_BY_NORM = {"group": POINTING, "batch": 0.5}


def train_compact(tmp_path_factory, norm: str, seed: int):
    # GroupNorm: the earlier default's test as it was (no flips, seed 1, passed under both backends). Its
    # seed 2 does not learn the task in 10 epochs under JAX (AUC 0.57 with flips, 0.80 without).
    flips = {"horizontal_flip": False} if norm == "group" else {}
    return train_on_lesions(tmp_path_factory.mktemp(f"compact_{norm}{seed}"), "default", epochs=10, width=16,
                            learning_rate=3e-3, batch_size=16, seed=seed, norm=norm, **flips)


@pytest.fixture(scope="module")
def compact_run(tmp_path_factory):
    """The default network, first training seed: the file and CLI tests need only this one."""
    return train_compact(tmp_path_factory, "batch", TRAINING_SEEDS[0])


@pytest.fixture(scope="module")
def compact_runs(compact_run, tmp_path_factory):
    return [compact_run] + [train_compact(tmp_path_factory, "batch", seed) for seed in TRAINING_SEEDS[1:]]


# The pointing games train four compact networks and the seed one: slow, so the Makefile runs them under
# TensorFlow only (the JAX pass is `-m "e2e and not slow"`); the JAX figures are in docs/explain.md.
class PointingGameMissed(AssertionError):
    """A network's heat maps miss the lesion (the xfail tests below)."""


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.parametrize("norm", [
    pytest.param("batch", marks=pytest.mark.xfail(raises=PointingGameMissed, strict=True, reason=(
        "measured (issue #12): with the default's intensity augmentation the BatchNorm network still learns the "
        "task (AUC > 0.95) but its Grad-CAM peak lands in the lesion less often: 0.31 / 0.11 / 0.63 over these "
        "seeds (median 0.31), against 0.60 / 0.71 / 0.91 without it; GroupNorm keeps 0.94; docs/explain.md"))),
    "group"])
def test_compact_network_points_at_the_lesion(norm, compact_runs, tmp_path_factory, capsys):
    from ultrasonic.inference.engines import load_model

    runs = compact_runs if norm == "batch" else [train_compact(tmp_path_factory, norm, seed=1)]
    scores = []
    for run_dir, images, labels, masks in runs:
        model = load_model(run_dir / "model.keras")
        assert auc(model, images, labels) > 0.95  # the model learned the task: only then is the game fair
        scores.append(pointing_game(model, images, labels, masks))
        with capsys.disabled():
            print(f"\n[{keras.backend.backend()}] compact ({norm}Norm) pointing game: {scores[-1]:.2f} at "
                  f"{default_target_layer(model)}, "
                  f"{pointing_game(model, images, labels, masks, last_conv_layer(model)):.2f} at the last conv layer")
    if float(np.median(scores)) < POINTING_BY_NORM[norm]:
        raise PointingGameMissed(f"compact ({norm}Norm) pointing game {scores} has a median under "
                                 f"{POINTING_BY_NORM[norm]}")


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.xfail(raises=PointingGameMissed, strict=True, reason=(
    "measured: the seed network learns this task (AUC > 0.95) but its Grad-CAM peak misses the lesion at "
    "every layer (pointing 0.00-0.57 over 8 trainings); it also answers to a diffuse brightening of the lung "
    "fields (non-local evidence) where the compact network does not; see docs/explain.md"))
def test_seed_network_points_at_the_lesion(tmp_path, capsys):
    from ultrasonic.inference.engines import load_model

    # the seed recipe's heavy augmentation does not learn this small task in a test's time; without it, it does
    # and, as when this was measured, balanced class weights (the seed preset has none, as the origin)
    run_dir, images, labels, masks = train_on_lesions(tmp_path, "seed", epochs=12, rotation=0.0, shift=0.0,
                                                      zoom=0.0, horizontal_flip=False, class_weight="balanced")
    model = load_model(run_dir / "model.keras")
    assert auc(model, images, labels) > 0.95  # a plain failure (not the expected one) if it did not learn
    score = pointing_game(model, images, labels, masks)
    with capsys.disabled():
        print(f"\n[{keras.backend.backend()}] seed pointing game: {score:.2f} at {default_target_layer(model)}")
    if score < POINTING:
        raise PointingGameMissed(f"seed network pointing game {score:.2f} < {POINTING}")


# ---- files and the command line ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_folder(compact_run, tmp_path_factory):
    _, images, labels, _ = compact_run
    folder = tmp_path_factory.mktemp("scans")
    for i in (0, 1, 2, 3):
        name = ("lesion" if labels[i] else "clear") + f"_{i}.png"
        Image.fromarray(images[i, ..., 0]).save(folder / name)
    (folder / "broken.png").write_text("not an image")
    return folder


@pytest.mark.e2e
def test_explain_files_rows_match_predict_and_point_to_pngs(compact_run, image_folder, tmp_path):
    from ultrasonic.explain.gradcam import explain_files
    from ultrasonic.inference.predictor import Predictor

    predictor = Predictor(compact_run[0])
    rows = explain_files(predictor, [image_folder], tmp_path / "cams")
    plain = predictor.predict_files([image_folder])
    assert [{k: v for k, v in r.items() if k not in ("cam", "heatmap_empty")} for r in rows] == plain
    assert all(isinstance(r["heatmap_empty"], bool) for r in rows if "cam" in r)
    broken = [r for r in rows if "error" in r]
    assert len(broken) == 1 and "cam" not in broken[0] and "not a recognised image" in broken[0]["error"]
    refused = [r for r in rows if "error" not in r and r["class"] is None]  # the OOD gate: no class, no map
    assert len(refused) <= 1 and all("cam" not in r for r in refused)  # its threshold refuses a few in-domain images
    for row in rows:
        if "error" in row or row["class"] is None:
            continue
        png = Image.open(row["cam"])
        assert row["cam"] == str(tmp_path / "cams" / (row["file"].split("/")[-1][:-4] + "_cam.png"))
        assert png.format == "PNG" and min(png.size) >= 256


@pytest.mark.e2e
def test_cli_explain_and_predict_cam(compact_run, image_folder, tmp_path, capsys):
    from ultrasonic.cli import main

    run_dir = str(compact_run[0])
    first, second = sorted(f for f in image_folder.iterdir() if f.name != "broken.png")[:2]
    code = main(["explain", run_dir, str(first), str(second), "--out", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert code == 0 and "cam" in out.splitlines()[0]
    assert str(tmp_path / "e" / f"{first.stem}_cam.png") in out
    assert (tmp_path / "e" / f"{second.stem}_cam.png").is_file()
    code = main(["predict", run_dir, str(image_folder), "--cam", str(tmp_path / "p"), "--format", "json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1  # the broken file
    classified = [Path(r["file"]) for r in rows if "error" not in r and r["class"] is not None]
    assert len(classified) >= len(rows) - 2  # the broken file, and at most one the OOD gate refused
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == sorted(f"{f.stem}_cam.png" for f in classified)
    assert all(("cam" in r) == (r.get("class") is not None) for r in rows) and len(rows) == 5
