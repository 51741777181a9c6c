"""The `ultrasonic` command: train, evaluate, predict and demo, one sub-command each.

Every error of ours is printed as one line naming the file and the problem,
with exit status 2; no library traceback reaches the user.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from pathlib import Path

from .errors import UltrasonicError

DEMO_SETTINGS = dict(image_size=64, epochs=6, batch_size=32)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return args.func(args) or 0
    except UltrasonicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ultrasonic", description=__doc__.splitlines()[0])
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    demo = sub.add_parser("demo", help="train + evaluate on the demo data, print where the report is")
    demo.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    demo.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"])
    demo.set_defaults(func=_demo)
    return parser


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a classifier and leave a run directory")
    p.add_argument("data", help="folder of class folders, folder with train/ [val/ test/], .npz, or 'demo'")
    p.add_argument("--out", help="run directory (default runs/latest)")
    p.add_argument("--preset", choices=["seed", "default"], help="recipe (default: default)")
    p.add_argument("--config", help="YAML file of settings; flags override it")
    p.add_argument("--epochs", type=int)
    p.add_argument("--image-size", type=int, help="side of the square input in pixels")
    p.add_argument("--channels", type=int, choices=[1, 3])
    p.add_argument("--batch-size", type=int)
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--classes", help="comma-separated class names, in order (default: discovered)")
    p.add_argument("--positive-class", help="class counted as positive (default: the second)")
    p.add_argument("--val-fraction", type=float)
    p.add_argument("--test-fraction", type=float)
    p.add_argument("--patient-pattern", help="regex whose first group is the patient id in a file name")
    p.add_argument("--on-bad-image", choices=["skip", "fail"])
    p.add_argument("--max-bad-fraction", type=float)
    p.add_argument("--cache-dir", help="decoded-image cache (default $ULTRASONIC_CACHE or ~/.cache/ultrasonic)")
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.set_defaults(func=_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics with 95%% CIs, plots and report.html for a run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="other data to evaluate on (default: the run's own split)")
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.set_defaults(func=_evaluate)


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="class and probabilities for image files and folders")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=_predict)


def _train(args) -> int:
    from .training import train

    settings = {k: getattr(args, k) for k in ("epochs", "image_size", "channels", "batch_size", "learning_rate",
                                              "seed", "classes", "positive_class", "val_fraction",
                                              "test_fraction", "patient_pattern", "on_bad_image",
                                              "max_bad_fraction", "cache_dir", "workers", "tensorboard")}
    result = train(args.data, args.out, preset=args.preset, config=args.config, resume=args.resume,
                   overwrite=args.overwrite, **settings)
    print(f"run directory: {result.run_dir}")
    return 0


def _evaluate(args) -> int:
    from .evaluation import evaluate
    from .metrics import summary_lines

    metrics = evaluate(args.run_dir, args.data, args.split, out=args.out, n_boot=args.n_boot)
    print("\n".join(summary_lines(metrics)))
    print(f"report: {Path(args.out or Path(args.run_dir) / 'eval') / 'report.html'}")
    return 0


def _predict(args) -> int:
    from .predict import Predictor

    rows = Predictor(args.run_dir).predict_files(args.paths, batch_size=args.batch_size)
    {"json": _print_json, "csv": _print_csv, "table": _print_table}[args.format](rows)
    return 1 if any("error" in r for r in rows) else 0


def _print_json(rows: list[dict]) -> None:
    print(json.dumps(rows, indent=2))


def _print_csv(rows: list[dict]) -> None:
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    writer = csv.writer(sys.stdout)
    writer.writerow(["file", "class", *[f"p_{c}" for c in classes], "threshold", "error"])
    for r in rows:
        probs = r.get("probabilities", {})
        writer.writerow([r["file"], r.get("class", ""), *[probs.get(c, "") for c in classes],
                         "" if r.get("threshold") is None else r["threshold"], r.get("error", "")])


def _print_table(rows: list[dict]) -> None:
    classes = next((list(r["probabilities"]) for r in rows if "probabilities" in r), [])
    width = max([len("file")] + [len(r["file"]) for r in rows])
    print(f"{'file':<{width}}  {'class':<12}" + "".join(f"  p({c})"[:14].rjust(14) for c in classes))
    for r in rows:
        if "error" in r:
            print(f"{r['file']:<{width}}  ERROR: {r['error']}")
            continue
        probs = "".join(f"{r['probabilities'][c]:14.4f}" for c in classes)
        print(f"{r['file']:<{width}}  {r['class']:<12}{probs}")
    threshold = next((r.get("threshold") for r in rows if r.get("threshold") is not None), None)
    if threshold is not None:
        print(f"(threshold {threshold:.3f} on p({classes[1] if len(classes) > 1 else ''}))")


def _demo(args) -> int:
    from .evaluation import evaluate
    from .metrics import summary_lines
    from .training import train

    result = train("demo", args.out, overwrite=True, **{**DEMO_SETTINGS, "epochs": args.epochs})
    metrics = evaluate(result.run_dir)
    print("\n".join(summary_lines(metrics)))
    print(f"\nReport: {Path(result.run_dir) / 'eval' / 'report.html'}")
    return 0


def _setup_logging(quiet: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("ultrasonic")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
