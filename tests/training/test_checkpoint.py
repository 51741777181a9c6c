"""The checkpoint setting: model.keras keeps the best epoch by `monitor`, or the last one trained."""

import json

import keras
import numpy as np
import pytest

from ultrasonic.rundir import RunDir
from ultrasonic.training.callbacks import BestCheckpoint

LOSSES = [0.5, 0.2, 0.4, 0.3]  # the best is epoch 2, the last epoch 4


def tiny_model(value: float) -> keras.Model:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, kernel_initializer="zeros")])
    model.layers[0].kernel.assign(np.full((2, 1), value, "float32"))
    return model


@pytest.mark.parametrize(("keep", "epoch"), [("best", 2), ("last", 4)])
def test_the_file_holds_the_epoch_asked_for(tmp_path, keep, epoch):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    callback = BestCheckpoint(run.model, monitor="val_loss", keep=keep)
    for k, loss in enumerate(LOSSES):
        callback.set_model(tiny_model(float(k + 1)))  # the weights say which epoch was saved
        callback.on_epoch_end(k, {"val_loss": loss})
    state = json.loads(run.checkpoint_state.read_text())
    assert state["epoch"] == epoch and state["value"] == pytest.approx(LOSSES[epoch - 1])
    saved = keras.saving.load_model(run.model)
    assert float(saved.layers[0].kernel.numpy()[0, 0]) == epoch


@pytest.mark.parametrize("keep", ["best", "last"])
def test_train_passes_the_setting_on_and_stops_early_only_for_the_best(tmp_path, keep):
    from ultrasonic.config import load_config
    from ultrasonic.training.fit import _callbacks

    cfg = load_config(overrides={"checkpoint": keep, "tensorboard": False})
    callbacks = _callbacks(cfg, RunDir(tmp_path), 0.0, tiny_model(1.0))
    [checkpoint] = [c for c in callbacks if isinstance(c, BestCheckpoint)]
    assert checkpoint.keep == keep
    # the last epoch is the end of the schedule: an early stop would keep one from the middle of it
    stops = [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]
    assert len(stops) == (keep == "best")
