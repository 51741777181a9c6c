"""Which images exist, their classes and any split the layout already gives.

`open_data(spec, classes)` turns what the user typed into a Catalog:
- a folder of class folders:      DATA/<class>/**/*.png|jpg|...
- a folder of split folders:      DATA/train/<class>/..., optional val/ and test/; or only
                                  some of them (a held-out DATA/test/<class>/... alone)
- a MedMNIST-style .npz:          <split>_images and <split>_labels for train, val and/or test
- the word "demo":                PneumoniaMNIST, downloaded once (see demo.py)
Hidden files and non-image names are listed in `skipped`, never dropped silently.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ultrasonic.data.files import IMAGE_SUFFIXES, skip_reason
from ultrasonic.data.split import SPLITS
from ultrasonic.errors import DataError

SPLIT_NAMES = {**{name: name for name in SPLITS}, "valid": "val", "validation": "val"}  # folder name -> split


@dataclass
class Catalog:
    """Every image of a data set in a fixed order, with its class and given split."""

    root: str  # absolute path of the folder or .npz
    kind: str  # "folders", "splits" or "npz"
    classes: list[str]
    refs: list[str]  # file path relative to root, or "<split>/<index>" in an .npz
    labels: np.ndarray  # int class index per image
    given_split: list[str | None]  # "train" / "val" / "test" from the layout, else None
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"}
    arrays: np.ndarray | None = None  # .npz only: the images, in catalog order

    def __len__(self) -> int:
        return len(self.refs)

    def path(self, i: int) -> Path:
        return Path(self.root) / self.refs[i]


def open_data(spec: str, classes: list[str] | None = None, cache_dir: str | None = None) -> Catalog:
    """Open DATA as given on the command line (folder, .npz or "demo")."""
    if spec == "demo":
        from ultrasonic.data.demo import demo_file

        return open_npz(demo_file(cache_dir), classes or ["normal", "pneumonia"])
    path = Path(spec).expanduser().resolve()
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise DataError(f"{spec}: a data file must be a MedMNIST-style .npz; or give a folder")
        return open_npz(path, classes)
    subdirs = _subdirs(path)
    named = [p for p in subdirs if p.name.lower() in SPLIT_NAMES]
    splits = {SPLIT_NAMES[p.name.lower()]: p for p in named}
    # split folders: a train/ folder, or nothing but split folders (a test set often comes alone)
    if "train" in splits or (named and len(named) == len(subdirs)):
        return _open_split_folders(path, splits, classes)
    return _open_class_folders(path, classes)


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _open_class_folders(root: Path, classes: list[str] | None) -> Catalog:
    classes = _choose_classes(root, classes)
    refs, labels, skipped = _scan_classes(root, root, classes)
    return Catalog(str(root), "folders", classes, refs, np.asarray(labels, dtype=np.int64),
                   [None] * len(refs), skipped)


def _open_split_folders(root: Path, splits: dict[str, Path], classes: list[str] | None) -> Catalog:
    first = next(s for s in SPLITS if s in splits)  # train when there is one: the others must match it
    chosen = _choose_classes(splits[first], classes)
    refs, labels, given, skipped = [], [], [], []
    for split in SPLITS:
        if split not in splits:
            continue
        found = {p.name for p in _subdirs(splits[split])}
        expected = set(chosen) if classes else {p.name for p in _subdirs(splits[first])}
        if not expected <= found or (not classes and found != expected):
            raise DataError(
                f"{splits[split]}: its class folders {sorted(found)} differ from {first}'s "
                f"{sorted(expected)}; every split needs the same classes (or pass --classes)"
            )
        r, lab, skip = _scan_classes(root, splits[split], chosen)
        refs += r
        labels += lab
        given += [split] * len(r)
        skipped += skip
    return Catalog(str(root), "splits", chosen, refs, np.asarray(labels, dtype=np.int64), given, skipped)


def _choose_classes(folder: Path, classes: list[str] | None) -> list[str]:
    found = [p.name for p in _subdirs(folder)]
    if classes:
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"{folder}: no class folder for {missing}; found {found}")
        found = list(classes)
    if len(found) < 2:
        raise DataError(
            f"{folder}: found {len(found)} class folder(s) {found}; a classifier needs at least two "
            "(lay the data out as DATA/<class>/<image> or DATA/train/<class>/<image>)"
        )
    return found


def _scan_classes(root: Path, folder: Path, classes: list[str]):
    """Image files per class folder (recursively), sorted; others go to `skipped`."""
    refs, labels, skipped = [], [], []
    for index, name in enumerate(classes):
        class_dir = folder / name
        count = 0
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(root).as_posix()
            reason = skip_reason(path.relative_to(class_dir), path)
            if reason:
                skipped.append({"file": rel, "reason": reason})
                continue
            refs.append(rel)
            labels.append(index)
            count += 1
        if count == 0:
            raise DataError(f"{class_dir}: class folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                            "add images, remove the folder, or pass --classes to choose the classes")
    return refs, labels, skipped


def open_npz(path: str | Path, classes: list[str] | None = None) -> Catalog:
    """A MedMNIST-style archive: <split>_images (N,H,W[,C]) uint8 and <split>_labels, for any of the splits.

    A split whose arrays are empty is left out; an archive with no image at all is an error.
    """
    path = Path(path).resolve()
    try:
        archive = np.load(path, allow_pickle=False)
        keys = set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    present = [s for s in SPLITS if f"{s}_images" in keys]
    if not present:
        raise DataError(f"{path}: needs arrays <split>_images and <split>_labels for at least one of "
                        f"{', '.join(SPLITS)} (e.g. train_images, train_labels); has {sorted(keys)}")
    images, labels, given, refs = [], [], [], []
    for split in present:
        x, y = _npz_split(archive, split, path)
        if not len(x):
            continue
        images.append(x)
        labels.append(y)
        given += [split] * len(x)
        refs += [f"{split}/{i}" for i in range(len(x))]
    if not images:
        raise DataError(f"{path}: holds no images: {', '.join(f'{s}_images' for s in present)} "
                        f"{'is' if len(present) == 1 else 'are'} empty")
    labels = np.concatenate(labels)
    classes = _npz_classes(labels, classes, path)
    return Catalog(str(path), "npz", classes, refs, labels, given, [], np.concatenate(images))


def _npz_split(archive, split: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split's images (N, H, W, C) uint8 and labels (N,); N may be 0 (an empty split)."""
    if f"{split}_labels" not in archive.files:
        raise DataError(f"{path}: has {split}_images but no {split}_labels")
    try:
        x, y = np.asarray(archive[f"{split}_images"]), np.asarray(archive[f"{split}_labels"])
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # damaged member, pickled objects
        raise DataError(f"{path}: the arrays {split}_images/{split}_labels cannot be read ({exc})") from exc
    if x.ndim == 0 or y.ndim == 0:
        raise DataError(f"{path}: {split}_images and {split}_labels must be arrays of images and labels, "
                        f"got shapes {x.shape} and {y.shape}")
    if len(y) == 0:  # reshape(0, -1) is an error in numpy: an empty split is checked here
        if len(x):
            raise DataError(f"{path}: {split}_images has {len(x)} images but {split}_labels is empty")
        return x, y.astype(np.int64)
    y = y.reshape(len(y), -1)
    if y.shape[1] != 1:
        raise DataError(f"{path}: {split}_labels has {y.shape[1]} columns; only single-label data is supported")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) != len(y):
        raise DataError(f"{path}: {split}_images has shape {x.shape}; expected (N,H,W) or (N,H,W,3) "
                        f"with N = len({split}_labels) = {len(y)}")
    if x.dtype != np.uint8:
        raise DataError(f"{path}: {split}_images has dtype {x.dtype}; expected uint8")
    return x, y[:, 0].astype(np.int64)


def _npz_classes(labels: np.ndarray, classes: list[str] | None, path: Path) -> list[str]:
    n = int(labels.max()) + 1
    if labels.min() < 0:
        raise DataError(f"{path}: labels must be 0..K-1, found {labels.min()}")
    if classes:
        if len(classes) < n:
            raise DataError(f"{path}: labels go up to {n - 1} but only {len(classes)} class names were given")
        return list(classes)
    if n < 2:
        raise DataError(f"{path}: every label is 0; a classifier needs at least two classes")
    return [str(i) for i in range(n)]
