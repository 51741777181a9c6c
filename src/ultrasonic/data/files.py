"""Which files are images: the one rule that the folder scan, predict, archive prediction and explain share.

    is_image_name("scan.DCM")           # True: a suffix ultrasonic reads
    skip_reason(Path("notes.txt"))       # "not an image file name (.txt)"
    list(iter_paths(["scans/"]))         # image files under scans/, sorted, depth first

A visible file without a suffix is an image when its first bytes say DICOM
(PACS exports often have no suffix). Hidden files are never images. The
suffixes come from data/formats.py, the list the reader uses too.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Iterator

from ultrasonic.data.dicom import is_dicom_file
from ultrasonic.data.formats import IMAGE_SUFFIXES
from ultrasonic.errors import DataError


def is_image_name(path: str | os.PathLike) -> bool:
    """True for a visible file whose suffix is one ultrasonic reads."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES


def skip_reason(rel: Path, path: Path | None = None) -> str | None:
    """Why the file at `path` (`rel` below the folder searched) is not an image (None: it is one)."""
    if any(part.startswith(".") for part in rel.parts):
        return "hidden file"
    if rel.suffix and rel.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file name ({rel.suffix})"
    if not rel.suffix and not is_dicom_file(path if path is not None else rel):
        return "no file name suffix, and its first bytes are not DICOM"
    return None


def expand_paths(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders searched recursively for image files, in sorted order."""
    return list(iter_paths(paths))


def iter_paths(paths: Iterable[str | os.PathLike], shard: tuple[int, int] | None = None) -> Iterator[Path]:
    """Like expand_paths, lazily: one folder's listing in memory at a time, whatever the archive's size.

    `shard=(k, n)` keeps the files whose path relative to the folder given hashes to k of 1..n: a
    split that stays the same when files are added or removed, so n machines can share an archive.
    """
    roots = [Path(p) for p in paths]
    for p in roots:
        if not p.exists():
            raise DataError(f"{p}: no such file or folder")
    for root in roots:
        files = _walk(root, root) if root.is_dir() else iter([root])
        for f in files:
            key = f.relative_to(root).as_posix() if root.is_dir() else f.as_posix()
            if shard is None or in_shard(key, shard):
                yield f


def in_shard(key: str, shard: tuple[int, int]) -> bool:
    """True when `key` belongs to shard k of n (k counted from 1); a hash, not a position."""
    k, n = shard
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") % n == k - 1


def _walk(root: Path, folder: Path) -> Iterator[Path]:
    """Image files under `folder`, depth first, sorted by name within each folder."""
    with os.scandir(folder) as listing:
        entries = sorted(listing, key=lambda e: e.name)
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(root, path)
        elif entry.is_file() and skip_reason(path.relative_to(root), path) is None:
            yield path
