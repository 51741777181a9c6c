"""The cross-validation table of docs/results.md from `train --cv K` run directories (their OUT/cv.json).

One row per run: the folds' ROC-AUC (macro one-vs-rest for more than two classes), accuracy, sensitivity
and specificity as mean +- sample sd (min-max), each fold at its own stored threshold; the pooled
out-of-fold ROC-AUC with its patient-bootstrap interval; and the minutes the folds took to train
(meta.json's train_seconds summed, so a final model killed or still training does not count).

    python benchmarks/cv_table.py runs/cv/busi runs/cv/cxr
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")


def spread(entry: dict) -> str:
    return f"{entry['mean']:.3f} ± {entry['std']:.3f} ({entry['min']:.3f}-{entry['max']:.3f})"


def fold_minutes(run: Path, cv: dict) -> float:
    return sum(json.loads((run / fold["run"] / "meta.json").read_text())["train_seconds"]
               for fold in cv["folds"]) / 60


def row(run: Path) -> list[str]:
    cv = json.loads((run / "cv.json").read_text())
    first = json.loads((run / cv["folds"][0]["run"] / "meta.json").read_text())
    across = cv["across_folds"]
    pooled = cv["pooled_out_of_fold"]["roc_auc"]
    lo, hi = pooled["ci95"]
    return ([Path(first["data"]["path"]).name, run.name, str(cv["k"]), str(cv["pooled_out_of_fold"]["images"])]
            + [spread(across[name]) if name in across else "n/a" for name in FIGURES]
            + [f"{pooled['value']:.3f} ({lo:.3f}-{hi:.3f})", f"{fold_minutes(run, cv):.0f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories trained with --cv K")
    args = parser.parse_args()
    header = ["data", "run", "folds", "images", "ROC-AUC", "accuracy", "sensitivity", "specificity",
              "pooled out-of-fold ROC-AUC (95 % CI)", "fold min"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for run in args.runs:
        print("| " + " | ".join(row(run)) + " |")


if __name__ == "__main__":
    main()
