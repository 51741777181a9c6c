"""The arithmetic of the benchmark scripts that turn run directories into figures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ultrasonic import RunDir, RunMeta

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

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
