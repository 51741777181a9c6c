"""What the default's shift defences cost in training: the network before issue #12 against the default now.

- before:   the default before issue #12: x / 255, rotation/shift/zoom/flip (one affine warp);
- now:      the default preset: the intensity augmentation (brightness, contrast, gamma,
            blur/sharpening, noise) after the same warp;
- standard: the default with `preprocessing=standard` and `border=0.05` as well.

Both train the same network on the same random uint8 batches, rounds alternating so
that a change in the machine's load hits both; the ratio is the median of the rounds.

    python benchmarks/bench_augment.py [--steps 40] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import os
import statistics

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from common import StepTimer, report, steady_rate, step_parser  # noqa: E402

RECIPES = {"before": dict(brightness=0.0, contrast=0.0, gamma=0.0, blur=0.0, noise=0.0), "now": {},
           "standard": dict(preprocessing="standard", border=0.05)}


def rate(settings: dict, images: np.ndarray, labels: np.ndarray, batch_size: int) -> float:
    import keras

    from ultrasonic.config import load_config
    from ultrasonic.models import build_model, training_model

    cfg = load_config(overrides=settings)
    model = training_model(build_model(cfg, 2), cfg)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="binary_crossentropy")
    timer = StepTimer()
    model.fit(images, labels, batch_size=batch_size, epochs=1, verbose=0, callbacks=[timer], shuffle=False)
    return steady_rate(timer.ends, batch_size)


def main(argv: list[str] | None = None) -> None:
    parser = step_parser(__doc__)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.steps * args.batch_size, 96, 96, 1), dtype=np.uint8)
    labels = rng.integers(0, 2, (len(images), 1)).astype("float32")
    rates = {name: [] for name in RECIPES}
    for _ in range(args.rounds):
        for name, settings in RECIPES.items():
            rates[name].append(rate(settings, images, labels, args.batch_size))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    rows = [(name, f"{medians[name]:.1f}", f"{medians['before'] / medians[name]:.2f}",
             " ".join(f"{v:.1f}" for v in rates[name])) for name in rates]
    result = {"images_per_second": medians, "rounds": rates, "ratio": medians["before"] / medians["now"],
              "ratio_standard": medians["before"] / medians["standard"]}
    report(rows, ("recipe", "images/s (median)", "time vs before", "rounds"), result, args.json)


if __name__ == "__main__":
    main()
