"""Decode once: every image is decoded and resized one time into a uint8 .npy store.

The store is keyed by the content of the files (not their names), the target
size and the channel count, so a second run on the same data decodes nothing
and renamed files still hit. It is written atomically with a checksum; an
entry whose checksum fails is rebuilt, never used. Decoding uses all cores
(a thread per core: Pillow decodes without holding the GIL).

    loaded = load_images(catalog, size=224, channels=1)
    loaded.images        # (N, 224, 224, 1) uint8, memory-mapped
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from ultrasonic.atomic import atomic_path, write_json
from ultrasonic.data.contain import decode_contained
from ultrasonic.data.quality import MIN_DYNAMIC_RANGE, MIN_IMAGE_SIDE
from ultrasonic.data.demo import cache_root
from ultrasonic.data.sources import Catalog

log = logging.getLogger("ultrasonic")

QUALITY_DEFAULTS = {"min_image_side": MIN_IMAGE_SIDE, "min_dynamic_range": MIN_DYNAMIC_RANGE}
CACHE_FORMAT = 3  # bump when read_image's output changes, to invalidate old entries (2: DICOM decoded; 3: palette/LUT shape, blank images refused)
CHUNK = 32  # images per worker task


@dataclass
class LoadedImages:
    images: np.ndarray  # (N, H, W, C) uint8; rows of bad images are zero
    bad: dict[int, str]  # catalog index -> reason the image could not be read
    hashes: list[str]  # content hash of every image (file bytes, or array bytes for .npz)
    decoded: int  # images decoded by this call (0 when everything came from the cache)
    path: Path | None = None  # the cache file, when there is one
    notes: dict[int, list[str]] = field(default_factory=dict)  # catalog index -> the decoder's warnings


def load_images(
    catalog: Catalog,
    size: int,
    channels: int,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    limits: dict[str, int] | None = None,
) -> LoadedImages:
    """All images of the catalog at (size, size, channels), from the cache when possible.

    `limits`: read_image's min_image_side and min_dynamic_range (data/quality.py), part of
    the cache key, since they decide which images are refused."""
    limits = dict(limits or {})
    if catalog.arrays is not None:
        return _from_arrays(catalog.arrays, size, channels)
    hashes, unreadable = _hash_files(catalog)
    key = _key(hashes, size, channels, limits)
    store = cache_root(cache_dir) / "images"
    cached = _open_entry(store, key, len(catalog))
    if cached is not None:
        images, bad, notes = cached
        log.info("cache: %d images read from %s (0 decoded)", len(catalog), store / f"{key}.npy")
        return LoadedImages(images, bad, hashes, 0, store / f"{key}.npy", notes)
    images, bad, notes = _build_entry(store, key, catalog, size, channels, workers, unreadable, limits)
    return LoadedImages(images, bad, hashes, len(catalog), store / f"{key}.npy", notes)


def file_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _hash_files(catalog: Catalog) -> tuple[list[str], dict[int, str]]:
    hashes, unreadable = [], {}
    for i in range(len(catalog)):
        try:
            hashes.append(file_hash(catalog.path(i).read_bytes()))
        except OSError as exc:
            hashes.append(f"unreadable:{catalog.refs[i]}")
            unreadable[i] = f"cannot be read ({exc.strerror or exc})"
    return hashes, unreadable


def _key(hashes: list[str], size: int, channels: int, limits: dict[str, int] | None = None) -> str:
    # the default limits leave the key as it was: caches built before the limits were settings stay valid
    given = "".join(f"{k}={v}|" for k, v in sorted((limits or {}).items()) if v != QUALITY_DEFAULTS.get(k))
    digest = hashlib.blake2b(f"v{CACHE_FORMAT}|{size}|{channels}|{given}".encode(), digest_size=16)
    digest.update("\n".join(hashes).encode())
    return f"{digest.hexdigest()}-{size}px-{channels}ch"


def _open_entry(store: Path, key: str, n: int) -> tuple[np.ndarray, dict[int, str], dict[int, list[str]]] | None:
    """The cached array if present and intact; a damaged entry is removed."""
    array_path, meta_path = store / f"{key}.npy", store / f"{key}.json"
    if not (array_path.exists() and meta_path.exists()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        images = np.load(array_path, mmap_mode="r")
        intact = images.shape[0] == n and _checksum(images) == meta["checksum"]
    except (OSError, ValueError, KeyError) as exc:
        intact, images = False, None
        log.warning("cache: entry %s unreadable (%s)", array_path, exc)
    if not intact:
        log.warning("cache: entry %s failed its checksum; rebuilding it", array_path)
        for p in (array_path, meta_path):
            p.unlink(missing_ok=True)
        return None
    notes = {int(i): list(text) for i, text in meta.get("notes", {}).items()}  # entries before notes have none
    return images, {int(i): reason for i, reason in meta["bad"].items()}, notes


def _build_entry(store, key, catalog, size, channels, workers, unreadable, limits):
    """Decode every file into a new .npy on all cores, then publish it atomically."""
    n, start = len(catalog), time.perf_counter()
    shape = (n, size, size, channels)
    bad, notes = dict(unreadable), {}
    with atomic_path(store / f"{key}.npy") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        todo = [i for i in range(n) if i not in bad]
        jobs = [(images, todo[k:k + CHUNK], [str(catalog.path(i)) for i in todo[k:k + CHUNK]], size, channels,
                 limits)
                for k in range(0, len(todo), CHUNK)]
        for failures, noted in _run(jobs, workers, n):
            bad.update(failures)
            notes.update(noted)
        images.flush()
        write_json(store / f"{key}.json", {"format": CACHE_FORMAT, "shape": shape, "root": catalog.root,
                                          "checksum": _checksum(images), "bad": bad, "notes": notes})
    seconds = time.perf_counter() - start
    log.info("cache: decoded %d images in %.1f s (%.0f images/s) into %s",
             n, seconds, n / max(seconds, 1e-9), store / f"{key}.npy")
    return np.load(store / f"{key}.npy", mmap_mode="r"), bad, notes


def _run(jobs: list, workers: int, total: int):
    """Yield each chunk's (failures, notes), decoding on a pool of threads.

    Threads, not processes: Pillow releases the GIL while it decodes and
    resizes, and threads need no `if __name__ == "__main__"` guard in a user's
    script, nor a second copy of the array.
    """
    workers = workers or len(os.sched_getaffinity(0))
    with tqdm(total=total, unit="img", desc="decoding", disable=None, leave=False) as bar, \
            ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
        futures = {pool.submit(_decode_chunk, *job): len(job[1]) for job in jobs}
        try:
            for future in as_completed(futures):
                yield future.result()
                bar.update(futures[future])
        except BaseException:  # out of memory, interrupted: start no more chunks, let the error out now
            pool.shutdown(cancel_futures=True)
            raise


def _decode_chunk(images: np.ndarray, indices: list[int], paths: list[str], size: int, channels: int,
                  limits: dict[str, int]):
    """Decode some files straight into the shared array; return {index: reason} failures, {index: notes}.

    Any failure of a decoder on one file is that file's reason (data/contain.py): the rest go on.
    """
    failures, notes = {}, {}
    for i, path in zip(indices, paths):
        decoded = decode_contained(path, size=size, channels=channels, **limits)
        if decoded.error is not None:
            failures[i] = decoded.error.problem
        else:
            images[i] = decoded.image
        if decoded.notes:
            notes[i] = decoded.notes
    return failures, notes


def _checksum(images: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    flat = images.reshape(len(images), -1)
    for k in range(0, len(flat), 256):
        digest.update(np.ascontiguousarray(flat[k:k + 256]).data)
    return digest.hexdigest()


def _from_arrays(arrays: np.ndarray, size: int, channels: int) -> LoadedImages:
    """Images already in memory (.npz): convert channels and resize, no store needed."""
    hashes = [file_hash(a.tobytes()) for a in arrays]
    n, h, w, c = arrays.shape
    if (h, w, c) == (size, size, channels):
        return LoadedImages(np.ascontiguousarray(arrays), {}, hashes, 0)
    out = np.empty((n, size, size, channels), dtype=np.uint8)
    mode = "L" if channels == 1 else "RGB"
    for i, a in enumerate(arrays):
        img = Image.fromarray(a[..., 0] if c == 1 else a).convert(mode)
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(img).reshape(size, size, channels)
    return LoadedImages(out, {}, hashes, n)
