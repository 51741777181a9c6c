"""A run directory without training, for tests of what reads a run (export, engines, batch prediction).

The network is the real one of a preset, built and saved untrained (seconds,
not a training run); meta.json carries what `train` writes that readers use.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ultrasonic.data.synthetic import lesion_images
from shared_data import SHARED_DATA

REAL_DATA = SHARED_DATA


def make_run(path: Path, preset: str = "default", size: int = 32, channels: int = 1,
             classes: tuple[str, ...] = ("normal", "pneumonia"), threshold: float = 0.5, seed: int = 0,
             model: str | None = None) -> Path:
    """A loadable run at `path`: model.keras of `preset`'s network (or `model`'s), untrained, and its meta.json."""
    import keras

    from ultrasonic.config import load_config
    from ultrasonic.models import build_model

    keras.utils.set_random_seed(seed)
    cfg = load_config(preset, overrides=dict(image_size=size, channels=channels, width=16, seed=seed, model=model))
    path.mkdir(parents=True, exist_ok=True)
    build_model(cfg, len(classes)).save(path / "model.keras")
    meta = {"format": 1, "model_id": hashlib.sha256((path / "model.keras").read_bytes()).hexdigest()[:16],
            "task": "binary" if len(classes) == 2 else "multiclass", "classes": list(classes),
            "positive_class": classes[1] if len(classes) == 2 else None, "image_size": [size, size],
            "channels": channels, "threshold": threshold, "preset": preset}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def gated_run(path: Path, preset: str = "default", model: str | None = None, channels: int = 1,
              size: int = 32) -> Path:
    """make_run, then the OOD gate fitted as `train` fits it: on 120 lesion images, threshold on 40 more
    (lesion_images are what the gate takes as like the training images; constant, noise, gradients are not)."""
    from ultrasonic.inference.engines import load_model
    from ultrasonic.rundir import RunDir
    from ultrasonic.training.calibrate import fit_ood_gate

    run_dir = make_run(path, preset, size=size, channels=channels, model=model)
    images, labels, _ = lesion_images(160, size=size, channels=channels, seed=0)
    run = RunDir(run_dir)
    block = fit_ood_gate(load_model(run.model), images, labels, np.arange(120), np.arange(120, 160), 2, run)
    meta = json.loads(run.meta_path.read_text())
    run.meta_path.write_text(json.dumps({**meta, "ood": block}))
    return run_dir


def write_class_folders(root: Path, n: int, seed: int = 0, classes: tuple[str, ...] = ("normal", "pneumonia"),
                        name: str = "img_{i:03d}.png", size: int = 48, transform=None, first_patient: int = 0) -> Path:
    """n synthetic lesion PNGs in root/<class>/ (labels 0..len(classes)-1 of lesion_images), named by the
    format `name` with i (the image) and patient (first_patient + i // 2: two images per patient); `transform` maps
    each uint8 image (H, W) before saving (another site's intensity curve, say)."""
    images, labels, _ = lesion_images(n, size=size, n_classes=len(set(classes)), seed=seed)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / classes[y]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = x[..., 0] if transform is None else transform(x[..., 0])
        Image.fromarray(pixels).save(folder / name.format(i=i, patient=first_patient + i // 2))
    return root


def write_images(folder: Path, n: int, size: int = 40, seed: int = 0, prefix: str = "img") -> list[Path]:
    """n synthetic grey PNGs in `folder`, named prefix000.png, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _, _ = lesion_images(n, size=size, seed=seed)
    paths = []
    for i, x in enumerate(images):
        paths.append(folder / f"{prefix}{i:03d}.png")
        Image.fromarray(x[..., 0]).save(paths[-1])
    return paths


def real_chest_xrays(n: int) -> list[Path]:
    """The first n files of each class of the shared chest X-ray JPEGs ([] when absent)."""
    root = REAL_DATA / "chest_xray_224" / "train"
    return [f for cls in ("NORMAL", "PNEUMONIA") for f in sorted((root / cls).glob("*.jpeg"))[:n]] \
        if root.is_dir() else []


def random_uint8(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, channels), dtype=np.uint8)
