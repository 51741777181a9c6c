"""Helpers for the service tests: a tiny trained run, and `ultrasonic serve` as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ultrasonic.data.synthetic import lesion_images

SIZE = 32
TINY = dict(image_size=SIZE, epochs=3, batch_size=16, width=16, tensorboard=False, verbose=0,
            min_split_images=10, learning_rate=3e-3)
START_TIMEOUT_S = 120  # importing the backend and loading the model; slow on 2 busy cores


def train_tiny_run(root: Path, n: int = 120) -> Path:
    """Synthetic lesion PNGs in root/data/<class>/, a run trained on them in root/run, evaluated."""
    from ultrasonic import evaluate, train

    images, labels, _ = lesion_images(n, size=48, seed=0)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / "data" / ("normal", "pneumonia")[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"person{i // 2}_img_{i}.png")
    result = train(str(root / "data"), str(root / "run"), cache_dir=str(root / "cache"), **TINY)
    evaluate(result.run_dir, n_boot=20)
    return Path(result.run_dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """`python -m ultrasonic.cli serve RUN_DIR ...` on 127.0.0.1 and a free port; its output in a log file."""

    def __init__(self, run_dir: Path, log_path: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "ultrasonic.cli", "serve", str(run_dir), "--port", str(self.port), *args]
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        import httpx

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server did not answer /health within {START_TIMEOUT_S} s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # uvicorn shuts down cleanly on SIGTERM
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def png_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()
