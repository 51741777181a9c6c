"""The cross-validation table of docs/results.md from `train --cv K` run directories (their OUT/cv.json).

One row per run: the folds' ROC-AUC (macro one-vs-rest for more than two classes), accuracy, sensitivity
and specificity as mean +- sample sd (min-max), each fold at its own stored threshold; the pooled
out-of-fold ROC-AUC with its bootstrap interval (by patient where the file names give one); and the
minutes the folds took to train (meta.json's train_seconds summed, so a final model killed or still
training does not count).

    python benchmarks/cv_table.py runs/cv/busi runs/cv/cxr
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="run directories trained with --cv K")
    args = parser.parse_args()
    print_table(HEADER, [row(run) for run in args.runs])


if __name__ == "__main__":
    main()
