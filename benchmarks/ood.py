"""How well the out-of-distribution gate tells the training kind of image from everything else.

A chest X-ray model (trained here on ../shared/data/chest_xray_224, or taken
with --run) scores its own test images and, as out-of-distribution sets:
BUSI breast ultrasound, the CT, MR and ultrasound DICOMs of ../shared/data/dicom,
scikit-image's sample photographs, constant, noise, gradient and text images.
A BUSI model (--busi-run, or trained here) scores its test images against chest
X-rays and the synthetic sets. For each set and each score (MSP, energy,
Mahalanobis): AUROC (in-distribution test images vs the set) and the share of
the set the gate refuses at that score's validation threshold; per model the
false-rejection rate, the share of its own test images refused.

    python benchmarks/ood.py --out runs/ood_bench               # trains both models (~10 min on 2 cores)
    python benchmarks/ood.py --run runs/cxr --busi-run runs/busi --json ood.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import shared_dir  # noqa: E402

from ultrasonic.errors import UnusableImageError  # noqa: E402
from ultrasonic.inference.ood import METHODS, auroc  # noqa: E402

DICOMS = {"DICOM CT": ["CT_small.dcm"], "DICOM MR": ["MR_small.dcm"],
          "DICOM US": ["US1_UNCR.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm"]}
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "horse", "hubble_deep_field",
          "immunohistochemistry", "page", "text", "clock", "grass", "gravel", "brick", "cat", "retina",
          "motorcycle_left", "logo")
SYNTHETIC_N = 24
OTHER_N = 200  # images of the other data set (BUSI for the X-ray model, X-rays for the BUSI model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a chest X-ray run (default: train one into OUT/cxr)")
    parser.add_argument("--busi-run", help="a BUSI run (default: train one into OUT/busi)")
    parser.add_argument("--out", default="runs/ood_bench")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2, help="chest X-ray epochs (BUSI: 3x as many)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    cxr_root, busi_root = shared_dir("chest_xray_224"), shared_dir("busi")
    cxr = Path(args.run) if args.run else _train(cxr_root, Path(args.out) / "cxr", args.image_size, args.epochs)
    busi = Path(args.busi_run) if args.busi_run else _train(busi_root, Path(args.out) / "busi", args.image_size,
                                                            3 * args.epochs)
    rng = np.random.default_rng(0)
    results = {
        "chest X-ray model": _bench(cxr, {"BUSI ultrasound": _files(busi_root, OTHER_N, rng),
                                          **{k: [shared_dir("dicom") / f for f in v] for k, v in DICOMS.items()},
                                          "photographs (scikit-image)": "photos", **_synthetic_sets()}),
        "BUSI model": _bench(busi, {"chest X-rays": _files(cxr_root, OTHER_N, rng), **_synthetic_sets()}),
    }
    print(_markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _train(data: Path, out: Path, size: int, epochs: int) -> Path:
    from ultrasonic.training.fit import train

    return train(str(data), str(out), overwrite=True, image_size=size, epochs=epochs, tensorboard=False,
                 verbose=2).run_dir


def _files(root: Path, n: int, rng: np.random.Generator) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".png", ".jpeg", ".jpg"))
    return [files[i] for i in sorted(rng.choice(len(files), min(n, len(files)), replace=False))]


def _synthetic_sets() -> dict[str, np.ndarray]:
    """8-bit grey images at 224 px, made here: what a confused user or a broken scanner might send."""
    size, n = 224, SYNTHETIC_N
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    constant = np.stack([np.full((size, size), v) for v in np.linspace(0, 255, n)])
    noise = np.stack([rng.uniform(0, 255, (size, size)) if k % 2 else rng.normal(128, 20 + 3 * k, (size, size))
                      for k in range(n)])
    gradient = np.stack([255 * [xx, yy, 1 - xx, 1 - yy, np.hypot(xx - .5, yy - .5) / .71, (xx + yy) / 2][k % 6]
                         ** (0.5 + k / n) for k in range(n)])
    return {"constant": constant, "noise": noise, "gradient": gradient, "text": np.stack(_text_images(n))}


def _text_images(n: int) -> list[np.ndarray]:
    images = []
    for k in range(n):
        dark = k % 2
        image = Image.new("L", (224, 224), 0 if dark else 255)
        draw = ImageDraw.Draw(image)
        for line in range(2 + k % 10):
            draw.text((8, 8 + 20 * line), f"Patient {k:03d} report line {line}: no acute findings.",
                      fill=255 if dark else 0)
        images.append(np.asarray(image))
    return images


def _bench(run_dir: Path, sets: dict) -> dict:
    from ultrasonic.inference.predictor import Predictor
    from ultrasonic.rundir import RunDir

    predictor = Predictor(run_dir)
    run = RunDir(run_dir)
    root = Path(run.read_meta().data["path"])
    with open(run.splits, newline="") as f:
        test = [root / row["file"] for row in csv.DictReader(f) if row["split"] == "test"]
    own = _scores(predictor, *_read(predictor, test))
    gate = predictor.gate
    out = {"run": str(run_dir), "test_images": len(test), "method": gate.method,
           "false_rejection": {m: float(np.mean(own[m] > gate.thresholds[m])) for m in METHODS}, "sets": {}}
    for name, source in sets.items():
        images, blank = _read(predictor, source)
        scores = _scores(predictor, images, blank)
        out["sets"][name] = {"n": len(scores[METHODS[0]]), "refused_as_blank": blank,
                             **{m: {"auroc": auroc(own[m], scores[m]),
                                    "refused": float(np.mean(scores[m] > gate.thresholds[m]))} for m in METHODS}}
    return out


def _read(predictor, source) -> tuple[list[np.ndarray], int]:
    """The images of a set as the run reads them (files through the decoder, arrays encoded as PNG first),
    and how many the decoder refused as blank or too small (data/quality.py): refused before the gate."""
    if isinstance(source, str):  # "photos": scikit-image's sample images
        import skimage.data

        arrays = [getattr(skimage.data, name)() for name in PHOTOS if hasattr(skimage.data, name)]
        source = [a if a.dtype == np.uint8 else (255 * (a > 0) if a.dtype == bool else a).astype(np.uint8)
                  for a in arrays]
    if isinstance(source, np.ndarray) or (source and isinstance(source[0], np.ndarray)):
        decoded = [predictor.decode(_png(np.asarray(a, dtype=np.uint8))) for a in source]
    else:
        decoded = [predictor.decode(str(p)) for p in source]
    blank = sum(isinstance(d.error, UnusableImageError) for d in decoded)
    return [d.unwrap() for d in decoded if not isinstance(d.error, UnusableImageError)], blank


def _png(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.fromarray(array[..., :3] if array.ndim == 3 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def _scores(predictor, images: list[np.ndarray], blank: int = 0) -> dict[str, np.ndarray]:
    """Each method's score per image; an image refused as blank scores infinity (it gets no class either)."""
    refused = np.full(blank, np.inf)
    if not images:
        return {m: refused for m in METHODS}
    probs, features = predictor.engine.predict_with_features(np.stack(images))
    return {m: np.concatenate([predictor.gate.scores(probs, features, m), refused]) for m in METHODS}


def _markdown(results: dict) -> str:
    lines = []
    for model, r in results.items():
        frr = ", ".join(f"{m} {100 * r['false_rejection'][m]:.1f} %" for m in METHODS)
        lines += [f"**{model}** ({r['run']}, {r['test_images']} test images; false rejection of its own test "
                  f"images: {frr})", "",
                  "| out-of-distribution set | n | blank | " + " | ".join(f"AUROC {m}" for m in METHODS) +
                  " | " + " | ".join(f"refused {m}" for m in METHODS) + " |",
                  "|---|---:|---:|" + "---:|" * (2 * len(METHODS))]
        for name, s in r["sets"].items():
            lines.append(f"| {name} | {s['n']} | {s['refused_as_blank']} | " + " | ".join(f"{s[m]['auroc']:.3f}" for m in METHODS) + " | " +
                         " | ".join(f"{100 * s[m]['refused']:.0f} %" for m in METHODS) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
