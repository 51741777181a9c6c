"""How a binary run holds up when its validation images look as if another site had taken them.

No labelled chest X-ray set from another source is here (issue #12), and folds
of one source cannot show a shift between sources. This stresses what such a
shift changes: each run's own VALIDATION images (never a test split), read at
full size, are altered the way another scanner or pipeline alters them, then
decoded and scored exactly as `predict` does, at the run's stored threshold:

    as is      the images as they are
    28 px      down to 28 px (area) and back up: what PneumoniaMNIST keeps of them
    soft       Gaussian blur, sigma 1 % of the side: a softer detector or resampler
    sharp      unsharp mask (amount 1, sigma 1 %): a crisper one
    dark/light gamma 1.5 / 0.67 on 0-1 pixel values
    flat       contrast 0.7 about the image mean
    jpeg 30    re-encoded as JPEG quality 30
    framed     an 8 % black frame, as a collimator or another crop leaves

A recipe whose specificity falls in a row learned that row's cue (sharpness,
exposure, frame) along with the lungs. One JSON line per run and row.

    python benchmarks/shift_stress.py runs/cxr-default runs/cxr-new --data ../shared/data/chest_xray_224
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


def _gray(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("L")


def _gamma(image: Image.Image, g: float) -> Image.Image:
    x = np.asarray(image, dtype=np.float64) / 255.0
    return Image.fromarray(np.clip(255.0 * x ** g + 0.5, 0, 255).astype(np.uint8))


def _contrast(image: Image.Image, c: float) -> Image.Image:
    x = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(x.mean() + c * (x - x.mean()) + 0.5, 0, 255).astype(np.uint8))


def _frame(image: Image.Image, share: float) -> Image.Image:
    x = np.asarray(image).copy()
    h, w = x.shape
    dy, dx = max(1, round(share * h)), max(1, round(share * w))
    x[:dy], x[-dy:], x[:, :dx], x[:, -dx:] = 0, 0, 0, 0
    return Image.fromarray(x)


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return Image.open(buffer).convert("L")


def shifts() -> dict:
    """Row name -> how an image (PIL gray, full size) is altered."""
    sigma = lambda image: 0.01 * max(image.size)
    return {
        "as is": lambda im: im,
        "28 px": lambda im: im.resize((28, 28), Image.Resampling.BOX).resize(im.size, Image.Resampling.BILINEAR),
        "soft": lambda im: im.filter(ImageFilter.GaussianBlur(sigma(im))),
        "sharp": lambda im: im.filter(ImageFilter.UnsharpMask(radius=sigma(im), percent=100, threshold=0)),
        "dark": lambda im: _gamma(im, 1.5),
        "light": lambda im: _gamma(im, 1 / 1.5),
        "flat": lambda im: _contrast(im, 0.7),
        "jpeg 30": lambda im: _jpeg(im, 30),
        "framed": lambda im: _frame(im, 0.08),
    }


def val_files(run: Path, data: Path) -> tuple[list[Path], list[str], list[str]]:
    with open(run / "splits.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "val"]
    return [data / r["file"] for r in rows], [r["class"] for r in rows], [r["patient"] for r in rows]


def stress(run: Path, data: Path, n_boot: int) -> list[dict]:
    from ultrasonic import Predictor
    from ultrasonic.evaluation.intervals import bootstrap_ci, proportion_ci
    from ultrasonic.evaluation.metrics import binary_metrics

    predictor = Predictor(run, ood="off")
    files, classes, patients = val_files(run, data)
    y = np.array([c == predictor.positive_class for c in classes], dtype=int)
    pos = predictor.classes.index(predictor.positive_class)
    originals = [_gray(f) for f in files]
    rows = []
    for name, alter in shifts().items():
        images = []
        for image in originals:
            buffer = io.BytesIO()
            alter(image).save(buffer, format="PNG")
            images.append(predictor.read(buffer.getvalue(), name="shifted.png"))
        p = predictor.predict_proba(np.stack(images))[:, pos]
        m = binary_metrics(y, p, predictor.threshold)
        auc = bootstrap_ci(lambda t, s: {"auc": binary_metrics(t, s)["roc_auc"]}, y, p, n_boot=n_boot,
                           groups=patients, stratify=True)["auc"]
        rows.append({"run": run.name, "shift": name, "n": len(y), "threshold": round(predictor.threshold, 3),
                     "roc_auc": round(m["roc_auc"], 4), "auc_ci": [round(v, 4) for v in auc],
                     "sensitivity": round(m["sensitivity"], 4),
                     "sens_ci": [round(v, 4) for v in proportion_ci(m["tp"], m["tp"] + m["fn"])],
                     "specificity": round(m["specificity"], 4),
                     "spec_ci": [round(v, 4) for v in proportion_ci(m["tn"], m["tn"] + m["fp"])],
                     "normal_p_median": round(float(np.median(p[y == 0])), 4)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="the data folder the runs were trained on")
    parser.add_argument("--boot", type=int, default=300, help="bootstrap resamples of the AUC interval")
    parser.add_argument("--log", type=Path, default=None, help="also append the JSON lines here")
    args = parser.parse_args(argv)
    for run in args.runs:
        for row in stress(run, args.data, args.boot):
            line = json.dumps(row)
            print(line, flush=True)
            if args.log:
                with open(args.log, "a") as handle:
                    handle.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
