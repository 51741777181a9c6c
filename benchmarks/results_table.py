"""The table of docs/results.md from run directories: validation figures with 95 % CIs, and training time.

Each RUN must have been evaluated on its validation split into RUN/eval-val
(`ultrasonic evaluate RUN --split val --out RUN/eval-val`); reproduce.sh does both.

    python benchmarks/results_table.py runs/results/*/
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ci(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{entry['value']:.3f} ({lo:.3f}-{hi:.3f})"


def row(run: Path) -> list[str]:
    from ultrasonic import RunDir

    meta = RunDir(run).read_meta()
    metrics = json.loads((run / "eval-val" / "metrics.json").read_text())
    minutes = f"{meta.train_seconds / 60:.1f}"
    data = Path(meta.data["path"]).name
    name = [data, meta.preset, str(metrics["n"])]
    if metrics["task"] == "binary":
        at = metrics.get("at_threshold", metrics["at_0.5"])
        half = metrics["at_0.5"]
        return name + [ci(half["roc_auc"]), ci(half["accuracy"]), ci(half["sensitivity"]), ci(half["specificity"]),
                       f"{at['threshold']:.2f}: {at['accuracy']['value']:.3f} / {at['sensitivity']['value']:.3f} / "
                       f"{at['specificity']['value']:.3f}", minutes]
    overall = metrics["overall"]
    return name + [ci(overall["macro_roc_auc"]) + " macro", ci(overall["accuracy"]),
                   ci(overall["macro_sensitivity"]) + " macro", ci(overall["macro_specificity"]) + " macro",
                   "argmax", minutes]


HEADER = ["data", "preset", "val images", "ROC-AUC (95 % CI)", "accuracy at 0.5", "sensitivity at 0.5",
          "specificity at 0.5", "at the val threshold: acc / sens / spec", "train min"]


def print_table(header: list[str], rows: list[list[str]]) -> None:
    """A Markdown table, as docs/results.md has them."""
    for cells in [header, ["---"] * len(header), *rows]:
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    args = parser.parse_args()
    print_table(HEADER, [row(Path(run)) for run in args.runs])


if __name__ == "__main__":
    main()
