"""Decoding speed: building the cache from full-resolution JPEGs vs a plain Pillow loop.

- plain:      for f in files: Image.open(f).convert("RGB").resize((224, 224))   (one core)
- ultrasonic: ultrasonic.data.cache.load_images into a fresh cache (JPEG draft mode at
              reduced scale, a thread per core), same files, same output size.

    python benchmarks/bench_decode.py [--repeat 5] [--size 224] [--channels 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from PIL import Image

from common import report, shared_dir


def corpus(repeat: int) -> Path:
    """The full-resolution sample, each file linked `repeat` times under other names (distinct entries)."""
    src = shared_dir("chest_xray_full") / "train"
    root = Path(tempfile.mkdtemp(prefix="bench_decode_"))
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir()
        for k in range(repeat):
            for f in sorted((src / cls).glob("*.jpeg")):
                os.symlink(f, root / cls / f"r{k}_{f.name}")
    return root


def plain_loop(files: list[Path], size: int, mode: str) -> float:
    start = time.perf_counter()
    for f in files:
        Image.open(f).convert(mode).resize((size, size))
    return time.perf_counter() - start


def ultrasonic_cache(root: Path, size: int, channels: int) -> float:
    from ultrasonic.data import load_images, open_data

    catalog = open_data(str(root))
    start = time.perf_counter()
    loaded = load_images(catalog, size, channels, cache_dir=root / ".cache")
    seconds = time.perf_counter() - start
    assert loaded.decoded == len(catalog) and not loaded.bad
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="times each of the 40 files is decoded")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--channels", type=int, default=3, choices=[1, 3])
    parser.add_argument("--json")
    args = parser.parse_args()
    root = corpus(args.repeat)
    try:
        files = sorted(root.rglob("*.jpeg"))
        plain = plain_loop(files, args.size, "L" if args.channels == 1 else "RGB")
        ours = ultrasonic_cache(root, args.size, args.channels)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = len(files)
    rows = [("plain Pillow loop", f"{n / plain:.1f}", f"{plain:.2f}", "1.00"),
            ("ultrasonic cache build", f"{n / ours:.1f}", f"{ours:.2f}", f"{plain / ours:.2f}")]
    result = {"plain_img_s": n / plain, "ultrasonic_img_s": n / ours, "ratio": plain / ours, "images": n,
              "size": args.size, "channels": args.channels}
    report(rows, ("decoder", "images/s", "seconds", "x plain"), result, args.json)


if __name__ == "__main__":
    main()
