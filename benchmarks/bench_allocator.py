"""What keeping freed memory (ultrasonic/training/allocator.py) buys a training step: the default network fed as `train` feeds it.

Each round trains the default preset's network on the same random uint8 batches, through
data/batches.py's ArrayBatches with class weights (train's own path, a Keras PyDataset),
once in a process left with glibc's defaults and once in a process that called
`keep_freed_memory()`. The setting is per process, so every measurement is a child
process of its own; the rounds alternate so that a change in the machine's load hits
both. Reported per variant: images/s after warm-up, and the system CPU seconds and minor
page faults of the fit; the ratio is tuned / glibc images/s (medians of the rounds).

    python benchmarks/bench_allocator.py [--steps 40] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys

from common import StepTimer, report, steady_rate, step_parser

VARIANTS = ("glibc", "tuned")


def child(variant: str, steps: int, batch_size: int) -> dict:
    """One fit in this process; `variant` says whether the allocator is tuned first."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if variant == "tuned":
        from ultrasonic.training.allocator import keep_freed_memory

        if not keep_freed_memory():
            raise SystemExit("keep_freed_memory() changed nothing here (not glibc, or MALLOC_* set)")
    import numpy as np

    from ultrasonic.config import load_config
    from ultrasonic.data.batches import ArrayBatches, class_weights, encode_labels
    from ultrasonic.models import build_model, training_model
    from ultrasonic.training.fit import compile_model

    rng = np.random.default_rng(0)
    n = steps * batch_size
    images = rng.integers(0, 256, (n, 96, 96, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, n)
    cfg = load_config(overrides={"batch_size": batch_size})
    model = training_model(build_model(cfg, 2), cfg)
    compile_model(model, cfg, 2, steps_per_epoch=steps, epochs=cfg.epochs)
    batches = ArrayBatches(images, encode_labels(labels, 2), np.arange(n), batch_size, shuffle=True, seed=0,
                           sample_weight=class_weights(labels, 2)[labels])
    timer = StepTimer()
    before = resource.getrusage(resource.RUSAGE_SELF)
    model.fit(batches, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"images_per_second": steady_rate(timer.ends, batch_size),
            "system_seconds": after.ru_stime - before.ru_stime, "minor_faults": after.ru_minflt - before.ru_minflt}


def measure(variant: str, steps: int, batch_size: int) -> dict:
    from ultrasonic.training.allocator import USER_SETTINGS

    env = {k: v for k, v in os.environ.items() if k not in USER_SETTINGS}  # both variants start from glibc's defaults
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", variant, "--steps", str(steps),
                          "--batch-size", str(batch_size)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.steps, args.batch_size)))
        return
    rounds = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name in VARIANTS:
            rounds[name].append(measure(name, args.steps, args.batch_size))
    medians = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
               for name, rows in rounds.items()}
    rows = [(name, f"{m['images_per_second']:.1f}", f"{m['system_seconds']:.1f}", f"{m['minor_faults']:,}",
             " ".join(f"{r['images_per_second']:.1f}" for r in rounds[name])) for name, m in medians.items()]
    result = {"medians": medians, "rounds": rounds,
              "ratio": medians["tuned"]["images_per_second"] / medians["glibc"]["images_per_second"]}
    report(rows, ("allocator", "images/s (median)", "system s", "minor faults", "rounds"), result, args.json)


if __name__ == "__main__":
    main()
