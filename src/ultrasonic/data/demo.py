"""The demo data set: PneumoniaMNIST, downloaded once and checked, else a synthetic stand-in.

The official file is fetched into the user cache folder with its md5 checked.
Without a network the demo falls back, loudly, to a synthetic set made here,
so `make demo` always completes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from pathlib import Path

import numpy as np

from ultrasonic.atomic import atomic_path
from ultrasonic.data.synthetic import lesion_images
from ultrasonic.errors import DownloadError

log = logging.getLogger("ultrasonic")

DEMO_URL = "https://zenodo.org/records/10519652/files/pneumoniamnist.npz?download=1"
DEMO_MD5 = "28209eda62fecd6e6a2d98b1501bb15f"
DOWNLOAD_TIMEOUT_S = 15


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The user cache folder: cache_dir, $ULTRASONIC_CACHE, $XDG_CACHE_HOME/ultrasonic or ~/.cache/ultrasonic."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("ULTRASONIC_CACHE"):
        return Path(os.environ["ULTRASONIC_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ultrasonic"


def demo_file(cache_dir: str | os.PathLike | None = None) -> Path:
    """Path of the demo .npz: the official file if it can be had, else the synthetic one."""
    root = cache_root(cache_dir)
    url = os.environ.get("ULTRASONIC_DEMO_URL", DEMO_URL)
    md5 = os.environ.get("ULTRASONIC_DEMO_MD5", DEMO_MD5)
    target = root / "pneumoniamnist.npz"
    try:
        return download(url, target, md5)
    except DownloadError as exc:
        log.warning("demo: PneumoniaMNIST is not available (%s)", exc)
        log.warning("demo: using a SYNTHETIC stand-in made by ultrasonic (bright lesion = 'pneumonia'); "
                    "figures from it say nothing about real X-rays")
        return synthetic_file(root)


def download(url: str, target: Path, md5: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Fetch url to target once (atomically), checking its md5; reuse a good copy."""
    if target.exists() and _md5(target) == md5:
        return target
    log.info("demo: downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            got = _md5(tmp)
            if got != md5:
                raise DownloadError(f"{url}: md5 {got} does not match the expected {md5}")
    except OSError as exc:
        raise DownloadError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    return target


def synthetic_file(root: Path, n: int = 1200, size: int = 64) -> Path:
    """Write (once) a synthetic two-class .npz with train/val/test splits."""
    target = root / f"synthetic_lesions_v4_{n}_{size}.npz"
    if target.exists():
        return target
    images, labels, _ = lesion_images(n, size=size, n_classes=2, seed=0)
    cut1, cut2 = int(n * 0.7), int(n * 0.85)
    parts = {"train": slice(0, cut1), "val": slice(cut1, cut2), "test": slice(cut2, n)}
    arrays = {}
    for split, sl in parts.items():
        arrays[f"{split}_images"] = images[sl, ..., 0]
        arrays[f"{split}_labels"] = labels[sl, None].astype(np.uint8)
    with atomic_path(target) as tmp:
        np.savez_compressed(tmp, **arrays)
    return target


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
