"""Interruptions: `kill -9` of `ultrasonic train` at any point, then `--resume`, loses nothing.

The end-to-end test kills a real `ultrasonic train` process twice, at moments
it holds still for (the test-only hook of ultrasonic/pause.py: the process
creates a marker file there and waits; the test sees the file and kills it),
so the kill lands at the same instant on a fast or a loaded machine:
1. while model.keras is being written (its temporary `.model.*.tmp.keras` is
   complete but not yet renamed over model.keras),
2. in the middle of an epoch (batch 2 of epoch 1, after the backup of epoch 0).
The third, resumed run must finish the planned epochs with one history row
per epoch and a loadable best model. The unit tests below pin the pieces.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from ultrasonic.atomic import remove_leftovers
from ultrasonic.cli import main
from ultrasonic.data.cache import load_images
from ultrasonic.data.sources import open_data
from ultrasonic.data.synthetic import lesion_images
from ultrasonic.errors import RunError
from ultrasonic.pause import pause_at, pause_callbacks
from ultrasonic.training.callbacks import HistoryCSV, TrainingBackup, read_history, restore_backup

EPOCHS = 3
PAUSE_TIMEOUT_S = 600  # a TensorFlow start-up, data loading and an epoch on 2 busy cores


# --- the end-to-end kill test -------------------------------------------------------------------


def write_data(root: Path, n: int = 360, size: int = 64) -> Path:
    images, labels, _ = lesion_images(n, size=size, seed=5)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / ("normal", "pneumonia")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"img_{i:03d}.png")
    return root


def train_args(data: Path, out: Path, cache: Path, settings: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--config", str(settings), "--epochs", str(EPOCHS),
            "--image-size", "64", "--batch-size", "16", "--cache-dir", str(cache), "--no-tensorboard", *extra]


def kill_at(moment: str, *args, timeout: float = PAUSE_TIMEOUT_S) -> None:
    """Run `ultrasonic train ...` as its own process until it holds still at `moment`, then SIGKILL it.

    The process creates a marker file there and waits (ultrasonic/pause.py), so the
    kill lands exactly at `moment`. Its output goes to RUN-<n>.stderr beside the run directory.
    """
    out = Path(args[1])
    name = f"{out.name}-{len(list(out.parent.glob('*.stderr')))}"
    marker = out.parent / f"{name}.paused"
    env = {**os.environ, "ULTRASONIC_TEST_PAUSE_AT": moment, "ULTRASONIC_TEST_PAUSE_FILE": str(marker)}
    with open(out.parent / f"{name}.stderr", "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "ultrasonic.cli", *train_args(*args)],
                                   stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            pytest.fail(f"train ended (status {process.returncode}) before it reached {moment!r}: "
                        f"{(out.parent / f'{name}.stderr').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"train did not reach {moment!r} within {timeout} s")
        time.sleep(0.05)  # only how soon the test notices: the process waits for the kill
    process.send_signal(signal.SIGKILL)
    process.wait()


def epochs_backed_up(run: Path) -> int:
    try:
        return json.loads((run / "backup" / "state.json").read_text())["epochs_done"]
    except (OSError, ValueError):
        return 0  # none yet (or not there at this instant)


def history_epochs(run: Path) -> list[int]:
    with open(run / "history.csv", newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.e2e
@pytest.mark.once  # kills and resumes: the run directory and checkpoints, not the backend
def test_kill_during_checkpoint_write_and_mid_epoch_then_resume_finishes(tmp_path):
    data, cache, run = write_data(tmp_path / "data"), tmp_path / "cache", tmp_path / "run"
    settings = tmp_path / "fast.yaml"
    settings.write_text("width: 16\nmin_split_images: 10\nverbose: 0\n")
    run.mkdir()

    # 1. a fresh run, killed while its first best model is being written
    kill_at("write model.keras", data, run, cache, settings)
    assert history_epochs(run) == [0]  # the row of epoch 0 was written before the checkpoint
    assert not (run / "model.keras").exists()  # only the temporary file: nothing half-written to trust
    assert list(run.glob(".model.*.tmp.keras"))  # ... which the kill left behind
    assert epochs_backed_up(run) == 0

    # 2. resumed (epoch 0 again: it never reached its backup), killed in the middle of epoch 1
    kill_at("epoch 1 batch 2", data, run, cache, settings, "--resume")
    assert epochs_backed_up(run) == 1  # epoch 1 had started (epoch 0 backed up) and not finished
    assert history_epochs(run) == [0]  # no duplicate row for the re-run epoch 0
    assert (run / "model.keras").is_file()

    # 3. resumed again, here in-process (the same command, without a second TensorFlow start-up):
    #    epochs 1 and 2 only, then the final steps
    assert main(train_args(data, run, cache, settings, "--resume")) == 0
    assert history_epochs(run) == list(range(EPOCHS))
    log = (run / "train.log").read_text()
    assert "resuming after epoch 1" in log
    meta = json.loads((run / "meta.json").read_text())
    assert 1 <= meta["best_epoch"] <= EPOCHS
    from ultrasonic.inference.engines import load_model

    model = load_model(run / "model.keras")
    assert model.predict(np.zeros((2, 64, 64, 1), np.uint8), verbose=0).shape == (2, 1)
    assert not (run / "backup").exists()  # removed once the run is complete
    assert not list(run.glob(".*.tmp*"))  # the killed writer's temporary file was cleaned up


# --- the pieces -----------------------------------------------------------------------------------


def tiny_model() -> keras.Model:
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_history_keeps_one_row_per_epoch_the_last_one(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text("epoch,loss\n0,0.9\n1,0.8\n1,0.7\n2,0.6\n")  # as CSVLogger leaves it after a kill
    assert [(r["epoch"], r["loss"]) for r in read_history(path)] == [("0", "0.9"), ("1", "0.7"), ("2", "0.6")]

    callback = HistoryCSV(path)
    callback.on_epoch_end(1, {"loss": 0.5, "val_loss": 0.55})  # epoch 1 run again after a resume
    rows = list(csv.DictReader(open(path)))
    assert [(r["epoch"], r["loss"], r["val_loss"]) for r in rows] == [("0", "0.9", ""), ("1", "0.5", "0.55")]
    assert float(rows[1]["elapsed_seconds"]) >= float(rows[1]["epoch_seconds"]) >= 0


def test_backup_restores_weights_optimizer_and_epoch(tmp_path):
    model = tiny_model()
    x, y = np.ones((8, 3)), np.ones((8, 1))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[TrainingBackup(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0002.weights.h5", "state.json"]

    fresh = tiny_model()
    assert restore_backup(fresh, tmp_path) == 2
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 2
    assert restore_backup(tiny_model(), tmp_path / "none") == 0


def test_backup_that_does_not_fit_the_model_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"epochs_done": 3, "weights": "epoch-0003.weights.h5"}))
    with pytest.raises(RunError, match=r"epoch-0003\.weights\.h5: cannot restore the backup into this model"):
        restore_backup(tiny_model(), tmp_path)
    (tmp_path / "state.json").write_text("{half")
    with pytest.raises(RunError, match="unreadable backup state"):
        restore_backup(tiny_model(), tmp_path)


def test_pause_hook_does_nothing_unless_a_test_names_that_moment(monkeypatch, tmp_path):
    marker = tmp_path / "paused"
    monkeypatch.delenv("ULTRASONIC_TEST_PAUSE_AT", raising=False)
    pause_at("write model.keras")
    assert pause_callbacks() == []  # a real run carries no extra callback
    monkeypatch.setenv("ULTRASONIC_TEST_PAUSE_AT", "epoch 1 batch 2")
    monkeypatch.setenv("ULTRASONIC_TEST_PAUSE_FILE", str(marker))
    pause_at("epoch 1 batch 1")
    pause_at("write model.keras")
    assert not marker.exists()
    assert len(pause_callbacks()) == 1


def test_leftover_temporary_files_are_removed(tmp_path):
    (tmp_path / ".model.ab12.tmp.keras").write_bytes(b"half")
    (tmp_path / "model.keras").write_bytes(b"whole")
    assert [p.name for p in remove_leftovers(tmp_path)] == [".model.ab12.tmp.keras"]
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_truncated_cache_entry_is_rebuilt(tmp_path, make_class_folders):
    catalog = open_data(str(make_class_folders(tmp_path / "data", {"a": 4, "b": 4})))
    first = load_images(catalog, size=16, channels=1, cache_dir=tmp_path / "cache", workers=1)
    path, expected = first.path, np.array(first.images)
    del first
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # as a non-atomic writer would leave it
    again = load_images(catalog, size=16, channels=1, cache_dir=tmp_path / "cache", workers=1)
    assert again.decoded == len(catalog)
    np.testing.assert_array_equal(again.images, expected)
