"""Weight averaging (the `ema` setting): which weights validation, the checkpoint, the saved model and a
resumed run see.

The optimizer keeps an exponential moving average of the trained weights after every step
(avg = w after the first step, then ema * avg + (1 - ema) * w); AveragedWeights swaps it in
for each epoch's validation and end-of-epoch callbacks, and out again for training. The tests
compute that average by hand from the weights seen after every step.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ultrasonic.config import Config
from ultrasonic.training.callbacks import AveragedWeights, TrainingBackup, restore_backup
from ultrasonic.training.fit import compile_model, ema_momentum

EMA = 0.8
BATCH = 4
RNG = np.random.default_rng(3)
X = RNG.normal(size=(16, 3)).astype("float32")
Y = (X @ np.array([1.0, -2.0, 0.5]) > 0).astype("float32")[:, None]
X_VAL, Y_VAL = X[:8] + 0.1, Y[:8]


def model_of(ema: float) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    compile_model(model, Config(ema=ema, learning_rate=0.05, lr_schedule="plateau", weight_decay=0.0), n_classes=2,
                  steps_per_epoch=len(X) // BATCH, epochs=100)  # planned long enough not to cap the momentum
    return model


def weights(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


class Seen(keras.callbacks.Callback):
    """The weights after every training step, and what a callback after AveragedWeights sees at each epoch's end."""

    def __init__(self):
        super().__init__()
        self.steps, self.epoch_ends, self.val_losses = [], [], []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(weights(self.model))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(weights(self.model))
        self.val_losses.append(logs["val_loss"])


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = epoch + 1 >= self.epochs


def by_hand(steps: list[list[np.ndarray]], ema: float = EMA) -> list[list[np.ndarray]]:
    """The running average after every step, as the optimizer keeps it."""
    average, out = None, []
    for step in steps:
        average = step if average is None else [ema * a + (1 - ema) * w for a, w in zip(average, step)]
        out.append(average)
    return out


def fit(model: keras.Model, epochs: int, *callbacks, initial_epoch: int = 0) -> None:
    model.fit(X, Y, batch_size=BATCH, epochs=epochs, initial_epoch=initial_epoch, shuffle=False, verbose=0,
              validation_data=(X_VAL, Y_VAL), callbacks=list(callbacks))


def assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def test_validation_checkpoint_and_the_fitted_model_see_the_average_and_training_the_trained_weights():
    model, seen = model_of(EMA), Seen()
    fit(model, 3, AveragedWeights(), seen)
    per_epoch = len(X) // BATCH
    average = by_hand(seen.steps)
    for epoch, at_end in enumerate(seen.epoch_ends):
        assert_same(at_end, average[(epoch + 1) * per_epoch - 1])  # what BestCheckpoint saves
        check = model_of(0.0)
        check.set_weights(at_end)
        assert seen.val_losses[epoch] == pytest.approx(check.evaluate(X_VAL, Y_VAL, verbose=0)[0], rel=1e-5)
    assert_same(weights(model), average[-1])  # fit ends holding the average: model.keras and the threshold
    assert not np.allclose(average[-1][0], seen.steps[-1][0])  # they differ, so the checks above can fail

    plain = Seen()
    fit(model_of(0.0), 3, plain)
    for a, b in zip(seen.steps, plain.steps, strict=True):  # the average does not steer the training
        assert_same(a, b)


def test_a_run_resumed_from_its_backup_ends_where_the_uninterrupted_run_ends(tmp_path):
    whole = model_of(EMA)
    fit(whole, 4, AveragedWeights())

    first = model_of(EMA)  # killed after its second epoch of four: its backup holds the average in the model
    fit(first, 4, AveragedWeights(), TrainingBackup(tmp_path), StopAfter(2))
    resumed = model_of(EMA)
    assert restore_backup(resumed, tmp_path) == 2
    fit(resumed, 4, AveragedWeights(resumed=True), initial_epoch=2)
    assert_same(weights(resumed), weights(whole))

    unswapped = model_of(EMA)  # trained on from the average instead: a different end
    restore_backup(unswapped, tmp_path)
    fit(unswapped, 4, AveragedWeights(), initial_epoch=2)
    assert not np.allclose(weights(unswapped)[0], weights(whole)[0], atol=1e-6)


def test_ema_is_a_setting_whose_window_is_at_most_a_tenth_of_the_planned_steps():
    assert not model_of(0.0).optimizer.use_ema
    optimizer = model_of(0.95).optimizer
    assert optimizer.use_ema and optimizer.ema_momentum == pytest.approx(0.95)
    assert ema_momentum(0.99, 1416) == 0.99  # the default on chest_xray_224: 12 epochs of 118 steps
    assert ema_momentum(0.99, 200) == pytest.approx(0.95)  # a window of 20 steps, not 100
    assert ema_momentum(0.99, 8) == ema_momentum(0.0, 10_000) == 0.0  # too short to average; off
    inputs = keras.Input((3,))
    short = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
    compile_model(short, Config(ema=0.99), n_classes=2, steps_per_epoch=2, epochs=3)
    assert not short.optimizer.use_ema  # and then train adds no AveragedWeights: fit.py asks the optimizer
