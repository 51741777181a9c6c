"""Training speed: the seed's pipeline vs ultrasonic's, on the same images, in one run.

- seed:       ImageDataGenerator + flow_from_directory exactly as the origin (DESIGN.md),
              batch 10, 224 px RGB, vgg16.preprocess_input, augmentation in Python each batch;
- ultrasonic: the same seed network from ultrasonic (augmentation composed into one
              affine layer inside the model) fed uint8 batches from the decode-once cache;
- ceiling:    the same network on in-memory arrays, no augmentation, same batch size
              as ultrasonic: the network's own compute limit on this machine.

    python benchmarks/bench_train.py [--images 1200] [--batch-size 32] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import StepTimer, peak_rss_mb, report, shared_dir, steady_rate  # noqa: E402

SIZE = 224


def subset(n: int) -> Path:
    """A folder with n images of chest_xray_224 (the class ratio kept), as the seed would read."""
    src = shared_dir("chest_xray_224") / "train"
    dst = Path(tempfile.mkdtemp(prefix="bench_train_")) / "train"
    files = {c: sorted((src / c).glob("*.jpeg")) for c in ("NORMAL", "PNEUMONIA")}
    total = sum(len(v) for v in files.values())
    for c, fs in files.items():
        (dst / c).mkdir(parents=True)
        for f in fs[: round(n * len(fs) / total)]:
            os.symlink(f, dst / c / f.name)
    return dst


def seed_model():
    """The origin's network, taking float input already preprocessed (as ImageDataGenerator gives)."""
    import keras

    from ultrasonic.models.seed import seed_backbone, seed_head

    inputs = keras.Input((SIZE, SIZE, 3))
    x = seed_head(seed_backbone(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(keras.optimizers.Adam(learning_rate=1e-3), "binary_crossentropy", metrics=["accuracy"])
    return model


def bench_seed(folder: Path, steps: int) -> float:
    from keras.applications.vgg16 import preprocess_input
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    generator = ImageDataGenerator(preprocessing_function=preprocess_input, rotation_range=20,
                                   width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True,
                                   zoom_range=0.2)
    flow = generator.flow_from_directory(str(folder), target_size=(SIZE, SIZE), batch_size=10,
                                         class_mode="binary", shuffle=True, seed=0)
    timer = StepTimer()
    seed_model().fit(flow, steps_per_epoch=min(steps, len(flow)), epochs=1, callbacks=[timer], verbose=0)
    return steady_rate(timer.ends, 10)


def bench_ultrasonic(folder: Path, steps: int, batch_size: int, augment: bool) -> float:
    from ultrasonic import load_config
    from ultrasonic.data import ArrayBatches, encode_labels, load_images, open_data
    from ultrasonic.models import build_model, training_model
    from ultrasonic.training import compile_model

    overrides = {"image_size": SIZE, "batch_size": batch_size, "cache_dir": str(folder.parent / "cache")}
    if not augment:
        overrides.update(rotation=0, shift=0, zoom=0, horizontal_flip=False)
    cfg = load_config(preset="seed", overrides=overrides)
    catalog = open_data(str(folder), cache_dir=cfg.cache_dir)
    images = load_images(catalog, SIZE, 3, cfg.cache_dir).images  # memory-mapped, as in training
    model = training_model(build_model(cfg, 2), cfg)  # as `train` fits it: the augmentation in front
    compile_model(model, cfg, 2, steps_per_epoch=steps)
    batches = ArrayBatches(images, encode_labels(catalog.labels, 2), np.arange(len(images)), batch_size,
                           shuffle=True)
    timer = StepTimer()
    model.fit(batches, steps_per_epoch=min(steps, len(batches)), epochs=1, callbacks=[timer], verbose=0)
    return steady_rate(timer.ends, batch_size)


PIPELINES = ("seed", "ultrasonic", "ceiling")


def run_one(name: str, folder: Path, images: int, batch_size: int) -> dict:
    """One pipeline, measured in this process (the parent runs each in a fresh process)."""
    if name == "seed":
        rate = bench_seed(folder, images // 10)
    else:
        rate = bench_ultrasonic(folder, images // batch_size, batch_size, augment=(name == "ultrasonic"))
    return {"img_s": rate, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument("--json")
    parser.add_argument("--only", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        print(json.dumps(run_one(args.only, Path(args.folder), args.images, args.batch_size)))
        return
    folder = subset(args.images)
    try:
        # Rounds interleave the pipelines (seed, ultrasonic, ceiling, seed, ...) and each figure is the
        # median over rounds: on a shared machine a neighbour's burst then hits one round, not one pipeline.
        runs = {name: [] for name in PIPELINES}
        for _ in range(args.rounds):
            for name in PIPELINES:
                runs[name].append(_in_subprocess(name, folder, args))
        results = {name: _median_run(rs) for name, rs in runs.items()}
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)
    seed = results["seed"]["img_s"]
    rows = [(name, f"{r['img_s']:.1f}", f"{5216 / r['img_s']:.0f}", f"{r['peak_rss_mb']:.0f}",
             f"{r['img_s'] / seed:.2f}", f"{r['wall_s']:.0f}") for name, r in results.items()]
    result = {"seed_img_s": seed, "ultrasonic_img_s": results["ultrasonic"]["img_s"],
              "ceiling_img_s": results["ceiling"]["img_s"], "ratio": results["ultrasonic"]["img_s"] / seed,
              "fraction_of_ceiling": results["ultrasonic"]["img_s"] / results["ceiling"]["img_s"],
              "peak_rss_mb": {n: r["peak_rss_mb"] for n, r in results.items()},
              "batch_size": args.batch_size, "images": args.images, "rounds": args.rounds,
              "img_s_per_round": {n: [round(r["img_s"], 1) for r in rs] for n, rs in runs.items()}}
    report(rows, ("pipeline", "images/s", "s/epoch (5216 img)", "peak RSS MB", "x seed", "wall s"),
           result, args.json)
    print(f"ultrasonic at {100 * result['fraction_of_ceiling']:.0f} % of the network's ceiling")


def _median_run(runs: list[dict]) -> dict:
    """The run with the median speed (peak RSS: the largest of all rounds)."""
    middle = sorted(runs, key=lambda r: r["img_s"])[len(runs) // 2]
    return {**middle, "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}


def _in_subprocess(name: str, folder: Path, args) -> dict:
    start = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "--only", name, "--folder", str(folder),
                          "--images", str(args.images), "--batch-size", str(args.batch_size)],
                         capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{name} pipeline failed:\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "wall_s": time.perf_counter() - start}


if __name__ == "__main__":
    main()
