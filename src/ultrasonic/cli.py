"""The `ultrasonic` command: one sub-command per stage (the list is in `ultrasonic --help`).

Every error of ours, and every OSError (a folder that cannot be made, a full
disk), is printed as one line naming the file and the problem, with exit
status 2; no library traceback reaches the user unless --debug (or
ULTRASONIC_DEBUG=1) asks for the whole chain.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from ultrasonic import __version__
from ultrasonic.errors import ConfigError, UltrasonicError, error_lines
from ultrasonic.rundir import ENGINES, SPLITS, EvalDir, RunDir

# The official PneumoniaMNIST splits share a few identical images (train/val/test); the demo keeps the
# published splits, so that its figures compare with MedMNIST's, and lists the copies (with a warning).
DEMO_SETTINGS = dict(image_size=64, epochs=6, batch_size=32, allow_leakage=True, drop_duplicates=False)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _setup_logging(args.quiet)
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UltrasonicError, OSError, MemoryError) as exc:
        if args.debug or os.environ.get("ULTRASONIC_DEBUG", "0") not in ("", "0"):
            traceback.print_exception(exc)
        else:
            print("\n".join(error_lines(exc, args.command)), file=sys.stderr)
        return 2


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help; one whose help already says it in words is left as written."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _shared_options(top: bool) -> argparse.ArgumentParser:
    """-q and --debug, before or after the sub-command (after it they default to SUPPRESS: no override)."""
    p = argparse.ArgumentParser(add_help=False)
    default = False if top else argparse.SUPPRESS
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="only warnings and errors (default: off)")
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, print the whole traceback chain (default: off; or ULTRASONIC_DEBUG=1)")
    return p


def _parser() -> argparse.ArgumentParser:
    from ultrasonic.pacs import command as pacs_command, dicomize_command
    from ultrasonic.serve import audit_verify, command as serve_command

    parser = argparse.ArgumentParser(prog="ultrasonic", parents=[_shared_options(top=True)],
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ultrasonic {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help=argparse.SUPPRESS)  # the description lists them
    _add_train(sub)
    _add_evaluate(sub)
    _add_recalibrate(sub)
    _add_compare(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_explain(sub)
    _add_bench(sub)
    serve_command.add_parser(sub, _command, _add_ood_option)
    dicomize_command.add_parser(sub, _command)
    audit_verify.add_parser(sub, _command)
    pacs_command.add_parser(sub, _command, _add_ood_option)
    demo = _command(sub, "demo", "train + evaluate on the demo data, print where the report is")
    demo.add_argument("--out", default="runs/demo", help="run directory")
    demo.add_argument("--epochs", type=int, default=DEMO_SETTINGS["epochs"], help="training epochs")
    demo.set_defaults(func=_demo)
    width = max(map(len, sub.choices))
    parser.description = "train, evaluate, explain and serve medical-image classifiers\n\ncommands:\n" + \
        "\n".join(f"  {name:<{width}}  {p.description}" for name, p in sub.choices.items())
    return parser


def _command(sub, name: str, help: str) -> argparse.ArgumentParser:
    """A sub-command: `help` is its line in the command list and the start of its own --help."""
    return sub.add_parser(name, help=help, description=help.replace("%%", "%"),
                          parents=[_shared_options(top=False)], formatter_class=_HelpFormatter)


def _add_train(sub) -> None:
    import dataclasses

    from ultrasonic.config import Config, flag_fields

    p = _command(sub, "train", "train a classifier and leave a run directory")
    data = next(f for f in dataclasses.fields(Config) if f.name == "data")
    p.add_argument("data", help=data.metadata["help"])
    p.add_argument("--config", help="YAML file of settings; flags override it (default: none)")
    for f in flag_fields():
        _add_setting_flag(p, f)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--set", dest="set_", action="append", default=[], metavar="KEY=VALUE",
                   help="any setting of Config (src/ultrasonic/config.py), e.g. --set width=24 --set "
                        "horizontal_flip=true; repeatable; overrides the preset and --config, a named flag "
                        "overrides it (default: none)")
    p.set_defaults(func=_train)


def _add_setting_flag(p: argparse.ArgumentParser, f) -> None:
    """--image-size and the like, made from the Config field. The value stays text: load_config checks
    and converts it, so a bad one gets the same one-line error as in --set or a YAML file."""
    from ultrasonic.config import allowed_text, default_text, field_type

    allowed = allowed_text(f)
    text = f"{f.metadata['help']}{'; ' if allowed else ''}{allowed} (default: {default_text(f)})"
    flag = "--" + f.name.replace("_", "-")
    if field_type(f.name)[0] is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text.replace("%", "%%"))
    else:
        p.add_argument(flag, help=text.replace("%", "%%"))


def _add_evaluate(sub) -> None:
    p = _command(sub, "evaluate", "metrics with 95%% CIs, plots and report.html for a run")
    p.add_argument("run_dir")
    p.add_argument("data", nargs="?", help="other data to evaluate on (default: the run's own split)")
    p.add_argument("--split", choices=SPLITS, help="split to evaluate (default: test; with DATA a plain class "
                   "folder: all its images)")
    p.add_argument("--out", help="output folder (default RUN_DIR/eval)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the CIs")
    p.set_defaults(func=_evaluate)


def _add_recalibrate(sub) -> None:
    p = _command(sub, "recalibrate", "a run's copy, its temperature, threshold and OOD gate fitted on a site's sample")
    p.add_argument("run_dir")
    p.add_argument("data", help="the site's labelled images: a class folder or .npz")
    p.add_argument("--out", required=True, help="the new run directory (the old run stays as it was)")
    p.add_argument("--operating-point", help="e.g. sensitivity=0.95 (default: the run's own)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.set_defaults(func=_recalibrate)


def _add_compare(sub) -> None:
    p = _command(sub, "compare", "two runs on the same images: DeLong's test of the AUCs, McNemar's of decisions")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("data", help="labelled images both runs are scored on")
    p.add_argument("--split", choices=SPLITS, help="split of DATA (default: test; a plain class folder: all its "
                   "images)")
    p.add_argument("--out", help="folder for comparison.json and .html (default RUN_A/compare/A_vs_B)")
    p.set_defaults(func=_compare)


def _add_predict(sub) -> None:
    p = _command(sub, "predict", "class and probabilities for image files and folders")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", choices=["table", "csv", "json", "fhir"], default="table",
                   help="fhir: an R4 DiagnosticReport, an Observation per image (the `pacs` extra)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cam", metavar="DIR", help="also write a Grad-CAM overlay per image into DIR (default: none)")
    p.add_argument("--engine", choices=ENGINES, default="keras",
                   help="keras (model.keras) or onnx (model.onnx from `ultrasonic export`, no TensorFlow)")
    p.add_argument("--out", metavar="CSV",
                   help="stream rows into this CSV as they are done (large archives; default: print them)")
    p.add_argument("--resume", action="store_true", help="with --out: skip the files already in the CSV")
    p.add_argument("--shard", metavar="K/N",
                   help="with --out: only the K-th of N stable shards of the files (default: all files)")
    _add_ood_option(p)
    p.set_defaults(func=_predict)


def _add_ood_option(p: argparse.ArgumentParser) -> None:
    from ultrasonic.inference.ood import ACTIONS

    p.add_argument("--ood", choices=ACTIONS, default=None,
                   help="an image unlike the training images (the run's out-of-distribution gate): abstain "
                        "(default: no class, says 'not like the training images'), warn (class kept, flagged) "
                        "or off (no gate)")


def _add_export(sub) -> None:
    p = _command(sub, "export", "the run's model as ONNX or SavedModel, with its classes and threshold")
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["onnx", "savedmodel"], default="onnx")
    p.add_argument("--out", help="default RUN_DIR/model.onnx or RUN_DIR/savedmodel/; metadata goes to OUT.json")
    p.set_defaults(func=_export)


def _add_explain(sub) -> None:
    p = _command(sub, "explain", "Grad-CAM heat maps over image files and folders, as PNGs")
    p.add_argument("run_dir")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the <name>_cam.png overlays")
    p.add_argument("--layer", help="target layer (default: chosen automatically, see docs/explain.md)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.set_defaults(func=_explain)


def _train(args) -> int:
    from ultrasonic.config import flag_fields, load_config, parse_set
    from ultrasonic.training.devices import prepare_backend

    named = {f.name: getattr(args, f.name) for f in flag_fields()}
    settings = {**parse_set(args.set_), **{k: v for k, v in named.items() if v is not None}}  # flags win
    cfg = load_config(None, args.config, {**settings, "data": args.data})
    prepare_backend(cfg.devices)  # before Keras is imported: some device settings are fixed at start-up
    from ultrasonic.training.fit import train

    result = train(config=cfg, resume=args.resume, overwrite=args.overwrite)
    print("\n".join(result.summary_lines()))  # with --cv the estimate, with --external its figures
    return 0


def _evaluate(args) -> int:
    from ultrasonic.evaluation.evaluate import evaluate
    from ultrasonic.evaluation.site import site_lines
    from ultrasonic.evaluation.summary import summary_lines

    metrics = evaluate(args.run_dir, args.data, args.split, out=args.out, n_boot=args.n_boot)
    print("\n".join(summary_lines(metrics) + site_lines(metrics.get("site_check"))))
    print(f"report: {(EvalDir(args.out) if args.out else RunDir(args.run_dir).evaluation).report}")
    return 0


def _recalibrate(args) -> int:
    from ultrasonic.training.calibrate import recalibrate

    meta = recalibrate(args.run_dir, args.data, args.out, operating_point_setting=args.operating_point,
                       overwrite=args.overwrite)
    print(f"run directory: {args.out} (threshold {meta.threshold:.3f}, temperature {meta.temperature:.3f}); "
          f"check it on held-out site images: ultrasonic evaluate {args.out} SITE_TEST_DATA")
    return 0


def _compare(args) -> int:
    from ultrasonic.evaluation.comparison import compare_runs, comparison_lines

    print("\n".join(comparison_lines(compare_runs(args.run_a, args.run_b, args.data, args.split, out=args.out))))
    return 0


def _predict(args) -> int:
    from ultrasonic.inference.output import print_rows
    from ultrasonic.inference.predictor import Predictor

    if args.cam and args.engine != "keras":
        raise ConfigError("--cam needs the keras engine: heat maps come from the model's gradients")
    if args.out and args.format == "fhir":
        raise ConfigError("--format fhir prints one report; it does not go with --out CSV")
    if (args.resume or args.shard) and not args.out:
        raise ConfigError("--resume and --shard go with --out CSV")
    ood = args.ood or "abstain"
    if args.out:
        return _predict_to_csv(args, Predictor(args.run_dir, engine=args.engine, ood=ood))
    predictor = Predictor(args.run_dir, engine=args.engine, ood=ood)  # --cam: engine is keras (checked above)
    if args.cam:
        from ultrasonic.explain.gradcam import explain_files

        rows = explain_files(predictor, args.paths, args.cam)
    else:
        rows = predictor.predict_files(args.paths, batch_size=args.batch_size)
    print_rows(rows, args.format, predictor.meta)
    return _say_errors(rows)


def _say_errors(rows: list[dict]) -> int:
    """The count of unreadable files on stderr (each row already names its problem); exit status 1 if any."""
    errors = sum("error" in r for r in rows)
    if errors:
        print(f"{errors} of {len(rows)} files could not be read; their rows say why", file=sys.stderr)
    return 1 if errors else 0


def _predict_to_csv(args, predictor) -> int:
    from ultrasonic.inference.batch import parse_shard, predict_to_csv

    shard = parse_shard(args.shard) if args.shard else None
    done = predict_to_csv(predictor, args.paths, args.out, batch_size=args.batch_size, resume=args.resume,
                          shard=shard, progress=not args.quiet)
    print(f"{args.out}: {done.written} rows added ({done.errors} unreadable files), "
          f"{done.skipped} already there", file=sys.stderr)
    return 1 if done.errors else 0


def _export(args) -> int:
    from ultrasonic.inference.export import export

    out = export(args.run_dir, args.format, args.out)
    print(f"exported: {out} (metadata: {out.name}.json beside it)")
    return 0


def _explain(args) -> int:
    from ultrasonic.inference.output import print_rows

    from ultrasonic.explain.gradcam import explain_files
    from ultrasonic.inference.predictor import Predictor

    rows = explain_files(Predictor(args.run_dir), args.paths, args.out, layer=args.layer)
    print_rows(rows, args.format)
    return _say_errors(rows)


def _add_bench(sub) -> None:
    p = _command(sub, "bench", "run the speed benchmarks (train, decode, predict) of a source checkout")
    p.add_argument("--out", default="runs/bench", help="folder for the JSON results (default runs/bench)")
    p.add_argument("--only", choices=["train", "decode", "predict"], action="append",
                   help="run only this benchmark (repeatable; default: all three)")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    import subprocess

    from ultrasonic.errors import ConfigError

    folder = Path(__file__).resolve().parents[2] / "benchmarks"
    if not (folder / "bench_train.py").exists():
        raise ConfigError(f"{folder}: no benchmarks here; `ultrasonic bench` runs from a source checkout")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.only or ["train", "decode", "predict"]:
        print(f"== bench_{name}.py", flush=True)
        target = out / f"{name}.json"
        subprocess.run([sys.executable, str(folder / f"bench_{name}.py"), "--json", str(target)], check=True)
        results[name] = json.loads(target.read_text())["ratio"]
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in results.items()) + f"  (JSON in {out})")
    return 0


def _demo(args) -> int:
    from ultrasonic.evaluation.evaluate import evaluate
    from ultrasonic.evaluation.summary import summary_lines
    from ultrasonic.training.fit import train

    result = train("demo", args.out, overwrite=True, **{**DEMO_SETTINGS, "epochs": args.epochs})
    metrics = evaluate(result.run_dir)
    print("\n".join(summary_lines(metrics)))
    print(f"\nReport: {RunDir(result.run_dir).evaluation.report}")
    return 0


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (notebooks and test runners swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(quiet: bool) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.setLevel(logging.WARNING if quiet else logging.INFO)  # -q quiets the terminal, not train.log
    logger = logging.getLogger("ultrasonic")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


if __name__ == "__main__":
    sys.exit(main())
