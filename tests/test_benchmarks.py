"""The arithmetic of the benchmark scripts that turn run directories into figures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ultrasonic import RunDir, RunMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import cv_table  # noqa: E402
import time_to_quality  # noqa: E402


def fake_run(path: Path, aucs: list[float], elapsed: list[float], best_epoch: int, seconds: float,
             splits: str = "file,split\na.png,train\n") -> Path:
    path.mkdir(parents=True)
    rows = ["epoch,val_auc,elapsed_seconds"] + [f"{e},{a},{t}" for e, (a, t) in enumerate(zip(aucs, elapsed))]
    (path / "history.csv").write_text("\n".join(rows) + "\n")
    RunDir(path).write_meta(RunMeta(model_id="0" * 16, task="binary", classes=["a", "b"], positive_class="b",
                                    image_size=(32, 32), channels=1, threshold=0.5, best_epoch=best_epoch,
                                    train_seconds=seconds))
    (path / "splits.csv").write_text(splits)
    return path


def test_time_to_quality_uses_the_seed_checkpoint_and_the_first_epoch_reaching_it(tmp_path):
    seed = fake_run(tmp_path / "seed", [0.90, 0.97, 0.96, 0.98], [100, 200, 300, 400], best_epoch=2, seconds=420)
    default = fake_run(tmp_path / "default", [0.95, 0.971, 0.99], [30, 60, 90], best_epoch=3, seconds=100)
    result = time_to_quality.summarise(seed, default)
    assert result["seed_val_auc"] == 0.97  # the delivered checkpoint (best val_loss), not the best AUC seen
    assert result["default_reached_at_epoch"] == 2 and result["default_seconds_to_target"] == 60
    assert result["ratio"] == 7.0


def test_time_to_quality_never_reached_and_different_splits(tmp_path):
    seed = fake_run(tmp_path / "seed", [0.99], [100], best_epoch=1, seconds=100)
    default = fake_run(tmp_path / "default", [0.95], [30], best_epoch=1, seconds=30)
    assert time_to_quality.summarise(seed, default)["ratio"] is None
    other = fake_run(tmp_path / "other", [0.995], [30], best_epoch=1, seconds=30, splits="file,split\na.png,val\n")
    with pytest.raises(SystemExit, match="different splits"):
        time_to_quality.summarise(seed, other)


def test_shift_stress_alters_each_image_as_its_row_says_and_scores_every_row(tmp_path):
    from PIL import Image

    import shift_stress
    from tiny_run import make_run, write_class_folders

    ramp = Image.fromarray(np.tile(np.linspace(20, 235, 64), (64, 1)).astype("uint8"))
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64)).astype("uint8"))
    alter = shift_stress.shifts()
    fine = lambda image: float(np.abs(np.diff(np.asarray(image, dtype=float), axis=1)).mean())
    assert fine(alter["28 px"](noise)) < 0.5 * fine(noise) and fine(alter["soft"](noise)) < fine(noise)
    step = Image.fromarray(np.where(np.arange(64) < 32, 80, 160).astype("uint8")[None].repeat(64, 0))
    assert np.asarray(alter["sharp"](step)).max() > 160 and np.asarray(alter["sharp"](step)).min() < 80  # overshoot
    assert np.asarray(alter["dark"](ramp)).mean() < np.asarray(ramp).mean() < np.asarray(alter["light"](ramp)).mean()
    assert np.asarray(alter["flat"](noise)).std() < np.asarray(noise).std()
    framed = np.asarray(alter["framed"](noise))
    assert not framed[:5].any() and not framed[:, -5:].any() and framed[10:-10, 10:-10].any()
    assert all(alter[name](noise).size == (64, 64) and alter[name](noise).mode == "L" for name in alter)

    data = write_class_folders(tmp_path / "data", 12, size=40)
    run = make_run(tmp_path / "run", size=32)
    files = sorted(p.relative_to(data) for p in data.rglob("*.png"))
    (run / "splits.csv").write_text("file,class,split,patient\n" + "".join(
        f"{f.as_posix()},{f.parts[0]},val,p{i // 2}\n" for i, f in enumerate(files)))
    rows = shift_stress.stress(run, data, n_boot=20)
    assert [r["shift"] for r in rows] == list(alter) and all(r["n"] == 12 for r in rows)
    assert all(0 <= r["specificity"] <= 1 and len(r["auc_ci"]) == 2 for r in rows)


def test_cv_table_row_is_the_spread_of_the_folds_and_their_summed_minutes(tmp_path):
    from ultrasonic.evaluation.crossval import cv_summary, fold_entry
    from ultrasonic.evaluation.summary import evaluate_predictions

    rng = np.random.default_rng(0)
    entries, truths, probs = [], [], []
    for k, (noise, seconds) in enumerate([(0.3, 60), (0.6, 120), (0.9, 180)], start=1):
        y = rng.integers(0, 2, 80)
        p1 = np.clip(y + rng.normal(0, noise, 80), 0.01, 0.99)
        p = np.stack([1 - p1, p1], axis=1)
        entries.append(fold_entry(k, f"folds/fold_{k}", evaluate_predictions(y, p, ["a", "b"], threshold=0.5,
                                                                            positive_index=1, n_boot=50), 0.5))
        truths.append(y)
        probs.append(p)
        RunDir(tmp_path / "cxr" / "folds" / f"fold_{k}").write_meta(RunMeta(
            model_id="0" * 16, task="binary", classes=["a", "b"], positive_class="b", image_size=(32, 32),
            channels=1, threshold=0.5, best_epoch=1, train_seconds=seconds, data={"path": "/data/chest_xray_224"}))
    pooled = evaluate_predictions(np.concatenate(truths), np.concatenate(probs), ["a", "b"], positive_index=1,
                                  n_boot=50)
    (tmp_path / "cxr" / "cv.json").write_text(json.dumps(cv_summary(entries, pooled, "final")))
    row = cv_table.row(tmp_path / "cxr")
    aucs = np.array([e["roc_auc"]["value"] for e in entries])
    assert row[:4] == ["chest_xray_224", "cxr", "3", "240"]
    assert row[4] == f"{aucs.mean():.3f} ± {aucs.std(ddof=1):.3f} ({aucs.min():.3f}-{aucs.max():.3f})"
    assert aucs.std() > 0.01  # the three folds really differ, so the spread is not 0 by accident
    assert row[8].startswith(f"{pooled['at_0.5']['roc_auc']['value']:.3f} (")
    assert row[9] == "6"  # 60 + 120 + 180 s


def test_cv_table_pairs_two_runs_fold_by_fold_and_refuses_different_folds(tmp_path):
    def cv_run(name: str, aucs: list[float], val_files: list[str]) -> Path:
        folds = []
        for k, (auc, val) in enumerate(zip(aucs, val_files), start=1):
            fold = tmp_path / name / "folds" / f"fold_{k}"
            fold.mkdir(parents=True)
            (fold / "splits.csv").write_text(f"file,class,split,patient\n{val},a,val,\nother{k}.png,a,train,\n")
            folds.append({"fold": k, "run": f"folds/fold_{k}", "roc_auc": {"value": auc}})
        (tmp_path / name / "cv.json").write_text(json.dumps({"k": len(folds), "folds": folds}))
        return tmp_path / name

    files = ["f1.png", "f2.png", "f3.png"]
    base = cv_run("base", [0.90, 0.92, 0.95], files)
    change = cv_run("change", [0.91, 0.92, 0.97], files)
    row = cv_table.paired_row(change, base)
    diff = np.array([0.01, 0.0, 0.02])
    assert row[:3] == ["change", "0.910 / 0.920 / 0.970", "base"]
    assert row[3] == f"+{diff.mean():.4f} ± {diff.std(ddof=1):.4f}"
    assert row[4] == "2 of 3"
    assert row[5] == f"{diff.mean() / (diff.std(ddof=1) / np.sqrt(3)):.1f} (2)"
    other = cv_run("other", [0.91, 0.92, 0.97], ["f1.png", "f2.png", "g3.png"])
    with pytest.raises(SystemExit, match="different folds"):
        cv_table.paired_row(other, base)
