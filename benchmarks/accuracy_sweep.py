"""Train and validate several recipes in one go: the evidence behind the `default` preset.

Each variant is `--preset` plus settings; every run is trained with the same
seed and split, then evaluated on its VALIDATION split (never a test split).
One JSON line per run goes to --log, so an interrupted sweep keeps its rows.

    python benchmarks/accuracy_sweep.py ../shared/data/busi --out runs/sweep-busi \\
        --variant base: --variant w24:width=24 --variant s96:image_size=96,epochs=10

A variant is NAME:key=value,key=value (values parsed as YAML: 1e-3, true, 96).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def parse_variant(text: str) -> tuple[str, dict]:
    from ultrasonic import parse_set

    name, _, body = text.partition(":")
    return name, parse_set([item for item in body.split(",") if item])


def headline(metrics: dict) -> dict:
    """The few validation numbers a sweep compares: AUC and accuracy with their 95 % CIs."""
    if metrics["task"] == "binary":
        half, best = metrics["at_0.5"], metrics.get("at_threshold", metrics["at_0.5"])
        return {"auc": half["roc_auc"]["value"], "auc_ci": half["roc_auc"]["ci95"],
                "acc_0.5": half["accuracy"]["value"], "sens_0.5": half["sensitivity"]["value"],
                "spec_0.5": half["specificity"]["value"], "acc_thr": best["accuracy"]["value"],
                "sens_thr": best["sensitivity"]["value"], "spec_thr": best["specificity"]["value"],
                "threshold": best["threshold"]}
    overall = metrics["overall"]
    return {"auc": overall["macro_roc_auc"]["value"], "auc_ci": overall["macro_roc_auc"]["ci95"],
            "acc": overall["accuracy"]["value"], "acc_ci": overall["accuracy"]["ci95"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--out", default="runs/sweep")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--variant", action="append", required=True)
    parser.add_argument("--log", default=None, help="JSON lines file (default OUT/sweep.jsonl)")
    args = parser.parse_args(argv)

    from ultrasonic import evaluate, train

    out = Path(args.out)
    log = Path(args.log or out / "sweep.jsonl")
    log.parent.mkdir(parents=True, exist_ok=True)
    for name, settings in map(parse_variant, args.variant):
        start = time.perf_counter()
        result = train(args.data, str(out / name), preset=args.preset, overwrite=True, tensorboard=False,
                       verbose=0, **settings)
        metrics = evaluate(result.run_dir, split="val", n_boot=500)
        row = {"name": name, "preset": args.preset, "settings": settings, "data": args.data,
               "seconds": round(time.perf_counter() - start, 1), "best_epoch": result.best_epoch,
               **headline(metrics)}
        print(json.dumps(row), flush=True)
        with log.open("a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
