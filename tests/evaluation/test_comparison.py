"""`compare_runs`: two real tiny runs on the same held-out images, DeLong and McNemar end to end;
a run against a copy of itself; the clear errors; the page escaped; the verdict's words."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from live_server import TINY
from PIL import Image
from sklearn.metrics import roc_auc_score
from tiny_run import make_run, write_class_folders

from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.comparison import (_check_same_images, auc_verdict, compare_runs, comparison_lines,
                                              mcnemar_verdict)
from ultrasonic.rundir import RunDir

N = 40
CLASSES = ("normal", "pneumonia")
HOSTILE = "<img src=x onerror=alert(1)>"


def write_folder(root: Path, n: int = N, seed: int = 7) -> Path:
    return write_class_folders(root, n, seed, CLASSES, "held_{i:03d}.png")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("hospital_b") / "data")


@pytest.fixture(scope="module")
def run_b(tiny_run, tmp_path_factory) -> Path:
    """A second model on tiny_run's data: another seed and another image size (40 px, not 32)."""
    from ultrasonic import train

    root = tmp_path_factory.mktemp("run_b")
    result = train(str(tiny_run.parent / "data"), str(root / "run_b"), cache_dir=str(root / "cache"),
                   **{**TINY, "image_size": 40, "seed": 1})
    return Path(result.run_dir)


def read_json(path: Path) -> dict:
    def refuse(name):
        raise AssertionError(f"{path}: not plain JSON ({name})")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.e2e
@pytest.mark.once
def test_two_runs_compared_on_the_same_images(tiny_run, run_b, held_out, tmp_path):
    from ultrasonic import Predictor

    out = tmp_path / "cmp"
    result = compare_runs(tiny_run, run_b, str(held_out), out=out)
    saved = read_json(out / "comparison.json")
    assert saved["verdict"] == result["verdict"] and saved["task"] == "binary"
    a, b = saved["runs"]["a"], saved["runs"]["b"]
    assert (a["name"], b["name"]) == ("run", "run_b") and a["model_id"] != b["model_id"]
    assert (a["image_size"], b["image_size"]) == ([32, 32], [40, 40])  # each run read DATA at its own size
    for block, run in ((a, tiny_run), (b, run_b)):
        meta = json.loads((run / "meta.json").read_text())
        assert block["threshold"] == meta["threshold"] and block["operating_point"] == meta["operating_point"]
        assert isinstance(block["ood_refused"], int) and 0 <= block["ood_refused"] <= N
    assert saved["n"] == N and sum(saved["counts"].values()) == N and saved["positive_class"] == "pneumonia"
    assert saved["where"] == f"{held_out} [all images]"

    # the AUC and the operating point are those of `predict` on the same files, scored another way
    rows = Predictor(tiny_run, ood="warn").predict_files([held_out])
    y = np.array([Path(r["file"]).parent.name == "pneumonia" for r in rows], int)
    p = np.array([r["probabilities"]["pneumonia"] for r in rows])
    auc = saved["auc"]
    assert auc["auc_a"] == pytest.approx(roc_auc_score(y, p), abs=1e-5)
    assert auc["ci95"][0] <= auc["difference"] <= auc["ci95"][1] and 0 <= auc["p_value"] <= 1
    said_positive = np.array([r["class"] == "pneumonia" for r in rows])
    assert saved["operating_points"]["a"]["sensitivity"] == pytest.approx(said_positive[y == 1].mean())
    assert saved["operating_points"]["a"]["specificity"] == pytest.approx((~said_positive)[y == 0].mean())
    m = saved["mcnemar"]
    assert m["both_right"] + m["a_only_right"] + m["b_only_right"] + m["both_wrong"] == N
    assert saved["operating_points"]["a"]["accuracy"] * N == pytest.approx(m["both_right"] + m["a_only_right"])

    page = (out / "comparison.html").read_text()
    assert "DeLong" in page and "McNemar" in page and "<script" not in page
    lines = comparison_lines(result)
    assert lines[0].startswith(f"A: {tiny_run}") and lines[-2] == f"verdict: {result['verdict']}"


@pytest.mark.e2e
@pytest.mark.once
def test_a_run_against_a_copy_of_itself_differs_by_nothing_and_its_name_is_escaped(tiny_run, held_out, tmp_path):
    hostile = tmp_path / HOSTILE
    shutil.copytree(tiny_run, hostile)
    result = compare_runs(tiny_run, hostile, str(held_out), out=tmp_path / "cmp")
    auc, m = result["auc"], result["mcnemar"]
    assert auc["difference"] == 0 and auc["p_value"] == 1 and auc["ci95"] == [0, 0]
    assert (m["a_only_right"], m["b_only_right"], m["p_value"]) == (0, 0, 1.0)
    assert result["verdict"].startswith("no significant difference in AUC (A - B = +0.000")
    page = (tmp_path / "cmp" / "comparison.html").read_text()
    assert HOSTILE not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.e2e
@pytest.mark.once
def test_the_default_folder_is_inside_run_a_and_leaves_its_eval_alone(tiny_run, run_b, held_out):
    result = compare_runs(run_b, tiny_run, str(held_out))
    folder = run_b / "compare" / "run_b_vs_run"
    assert read_json(folder / "comparison.json")["runs"]["a"]["path"] == str(run_b)
    assert (folder / "comparison.html").is_file() and not (run_b / "eval").exists()
    assert result["runs"]["b"]["name"] == "run"


def test_no_data_is_refused_before_anything_is_loaded(tmp_path):
    with pytest.raises(ConfigError, match="needs the same images for both"):
        compare_runs(tmp_path / "a", tmp_path / "b", None)


def test_runs_of_other_classes_are_one_clear_error(tmp_path, held_out):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", classes=("benign", "malignant"))
    with pytest.raises(DataError) as caught:
        compare_runs(a, b, str(held_out), out=tmp_path / "cmp")
    message = str(caught.value)
    assert f"{a} has classes ['normal', 'pneumonia']" in message and f"{b} has ['benign', 'malignant']" in message
    assert not (tmp_path / "cmp").exists()


@pytest.mark.e2e
@pytest.mark.once
def test_runs_that_read_different_files_are_one_clear_error(tiny_run, run_b, tmp_path):
    data = write_folder(tmp_path / "data", n=30)
    Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))).save(data / "normal" / "aa_small.png")
    lenient = tmp_path / "lenient"  # run_b, but reading images of any size
    shutil.copytree(run_b, lenient)
    cfg = yaml.safe_load((lenient / "config.yaml").read_text())
    cfg["min_image_side"] = 0
    (lenient / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(DataError, match=r"read different images from DATA: .* read 30, .* read 31; the first "
                                        r"difference is image \d+: .* against normal/aa_small.png \(normal\)"):
        compare_runs(tiny_run, lenient, str(data), out=tmp_path / "cmp")


def untrained_run(path: Path, seed: int, classes: tuple[str, ...]) -> Path:
    """make_run's untrained model (no OOD gate) with the config.yaml that reading new data needs."""
    from ultrasonic.config import load_config, save_config

    make_run(path, classes=classes, seed=seed)
    save_config(load_config("default", overrides=dict(image_size=32, channels=1, width=16)), path / "config.yaml")
    return path


def test_three_classes_delong_per_class_and_mcnemar_of_the_argmax(tmp_path, make_class_folders):
    from ultrasonic import Predictor

    classes = ("benign", "malignant", "normal")
    data = make_class_folders(tmp_path / "busi", {"benign": 6, "malignant": 5, "normal": 4})
    a, b = (untrained_run(tmp_path / name, seed, classes) for name, seed in (("a", 0), ("b", 1)))
    result = compare_runs(a, b, str(data), out=tmp_path / "cmp")
    assert result["task"] == "multiclass" and result["counts"] == {"benign": 6, "malignant": 5, "normal": 4}
    assert result["runs"]["a"]["threshold"] is None and result["runs"]["a"]["ood_refused"] is None
    truth = np.repeat([0, 1, 2], [6, 5, 4])
    probs = [Predictor(run, ood="off").predict_files([data]) for run in (a, b)]
    p = [np.array([[r["probabilities"][c] for c in classes] for r in rows]) for rows in probs]
    for k, name in enumerate(classes):
        assert result["auc"]["per_class"][name]["auc_a"] == pytest.approx(roc_auc_score(truth == k, p[0][:, k]),
                                                                            abs=1e-5)
    right = [x.argmax(axis=1) == truth for x in p]
    assert result["mcnemar"]["a_only_right"] == int(np.sum(right[0] & ~right[1]))
    assert result["mcnemar"]["b_only_right"] == int(np.sum(~right[0] & right[1]))
    assert result["verdict"] == result["mcnemar"]["verdict"]
    assert read_json(tmp_path / "cmp" / "comparison.json")["auc"]["method"].startswith("DeLong per class")
    assert any(line.startswith("  malignant: ") for line in comparison_lines(result))


def scored(refs: list[str], truth: list[str]) -> dict:
    return {"refs": refs, "truth": truth}


def test_a_different_file_count_order_or_label_is_named():
    runs = [RunDir("runs/a"), RunDir("runs/b")]
    same = scored(["n/1.png", "p/2.png"], ["n", "p"])
    _check_same_images(runs, [same, scored(list(same["refs"]), list(same["truth"]))])  # no error
    cases = {"one more": (scored(same["refs"] + ["p/3.png"], same["truth"] + ["p"]),
                          "runs/a read 2, runs/b read 3; the first difference is image 3: no image against "
                          "p/3.png (p)"),
             "other order": (scored(["p/2.png", "n/1.png"], ["p", "n"]),
                             "the first difference is image 1: n/1.png (n) against p/2.png (p)"),
             "other label": (scored(["n/1.png", "p/2.png"], ["n", "n"]),
                             "image 2: p/2.png (p) against p/2.png (n)")}
    for name, (other, words) in cases.items():
        with pytest.raises(DataError, match="read different images from DATA") as caught:
            _check_same_images(runs, [same, other])
        assert words in str(caught.value), name


# --- words ----------------------------------------------------------------------------------


def delong(difference: float, lo: float, hi: float, p: float) -> dict:
    return {"difference": difference, "ci95": [lo, hi], "p_value": p}


def test_the_verdict_names_the_higher_auc_with_its_interval_and_p():
    assert auc_verdict(delong(0.031, 0.004, 0.058, 0.0213)) == \
        "A's AUC is higher by 0.031 (95 % CI 0.004 to 0.058, DeLong p = 0.021)"
    assert auc_verdict(delong(-0.05, -0.08, -0.02, 0.0004)) == \
        "B's AUC is higher by 0.050 (95 % CI 0.020 to 0.080, DeLong p < 0.001)"  # B - A, in B's favour
    assert auc_verdict(delong(0.01, -0.02, 0.04, 0.45)) == \
        "no significant difference in AUC (A - B = +0.010, 95 % CI -0.020 to 0.040, DeLong p = 0.450)"
    assert auc_verdict(delong(0.01, -0.02, 0.04, 0.045), alpha=0.01).startswith("no significant difference")


def test_the_mcnemar_verdict_counts_the_discordant_images():
    test = {"a_only_right": 12, "b_only_right": 2, "p_value": 0.0129}
    assert mcnemar_verdict(test, "at their own thresholds") == ("at their own thresholds, A alone is right on 12 "
                                                                "images, B alone on 2 (McNemar p = 0.013): A makes "
                                                                "significantly fewer errors")
    assert mcnemar_verdict({**test, "p_value": 0.2}, "x").endswith(": no significant difference in errors")
