"""Helpers for the service tests: a tiny trained run, and `ultrasonic serve` as a real subprocess."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ultrasonic.serve.local import LocalServer
from tiny_run import write_class_folders

SIZE = 32
TINY = dict(image_size=SIZE, epochs=3, batch_size=16, width=16, tensorboard=False, verbose=0,
            min_split_images=10, learning_rate=3e-3)
START_TIMEOUT_S = 120  # importing the backend and loading the model; slow on 2 busy cores


def train_tiny_run(root: Path, n: int = 120) -> Path:
    """Synthetic lesion PNGs in root/data/<class>/, a run trained on them in root/run, evaluated."""
    from ultrasonic import evaluate, train

    write_class_folders(root / "data", n, 0, ("normal", "pneumonia"), "person{patient}_img_{i}.png")
    result = train(str(root / "data"), str(root / "run"), cache_dir=str(root / "cache"), **TINY)
    evaluate(result.run_dir, n_boot=20)
    return Path(result.run_dir)


class LiveServer(LocalServer):
    """`ultrasonic serve RUN_DIR ...` as a child process (ultrasonic.serve.local), with the tests' time-out."""

    def __init__(self, run_dir: Path, log_path: Path, *args: str):
        super().__init__(run_dir, log_path, *args, start_timeout=START_TIMEOUT_S)


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
