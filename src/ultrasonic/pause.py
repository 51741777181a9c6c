"""Test-only: hold `ultrasonic train` at a named moment, so that a test can kill it exactly there.

Not a feature: nothing in ultrasonic sets these variables, and without them
every hook is one environment lookup. tests/training/test_interruptions.py sets

    ULTRASONIC_TEST_PAUSE_AT="write model.keras"   # model.keras written to its temporary file, not yet renamed
    ULTRASONIC_TEST_PAUSE_AT="epoch 1 batch 2"     # in the middle of epoch 1 (0-based), after its batch 2
    ULTRASONIC_TEST_PAUSE_FILE=/tmp/.../paused     # created when that moment comes

and waits for the file, then sends SIGKILL: no polling race, whatever the
machine's speed. The paused process sleeps; if nobody kills it within
MAX_WAIT_S it exits with status 3, so a forgotten one cannot hang CI.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

AT = "ULTRASONIC_TEST_PAUSE_AT"
FILE = "ULTRASONIC_TEST_PAUSE_FILE"
MAX_WAIT_S = 600


def pause_at(point: str) -> None:
    """If the test asked to pause at `point`: create the marker file, then wait to be killed."""
    if os.environ.get(AT) != point:
        return
    Path(os.environ[FILE]).write_text(f"{os.getpid()} paused at {point}\n")
    time.sleep(MAX_WAIT_S)
    os._exit(3)


def pause_callbacks() -> list:
    """For model.fit's callbacks: [] unless a test asked for an 'epoch N batch K' pause."""
    if not os.environ.get(AT, "").startswith("epoch "):
        return []
    import keras

    epoch = [0]

    def begin(index: int, logs: dict | None = None) -> None:
        epoch[0] = index

    def batch_end(batch: int, logs: dict | None = None) -> None:
        pause_at(f"epoch {epoch[0]} batch {batch}")

    return [keras.callbacks.LambdaCallback(on_epoch_begin=begin, on_train_batch_end=batch_end)]
