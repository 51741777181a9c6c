"""Prediction from files, where decoding dominates: the seed's way vs ultrasonic's Predictor.

- seed:       flow_from_directory(target 224, batch 10, vgg16.preprocess_input) + model.predict
- ultrasonic: Predictor.predict_files on the same files (JPEG draft decoding on a thread pool,
              uint8 batches into a model that normalises itself), once with the seed network
              (224 px RGB, same compute as the seed) and once with the default preset's model
              (what a user gets without flags); weights do not matter for speed.
"ratio" is the default preset's speed over the seed's way. Also reports the single-image
latency (file -> probabilities) p50 and p95 of the default Predictor.

    python benchmarks/bench_predict.py [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from bench_decode import corpus  # noqa: E402
from common import report  # noqa: E402

SIZE = 224


def make_run(folder, preset: str) -> str:
    """A run directory holding an (untrained) model of the preset, enough for the Predictor."""
    from ultrasonic import RunDir, RunMeta, load_config
    from ultrasonic.models import build_model

    run = RunDir(folder / preset)
    run.path.mkdir(parents=True)
    cfg = load_config(preset=preset)
    build_model(cfg, 2).save(run.model)
    run.write_meta(RunMeta(model_id=preset, task="binary", classes=["NORMAL", "PNEUMONIA"],
                           positive_class="PNEUMONIA", image_size=(cfg.image_size,) * 2, channels=cfg.channels,
                           threshold=0.5))
    return str(run.path)


def seed_way(root, run_dir: str) -> float:
    """The origin's way; run_dir is unused (the seed has no run directory), kept for symmetry."""
    import keras
    from keras.applications.vgg16 import preprocess_input
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    from ultrasonic.models.seed import seed_backbone, seed_head

    inputs = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(seed_head(seed_backbone(inputs))))
    flow = ImageDataGenerator(preprocessing_function=preprocess_input).flow_from_directory(
        str(root), target_size=(SIZE, SIZE), batch_size=10, class_mode=None, shuffle=False)
    model.predict(flow, steps=1, verbose=0)  # compile outside the timing, as for ultrasonic
    start = time.perf_counter()
    model.predict(flow, verbose=0)
    return time.perf_counter() - start


def ultrasonic_way(root, run_dir: str) -> tuple[float, list[float]]:
    from ultrasonic import Predictor
    from ultrasonic.data import expand_paths

    predictor = Predictor(run_dir)
    files = expand_paths([root])
    predictor.predict_files(files[:32])  # compile outside the timing
    start = time.perf_counter()
    rows = predictor.predict_files(files)
    seconds = time.perf_counter() - start
    assert len(rows) == len(files) and all("class" in r for r in rows)
    latencies = []
    for f in files[:40]:
        t = time.perf_counter()
        predictor.predict_files([f])
        latencies.append(time.perf_counter() - t)
    return seconds, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="times each of the 40 files is predicted")
    parser.add_argument("--json")
    args = parser.parse_args()
    root = corpus(args.repeat)
    work = root.parent / f"{root.name}_runs"
    try:
        n = len(list(root.rglob("*.jpeg")))
        seed_run = make_run(work, "seed")
        seed = seed_way(root, seed_run)
        same_net, _ = ultrasonic_way(root, seed_run)
        ours, latencies = ultrasonic_way(root, make_run(work, "default"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    p50, p95 = (1000 * np.percentile(latencies, q) for q in (50, 95))
    rows = [("seed (flow_from_directory, seed net)", f"{n / seed:.1f}", f"{seed:.2f}", "1.00"),
            ("ultrasonic Predictor, seed net", f"{n / same_net:.1f}", f"{same_net:.2f}", f"{seed / same_net:.2f}"),
            ("ultrasonic Predictor, default preset", f"{n / ours:.1f}", f"{ours:.2f}", f"{seed / ours:.2f}")]
    result = {"seed_img_s": n / seed, "ultrasonic_seed_net_img_s": n / same_net, "ultrasonic_img_s": n / ours,
              "ratio": seed / ours, "ratio_same_network": seed / same_net, "images": n,
              "latency_ms_p50": p50, "latency_ms_p95": p95}
    report(rows, ("pipeline", "images/s", "seconds", "x seed"), result, args.json)
    print(f"single image, file -> probabilities (default preset): p50 {p50:.1f} ms, p95 {p95:.1f} ms")


if __name__ == "__main__":
    main()
