"""Time to quality: how soon the `default` preset reaches the validation ROC-AUC the `seed` preset ends with.

Both presets train on the same data with the same patient-grouped split (the
split depends only on the file names, the fractions and the seed, so the two
runs' splits.csv are identical; checked). The seed's target is the validation
ROC-AUC of the model its recipe delivers (the best-val_loss checkpoint); the
default's time is the elapsed wall time (data loading included) at the end of
the first epoch whose validation ROC-AUC reaches it. Both AUCs are Keras'
`val_auc` from history.csv, so they are measured the same way.

    python benchmarks/time_to_quality.py                   # trains both on ../shared/data/chest_xray_224
    python benchmarks/time_to_quality.py --seed-run runs/results/cxr-seed --default-run runs/results/cxr-default

The seed preset here runs on ultrasonic's pipeline, which is faster than the
seed's own (ImageDataGenerator): its wall time, the denominator, is therefore
smaller than the original's, and the ratio conservative.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from common import report, shared_dir

from ultrasonic import RunDir


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def summarise(seed_run: Path, default_run: Path) -> dict:
    if (seed_run / "splits.csv").read_text() != (default_run / "splits.csv").read_text():
        raise SystemExit(f"{seed_run} and {default_run} were trained on different splits: not comparable")
    seed_rows, default_rows = history(seed_run), history(default_run)
    seed_meta, default_meta = RunDir(seed_run).read_meta(), RunDir(default_run).read_meta()
    delivered = seed_rows[seed_meta.best_epoch - 1]
    target = delivered["val_auc"]
    reached = next((row for row in default_rows if row["val_auc"] >= target), None)
    seed_seconds = seed_meta.train_seconds
    result = {
        "seed_epochs": len(seed_rows), "seed_best_epoch": seed_meta.best_epoch, "seed_val_auc": target,
        "seed_seconds": seed_seconds, "default_epochs": len(default_rows),
        "default_best_val_auc": max(row["val_auc"] for row in default_rows),
        "default_seconds": default_meta.train_seconds,
        "default_reached_at_epoch": None if reached is None else int(reached["epoch"]) + 1,
        "default_seconds_to_target": None if reached is None else reached["elapsed_seconds"],
    }
    result["ratio"] = (None if reached is None else round(seed_seconds / reached["elapsed_seconds"], 2))
    result["goal"] = "ratio >= 5 (the default reaches the seed's AUC in <= 1/5 of the seed's wall time)"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="default: ../shared/data/chest_xray_224")
    parser.add_argument("--out", default="runs/ttq", help="where the two runs go when they are trained here")
    parser.add_argument("--seed-run", help="an existing seed-preset run (skips training it)")
    parser.add_argument("--default-run", help="an existing default-preset run (skips training it)")
    parser.add_argument("--json")
    args = parser.parse_args()
    runs = {"seed": args.seed_run, "default": args.default_run}
    for preset, given in runs.items():
        if given is None:
            from ultrasonic import train

            data = args.data or str(shared_dir("chest_xray_224"))
            runs[preset] = str(train(data, f"{args.out}/{preset}", preset=preset, overwrite=True,
                                     tensorboard=False).run_dir)
    r = summarise(Path(runs["seed"]), Path(runs["default"]))
    rows = [("seed", r["seed_epochs"], f"{r['seed_val_auc']:.4f} (epoch {r['seed_best_epoch']})",
             f"{r['seed_seconds']:.0f}"),
            ("default", r["default_epochs"], f"{r['default_best_val_auc']:.4f} (best)", f"{r['default_seconds']:.0f}"),
            ("default to seed's AUC", r["default_reached_at_epoch"] or "never", "", r["default_seconds_to_target"])]
    if r["ratio"] is None:
        r["ratio"] = float("nan")
    report(rows, ("run", "epochs", "val ROC-AUC", "seconds"), r, args.json)


if __name__ == "__main__":
    main()
