"""The cross-validation table of docs/results.md from `train --cv K` run directories (their OUT/cv.json).

One row per run: the folds' ROC-AUC (macro one-vs-rest for more than two classes), accuracy, sensitivity
and specificity as mean +- sample sd (min-max), each fold at its own stored threshold; the pooled
out-of-fold ROC-AUC with its bootstrap interval (by patient where the file names give one); and the
minutes the folds took to train (meta.json's train_seconds summed, so a final model killed or still
training does not count).

    python benchmarks/cv_table.py runs/cv/busi runs/cv/cxr

`--against BASE` adds the paired comparison of each run with BASE, a run of the same
folds (their splits.csv must give the same validation images, else it stops): the
runs' per-fold ROC-AUC, the mean and sd of the differences, how many folds are
better, and the paired t on k - 1 degrees of freedom. That is the test for a change
that docs/results.md uses: one split cannot tell a gain of 0.005 from noise.

    python benchmarks/cv_table.py runs/cv/busi-ema --against runs/cv/busi
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from results_table import ci, print_table

FIGURES = ("roc_auc", "accuracy", "sensitivity", "specificity")
HEADER = ["data", "run", "folds", "images", "ROC-AUC", "accuracy", "sensitivity", "specificity",
          "pooled out-of-fold ROC-AUC (95 % CI)", "fold min"]


def spread(entry: dict) -> str:
    return f"{entry['mean']:.3f} ± {entry['std']:.3f} ({entry['min']:.3f}-{entry['max']:.3f})"


def row(run: Path) -> list[str]:
    from ultrasonic import RunDir

    cv = json.loads((run / "cv.json").read_text())
    metas = [RunDir(run / fold["run"]).read_meta() for fold in cv["folds"]]
    pooled = cv["pooled_out_of_fold"]
    return ([Path(metas[0].data["path"]).name, run.name, str(cv["k"]), str(pooled["images"])]
            + [spread(cv["across_folds"][name]) if name in cv["across_folds"] else "n/a" for name in FIGURES]
            + [ci(pooled["roc_auc"]), f"{sum(m.train_seconds for m in metas) / 60:.0f}"])


PAIRED_HEADER = ["run", "per-fold ROC-AUC", "against", "mean difference ± sd", "folds better", "paired t (df)"]


def folds(run: Path) -> list[tuple[float, frozenset[str]]]:
    """Per fold of a --cv run, its ROC-AUC and the files its splits.csv puts in the validation split."""
    from ultrasonic import RunDir

    return [(fold["roc_auc"]["value"],
             frozenset(f for f, split in RunDir(run / fold["run"]).read_splits().items() if split == "val"))
            for fold in json.loads((run / "cv.json").read_text())["folds"]]


def paired_row(run: Path, base: Path) -> list[str]:
    ours, theirs = folds(run), folds(base)
    if [files for _, files in ours] != [files for _, files in theirs]:
        raise SystemExit(f"{run} and {base}: different folds (their validation images differ); "
                         "a paired comparison needs the same data and cv settings")
    aucs = np.array([auc for auc, _ in ours])
    diff = aucs - np.array([auc for auc, _ in theirs])
    sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
    t = diff.mean() / (sd / np.sqrt(len(diff))) if sd > 0 else float("nan")
    return [run.name, " / ".join(f"{a:.3f}" for a in aucs), base.name, f"{diff.mean():+.4f} ± {sd:.4f}",
            f"{int((diff > 0).sum())} of {len(diff)}", f"{t:.1f} ({len(diff) - 1})"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories trained with --cv K")
    parser.add_argument("--against", type=Path, metavar="BASE",
                        help="also compare each run fold by fold with BASE, a --cv run of the same folds")
    args = parser.parse_args()
    print_table(HEADER, [row(run) for run in args.runs])
    if args.against:
        print()
        print_table(PAIRED_HEADER, [paired_row(run, args.against) for run in args.runs])


if __name__ == "__main__":
    main()
