"""Shared helpers of the benchmarks: where the real data is, a timer callback, peak memory, output."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_dir(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        sys.exit(f"benchmark needs the real data at {path} (see ../shared/data/README.md)")
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    import keras
    import numpy

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "keras": keras.__version__, "backend": keras.backend.backend(), "numpy": numpy.__version__}


class StepTimer:
    """A Keras callback that records the wall time of every training batch."""

    def __new__(cls, *args, **kwargs):
        import keras

        class _Timer(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.ends = []

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())

        return _Timer()


def step_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the benchmarks that time training steps in rounds: --steps, --rounds, --batch-size, --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", default=None)
    return parser


def steady_rate(ends: list[float], batch_size: int, skip: int = 5) -> float:
    """Images per second over the batches after the first `skip` (compilation, warm-up)."""
    if len(ends) <= skip + 1:
        raise SystemExit(f"too few batches timed ({len(ends)}); raise --images")
    return batch_size * (len(ends) - 1 - skip) / (ends[-1] - ends[skip])


def report(rows: list[tuple], header: tuple, result: dict, json_path: str | None) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)))
    print(f"ratio: {result['ratio']:.2f}")
    if json_path:
        write_json(json_path, {**result, "machine": machine()})
        print(f"wrote {json_path}")


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """A benchmark's result file; numpy numbers and arrays become plain JSON."""
    text = json.dumps(obj, indent=2, default=lambda value: value.tolist() if hasattr(value, "tolist") else str(value))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")
