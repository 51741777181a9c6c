"""Two runs on the same images: which model is better, and is the difference more than chance?

    result = compare_runs("runs/a", "runs/b", "hospital_b/")   # writes runs/a/compare/a_vs_b/
    print("\\n".join(comparison_lines(result)))

Each run reads DATA the way `evaluate` reads new data (its own image size and
channels, evaluate.images_of), so the two models see the same files, each decoded
as it was trained. The files, their order and their labels must agree. Every
image is scored, including those a run's out-of-distribution gate would refuse:
the comparison is of the models' scores on all images; how many images each
gate would refuse is reported beside it.

Binary: DeLong's test of the ROC-AUCs of the positive-class probability, and
McNemar's test of the decisions, each run at its own stored threshold (the
operating point it would be used at). More than two classes: DeLong per class
(one-vs-rest) and McNemar of the argmax being right. Both tests are paired
(evaluation/compare.py).

The output folder holds comparison.json and comparison.html; by default it is
RUN_A/compare/<A>_vs_<B>/, beside RUN_A's eval/, which it never touches.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ultrasonic.atomic import write_text
from ultrasonic.errors import ConfigError, DataError
from ultrasonic.evaluation.compare import delong_test, mcnemar_test
from ultrasonic.evaluation.evaluate import images_of, labels_in_run_classes
from ultrasonic.evaluation.metrics import binary_metrics, format_metric
from ultrasonic.evaluation.report import CSS, html_table
from ultrasonic.evaluation.summary import write_metrics_json
from ultrasonic.inference.ood import decision
from ultrasonic.inference.predictor import Predictor
from ultrasonic.rundir import SPLITS, RunDir

log = logging.getLogger("ultrasonic")

ALPHA = 0.05  # the significance level of both tests and the verdict; the CI is the matching 95 %
JSON_NAME, HTML_NAME = "comparison.json", "comparison.html"
NOTES = [
    "DeLong's test (DeLong et al. 1988, the fast form of Sun & Xu 2014) compares two ROC-AUCs measured on "
    "the same images; the CI is that of the difference A - B, from the same variance.",
    "McNemar's exact test looks only at the images one model gets right and the other wrong; under 'no "
    "difference' those split 50:50 (binomial test).",
    "Every image is scored, including those a run's out-of-distribution gate would refuse; 'ood_refused' "
    "says how many that is for each run.",
    f"A p-value below {ALPHA} is called significant; nothing is corrected for testing several classes.",
]


def compare_runs(run_a: str | Path, run_b: str | Path, data: str | None, split: str | None = None,
                 out: str | Path | None = None) -> dict[str, Any]:
    """Compare RUN_A and RUN_B on DATA; write comparison.json and comparison.html to `out`; return the result."""
    if data is None:
        raise ConfigError("compare: no DATA given; comparing two models needs the same images for both: "
                          "pass a folder or .npz that both can read (each run's own test split may differ)")
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split {split!r} is not one of {SPLITS}")
    runs = [RunDir(run_a), RunDir(run_b)]
    predictors = [Predictor(run.path) for run in runs]
    _check_same_classes(runs, predictors)
    scored = [_scored(run, predictor, data, split) for run, predictor in zip(runs, predictors)]
    _check_same_images(runs, scored)
    result = comparison(runs, predictors, scored, data, split)
    folder = Path(out) if out else default_out(runs[0], runs[1])
    write_comparison(folder, result)
    log.info("compare: %s", folder / HTML_NAME)
    return result


def default_out(run_a: RunDir, run_b: RunDir) -> Path:
    """RUN_A/compare/<A>_vs_<B>: beside RUN_A's eval/, one folder per pair."""
    return run_a.path / "compare" / f"{_name(run_a)}_vs_{_name(run_b)}"


def _name(run: RunDir) -> str:
    return run.path.resolve().name


# --- checks ---------------------------------------------------------------------------------


def _check_same_classes(runs: list[RunDir], predictors: list[Predictor]) -> None:
    """Same class names and, for two classes, the same positive class; the order may differ."""
    a, b = predictors
    if set(a.classes) != set(b.classes) or a.positive_class != b.positive_class:
        raise DataError(f"compare: {runs[0].path} has classes {a.classes} (positive {a.positive_class!r}), "
                        f"{runs[1].path} has {b.classes} (positive {b.positive_class!r}); only models of the "
                        "same classes and positive class can be compared")


def _scored(run: RunDir, predictor: Predictor, data: str, split: str | None) -> dict[str, Any]:
    """DATA read as this run reads it, and its scores: refs, class names, probabilities, OOD refusals."""
    ds, indices, where = images_of(run, data, split, predictor.classes)
    if not len(indices):
        raise DataError(f"{where}: no images to compare")
    probs, ood_scores = predictor.predict_scored(ds.images[indices])
    y = labels_in_run_classes(ds, indices, predictor.classes)
    refused = None if ood_scores is None else int(np.sum(~decision(ood_scores, predictor.gate.threshold)))
    return {"refs": [ds.catalog.refs[i] for i in indices], "truth": [predictor.classes[i] for i in y],
            "probs": probs, "ood_refused": refused, "where": where}


def _check_same_images(runs: list[RunDir], scored: list[dict[str, Any]]) -> None:
    """Both runs read the same files, in the same order, with the same labels; else name the first difference."""
    a, b = scored
    pairs = zip(zip(a["refs"], a["truth"]), zip(b["refs"], b["truth"]))
    first = next((i for i, (x, y) in enumerate(pairs) if x != y), None)
    if first is None and len(a["refs"]) == len(b["refs"]):
        return
    first = min(len(a["refs"]), len(b["refs"])) if first is None else first
    raise DataError(f"compare: the two runs read different images from DATA: {runs[0].path} read "
                    f"{len(a['refs'])}, {runs[1].path} read {len(b['refs'])}; the first difference is image "
                    f"{first + 1}: {_image(a, first)} against {_image(b, first)}. Their settings (config.yaml: "
                    "min_image_side, min_dynamic_range, classes) read DATA differently; compare on data both "
                    "read alike")


def _image(scored: dict[str, Any], i: int) -> str:
    return f"{scored['refs'][i]} ({scored['truth'][i]})" if i < len(scored["refs"]) else "no image"


# --- the comparison -------------------------------------------------------------------------


def comparison(runs: list[RunDir], predictors: list[Predictor], scored: list[dict[str, Any]],
               data: str, split: str | None) -> dict[str, Any]:
    """The result object: runs, data, counts, the AUC and McNemar blocks, the verdict and the notes."""
    classes = predictors[0].classes
    truth = np.array([classes.index(c) for c in scored[0]["truth"]])
    probs = [scored[0]["probs"], _reordered(scored[1]["probs"], predictors[1].classes, classes)]
    result: dict[str, Any] = {
        "task": "binary" if len(classes) == 2 else "multiclass",
        "runs": {key: _run_block(run, predictor, s) for key, run, predictor, s
                 in zip("ab", runs, predictors, scored)},
        "data": str(data), "split": split, "where": scored[0]["where"], "n": len(truth), "classes": classes,
        "counts": {c: int(np.sum(truth == i)) for i, c in enumerate(classes)},
        "alpha": ALPHA, "notes": NOTES, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if len(classes) == 2:
        result["positive_class"] = predictors[0].positive_class
        result.update(_binary(truth, probs, classes.index(predictors[0].positive_class),
                              [p.threshold for p in predictors]))
    else:
        result.update(_multiclass(truth, probs, classes))
    return result


def _reordered(probs: np.ndarray, own: list[str], wanted: list[str]) -> np.ndarray:
    """B's probability columns in A's class order."""
    return probs[:, [own.index(c) for c in wanted]]


def _run_block(run: RunDir, predictor: Predictor, scored: dict[str, Any]) -> dict[str, Any]:
    two = len(predictor.classes) == 2
    return {"path": str(run.path), "name": _name(run), "model_id": predictor.model_id,
            "threshold": predictor.threshold if two else None,
            "operating_point": predictor.meta.operating_point if two else "argmax",
            "image_size": list(predictor.image_size), "channels": predictor.channels,
            "ood_refused": scored["ood_refused"]}


def _binary(truth: np.ndarray, probs: list[np.ndarray], positive: int, thresholds: list[float]) -> dict:
    """DeLong on the positive-class probability; McNemar and the rates at each run's own threshold."""
    y = (truth == positive).astype(int)
    p_a, p_b = (p[:, positive] for p in probs)
    auc = _delong(y, p_a, p_b)
    if auc is not None:
        auc["verdict"] = auc_verdict(auc)
    points = {key: _operating_point(y, p, t) for key, p, t in zip("ab", (p_a, p_b), thresholds)}
    mcnemar = mcnemar_test(y, p_a >= thresholds[0], p_b >= thresholds[1])
    mcnemar["verdict"] = mcnemar_verdict(mcnemar, "at their own thresholds")
    verdict = auc["verdict"] if auc else "AUC not defined: the images hold only one class; " + mcnemar["verdict"]
    return {"auc": auc, "operating_points": points, "mcnemar": mcnemar, "verdict": verdict}


def _operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, Any]:
    m = binary_metrics(y, p, threshold)
    return {k: m[k] for k in ("threshold", "sensitivity", "specificity", "accuracy", "tp", "tn", "fp", "fn")}


def _multiclass(truth: np.ndarray, probs: list[np.ndarray], classes: list[str]) -> dict:
    """DeLong per class (one-vs-rest), macro AUCs without a test, McNemar of the argmax being right."""
    per_class = {}
    for k, name in enumerate(classes):
        test = _delong((truth == k).astype(int), probs[0][:, k], probs[1][:, k])
        if test is not None:
            test["verdict"] = auc_verdict(test)
        per_class[name] = test
    defined = [t for t in per_class.values() if t is not None]
    macro = {key: float(np.mean([t[f"auc_{key}"] for t in defined])) if defined else None for key in "ab"}
    auc = {"per_class": per_class, "macro_auc_a": macro["a"], "macro_auc_b": macro["b"],
           "method": "DeLong per class, one-vs-rest; the macro AUCs (mean over classes) are not tested"}
    right = [(p.argmax(axis=1) == truth).astype(int) for p in probs]
    mcnemar = mcnemar_test(np.ones(len(truth), int), right[0], right[1])  # "right" is the label 1
    mcnemar["verdict"] = mcnemar_verdict(mcnemar, "taking the most probable class")
    return {"auc": auc, "mcnemar": mcnemar, "verdict": mcnemar["verdict"]}


def _delong(y: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, Any] | None:
    """DeLong's test, or None when the images hold only one of the two groups (no AUC)."""
    return delong_test(y, a, b, alpha=ALPHA) if 0 < y.sum() < len(y) else None


# --- words ----------------------------------------------------------------------------------


def format_p(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"= {p:.3f}"


def auc_verdict(test: dict[str, Any], alpha: float = ALPHA) -> str:
    """One sentence on a DeLong result: who is higher, by how much, the 95 % CI and p; or no difference."""
    d, (lo, hi), p = test["difference"], test["ci95"], test["p_value"]
    if p < alpha and d != 0:
        winner, sign = ("A", 1) if d > 0 else ("B", -1)
        lo, hi = sorted((sign * lo, sign * hi))
        return f"{winner}'s AUC is higher by {abs(d):.3f} (95 % CI {lo:.3f} to {hi:.3f}, DeLong p {format_p(p)})"
    return (f"no significant difference in AUC (A - B = {d:+.3f}, 95 % CI {lo:.3f} to {hi:.3f}, "
            f"DeLong p {format_p(p)})")


def mcnemar_verdict(test: dict[str, Any], how: str, alpha: float = ALPHA) -> str:
    """One sentence on a McNemar result: the discordant images and whether one model errs less."""
    a, b, p = test["a_only_right"], test["b_only_right"], test["p_value"]
    counts = f"{how}, A alone is right on {a} images, B alone on {b} (McNemar p {format_p(p)})"
    if p < alpha and a != b:
        return f"{counts}: {'A' if a > b else 'B'} makes significantly fewer errors"
    return f"{counts}: no significant difference in errors"


def comparison_lines(result: dict[str, Any]) -> list[str]:
    """The comparison as text lines for the terminal."""
    lines = [f"{key.upper()}: {r['path']} (model {r['model_id']}, " + _point(r) + _refused(r) + ")"
             for key, r in result["runs"].items()]
    counts = ", ".join(f"{c} {n}" for c, n in result["counts"].items())
    lines.append(f"on {result['where']}: {result['n']} images ({counts})")
    auc = result["auc"]
    if result["task"] == "binary":
        if auc:
            lines.append(f"ROC-AUC: A {format_metric(auc['auc_a'])}, B {format_metric(auc['auc_b'])}")
        for key, point in result["operating_points"].items():
            lines.append(f"{key.upper()} at threshold {point['threshold']:.3f}: sensitivity "
                         f"{format_metric(point['sensitivity'])}, specificity {format_metric(point['specificity'])}")
    else:
        lines.append(f"macro ROC-AUC: A {format_metric(auc['macro_auc_a'])}, B {format_metric(auc['macro_auc_b'])}")
        lines += [f"  {name}: " + (t["verdict"] if t else "AUC not defined (no image or only images of it)")
                  for name, t in auc["per_class"].items()]
    lines += [f"verdict: {result['verdict']}"]
    if result["task"] == "binary":
        lines.append(f"decisions: {result['mcnemar']['verdict']}")
    return lines


def _point(run: dict[str, Any]) -> str:
    if run["threshold"] is None:
        return "argmax"
    return f"threshold {run['threshold']:.3f}" + (f" by {run['operating_point']}" if run["operating_point"] else "")


def _refused(run: dict[str, Any]) -> str:
    refused = run["ood_refused"]
    return "" if refused is None else f"; its OOD gate would refuse {refused}"


# --- files ----------------------------------------------------------------------------------


def write_comparison(folder: Path, result: dict[str, Any]) -> None:
    """comparison.json (nan-safe, atomic) and comparison.html (self-contained, escaped) in `folder`."""
    folder = Path(folder)
    write_metrics_json(folder / JSON_NAME, result)
    write_text(folder / HTML_NAME, comparison_html(result))


def comparison_html(result: dict[str, Any]) -> str:
    """A one-page report: the runs, the data, the verdict, the AUC and McNemar tables, the notes."""
    a, b = result["runs"]["a"], result["runs"]["b"]
    title = f"ultrasonic comparison: {a['name']} vs {b['name']}"
    runs = [[escape(key.upper()), escape(r["path"]), escape(r["model_id"]), escape(_point(r)),
             escape("n/a" if r["ood_refused"] is None else str(r["ood_refused"]))]
            for key, r in result["runs"].items()]
    counts = ", ".join(f"{c} {n}" for c, n in result["counts"].items())
    body = [f"<h1>{escape(title)}</h1>",
            "<h2>Runs</h2>\n" + html_table(["", "run", "model id", "operating point", "OOD gate would refuse"], runs),
            f"<p>On {escape(result['where'])}: {result['n']} images ({escape(counts)}).</p>",
            f"<h2>Verdict</h2>\n<p><strong>{escape(result['verdict'])}</strong></p>",
            _auc_html(result), _mcnemar_html(result),
            "<h2>Method</h2>\n<ul>" + "".join(f"<li>{escape(n)}</li>" for n in result["notes"]) + "</ul>"]
    return ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")


def _auc_rows(name: str, test: dict[str, Any] | None) -> list[str]:
    if test is None:
        return [escape(name), "n/a", "n/a", "n/a", "n/a", "n/a"]
    lo, hi = test["ci95"]
    return [escape(name), format_metric(test["auc_a"]), format_metric(test["auc_b"]),
            f"{test['difference']:+.3f}", f'<span class="ci">{lo:.3f} &ndash; {hi:.3f}</span>',
            escape(format_p(test["p_value"]).lstrip("= "))]


def _auc_html(result: dict[str, Any]) -> str:
    auc = result["auc"]
    if result["task"] == "binary":
        rows = [_auc_rows(f"p({result['positive_class']})", auc)]
    else:
        rows = [_auc_rows(name, t) for name, t in auc["per_class"].items()]
    header = ["ROC-AUC", "A", "B", "A - B", "95% CI", "DeLong p"]
    extra = ""
    if result["task"] == "binary":
        points = [[escape(k.upper()), f"{p['threshold']:.3f}", format_metric(p["sensitivity"]),
                   format_metric(p["specificity"])] for k, p in result["operating_points"].items()]
        extra = ("\n<h2>At each run's threshold</h2>\n"
                 + html_table(["run", "threshold", "sensitivity", "specificity"], points))
    return "<h2>ROC-AUC (DeLong)</h2>\n" + html_table(header, rows) + extra


def _mcnemar_html(result: dict[str, Any]) -> str:
    m = result["mcnemar"]
    rows = [["both right", str(m["both_right"])], ["A right, B wrong", str(m["a_only_right"])],
            ["A wrong, B right", str(m["b_only_right"])], ["both wrong", str(m["both_wrong"])],
            ["McNemar p (exact)", escape(format_p(m["p_value"]).lstrip("= "))]]
    return "<h2>Decisions (McNemar)</h2>\n" + html_table(["images", "count"], rows) + f"\n<p>{escape(m['verdict'])}</p>"
