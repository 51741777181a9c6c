"""Batch prediction over a large archive: images/s and memory, Keras engine vs ONNX Runtime.

Builds an archive of N images (default 20,000) by symlinking the shared chest
X-ray JPEGs over and over into 1,000-file folders, then runs the real
`ultrasonic predict RUN ARCHIVE --out preds.csv` path (archive.predict_to_csv:
lazy walk, decoding on a thread pool overlapped with inference, rows appended
per batch) once per engine, each in its own process pinned to 2 cores. The
model is the default preset's network, untrained (weights do not change speed).
Memory: the peak RSS of each process, and its RSS sampled at the end of each
eighth of the run's time (constant memory means these stay level).

    python benchmarks/bench_predict_archive.py [--images 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from common import machine, shared_dir, write_json  # noqa: E402

CORES = 2
FOLDER_SIZE = 1000


def make_archive(root: Path, n: int) -> Path:
    """n symlinks to the shared JPEGs, in folders of FOLDER_SIZE, as a big archive would be laid out."""
    sources = sorted(shared_dir("chest_xray_224").rglob("*.jpeg"))
    for i in range(n):
        folder = root / f"batch{i // FOLDER_SIZE:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"study{i:06d}.jpeg").symlink_to(sources[i % len(sources)])
    return root


def make_run(root: Path) -> Path:
    """The default preset's network, untrained, with its meta.json, exported to ONNX."""
    import hashlib

    from ultrasonic import RunDir, RunMeta, export, load_config
    from ultrasonic.models import build_model

    run = RunDir(root / "run")
    run.path.mkdir(parents=True)
    cfg = load_config(preset="default")
    build_model(cfg, 2).save(run.model)
    run.write_meta(RunMeta(model_id=hashlib.sha256(run.model.read_bytes()).hexdigest()[:16], task="binary",
                           classes=["NORMAL", "PNEUMONIA"], positive_class="PNEUMONIA",
                           image_size=(cfg.image_size,) * 2, channels=cfg.channels, threshold=0.5))
    export(run.path)
    return run.path


def peak_rss_mb() -> float:
    """VmHWM: this process's peak since exec (ru_maxrss would include the parent's, copied at fork)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _sample_rss(samples: list, every_s: float = 0.5) -> None:
    while True:
        samples.append(round(rss_mb()))
        time.sleep(every_s)


def child(engine: str, run: str, archive: str, out: str, batch_size: int) -> None:
    """One engine in this process: predict the archive into a CSV, print the figures as JSON."""
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:CORES])
    from ultrasonic import Predictor
    from ultrasonic.data import iter_paths
    from ultrasonic.inference import predict_to_csv

    predictor = Predictor(run, engine=engine)
    image = predictor.read(next(iter_paths([archive])))
    predictor.predict_proba(np.repeat(image[None], batch_size, axis=0), batch_size)  # trace outside the timing
    samples = []
    sampler = threading.Thread(target=_sample_rss, args=(samples,), daemon=True)
    start = time.perf_counter()
    sampler.start()
    done = predict_to_csv(predictor, [archive], out, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    modules = [m for m in ("tensorflow", "keras", "jax") if m in sys.modules]
    print(json.dumps({"engine": engine, "images": done.written, "errors": done.errors, "seconds": round(seconds, 1),
                      "images_per_s": round(done.written / seconds, 1),
                      "peak_rss_mb": round(peak_rss_mb()),
                      "rss_mb_each_eighth": [samples[len(samples) * k // 8 - 1] for k in range(1, 9)],
                      "imports": modules}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--engines", default="keras,onnx")
    parser.add_argument("--json", help="write the figures and the machine here")
    parser.add_argument("--child", nargs=4, metavar=("ENGINE", "RUN", "ARCHIVE", "CSV"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child, args.batch_size)
    with tempfile.TemporaryDirectory(prefix="bench_archive_") as tmp:
        tmp = Path(tmp)
        archive, run = make_archive(tmp / "archive", args.images), make_run(tmp)
        results = []
        for engine in args.engines.split(","):
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, __file__, "--images", str(args.images), "--batch-size",
                                   str(args.batch_size), "--child", engine, str(run), str(archive),
                                   str(tmp / f"{engine}.csv")], capture_output=True, text=True, check=True)
            results.append({**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": round(load, 1)})
    header = ("engine", "images", "seconds", "images/s", "peak RSS MB", "RSS MB at each 1/8 of the time", "load avg")
    rows = [(r["engine"], r["images"], r["seconds"], r["images_per_s"], r["peak_rss_mb"],
             " / ".join(str(v) for v in r["rss_mb_each_eighth"]), r["load_before"]) for r in results]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))
    if args.json:
        info = machine()
        for name in ("onnxruntime", "tensorflow", "PIL"):
            info[name] = __import__(name).__version__
        write_json(args.json, {"results": results, "cores_used": CORES, "batch_size": args.batch_size,
                               "machine": info})
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
