"""Which image goes to train, val and test: stratified, grouped by patient where names say who.

A given test split is always kept. A given val split is kept when it is big
enough; a missing or tiny one (the Kaggle chest_xray val has 16 images) is
merged into train and a new one carved out of it, as is a missing test split. Carving is
stratified by class and keeps every image of one patient on the same side,
so validation never sees a patient that training saw. `fold_assignments`
deals the same groups into k folds for cross-validation (`train --cv K`).

    split, notes = assign_splits(catalog.refs, catalog.labels, catalog.given_split,
                                 val_fraction=0.1, test_fraction=0.1, min_images=100,
                                 patient_pattern=r"^(person\\d+)", seed=42)
    fold = fold_assignments(refs, labels, 5, patient_pattern=r"^(person\\d+)", seed=42)   # 0..4 per image
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import numpy as np

from ultrasonic.errors import ConfigError
from ultrasonic.rundir import SPLITS  # noqa: F401  (the split names; imported from here by data/)


def patient_ids(refs: list[str], pattern: str | None) -> list[str | None]:
    """The patient id in each file name (first regex group, else the whole match), or None."""
    if not pattern:
        return [None] * len(refs)
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"patient_pattern {pattern!r} is not a valid regular expression ({exc})") from exc
    ids = []
    for ref in refs:
        match = regex.search(PurePosixPath(ref).name)
        ids.append((match.group(1) if match.groups() else match.group(0)) if match else None)
    return ids


def assign_splits(
    refs: list[str],
    labels: np.ndarray,
    given: list[str | None],
    *,
    val_fraction: float,
    test_fraction: float,
    min_images: int,
    patient_pattern: str | None,
    seed: int,
    hashes: list[str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Return the split name of every image and human-readable notes of what was done.

    `hashes` (content hash per image) keeps identical images on one side of a
    carved split, as if they were one patient: a copy in val of an image in
    train would be a leak that no patient id reveals.
    """
    split = np.array([g or "train" for g in given], dtype=object)
    notes = []
    count = int((split == "val").sum())
    if count and count < min_images:
        split[split == "val"] = "train"
        notes.append(f"val: the given split has only {count} images (< {min_images}); merged into train")
    elif count:
        notes.append(f"val: kept the given split ({count} images)")
    count = int((split == "test").sum())
    if count:  # a given test split is never moved into training, however small
        small = f"; only {count} images: wide confidence intervals" if count < min_images else ""
        notes.append(f"test: kept the given split ({count} images){small}")
    groups, how = _groups(refs, patient_pattern, notes, hashes)
    rng = np.random.default_rng(seed)
    for name, fraction in (("test", test_fraction), ("val", val_fraction)):
        if (split == name).any() or fraction <= 0:
            continue
        pool = np.flatnonzero(split == "train")
        if not len(pool):  # nothing to carve from (only val/test given): train's own check says so
            continue
        target = fraction * len(refs) / len(pool)
        chosen = _carve(labels[pool], groups[pool], min(target, 0.5), rng)
        split[pool[chosen]] = name
        notes.append(f"{name}: carved {chosen.sum()} images out of train (stratified, {how})")
    return split.astype(str), notes


def fold_assignments(refs: list[str], labels: np.ndarray, k: int, *, patient_pattern: str | None, seed: int,
                     hashes: list[str] | None = None, classes: list[str] | None = None) -> np.ndarray:
    """The fold (0 .. k-1) of every image: whole groups (a patient, identical images) per fold, and each
    class spread as evenly as the groups allow.

    The groups are those carving uses (`_groups`). Large groups are dealt first, each to the fold that
    holds the smallest share of the group's classes so far (then the fewest images): with one image per
    patient, every fold's count of every class is within one of the others'.
    """
    labels = np.asarray(labels)
    groups, _ = _groups(refs, patient_pattern, [], hashes)
    unique, inverse = np.unique(groups.astype(str), return_inverse=True)
    counts = np.zeros((len(unique), labels.max() + 1 if len(labels) else 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    _check_folds(k, counts, classes or [str(c) for c in range(counts.shape[1])])
    order = np.random.default_rng(seed).permutation(len(unique))
    order = order[np.argsort(-counts[order].sum(axis=1), kind="stable")]
    per_class = counts.sum(axis=0)
    filled = np.zeros((k, counts.shape[1]), dtype=np.int64)
    fold_of = np.zeros(len(unique), dtype=np.int64)
    for g in order:
        share = (filled * counts[g]).sum(axis=1) / np.maximum(1, (per_class * counts[g]).sum())
        fold = min(range(k), key=lambda f: (share[f], filled[f].sum(), f))
        fold_of[g] = fold
        filled[fold] += counts[g]
    return fold_of[inverse]


def _check_folds(k: int, counts: np.ndarray, classes: list[str]) -> None:
    """Every fold needs a patient of every class to validate on: k groups of each, at least."""
    if k < 2:
        raise ConfigError(f"cv={k}: cross-validation needs at least 2 folds")
    having = (counts > 0).sum(axis=0)  # per class: the groups with an image of it
    fewest = int(having.argmin())
    most = int(having[fewest])  # never more than the number of groups
    what = (f"only {len(counts)} patients (groups of images)" if most == len(counts) else
            f"images of class {classes[fewest]!r} from only {most} patients")
    if most < k:
        advice = f"use --cv {most} or fewer" if most >= 2 else "add images of more patients"
        raise ConfigError(f"cv={k}: {what} outside the test split, and every fold needs its own to "
                          f"validate on; {advice}")


def _groups(refs: list[str], pattern: str | None, notes: list[str],
            hashes: list[str] | None = None) -> tuple[np.ndarray, str]:
    """A group label per image, and how they were grouped (for the notes).

    Images of one patient are one group; so are identical images (same
    content hash), and a chain of both (patient A's image is a copy of
    patient B's) joins them all. Anything else is its own group: when only
    some names match the pattern, those are grouped and every other file is
    its own patient (the leak check counts the matching names' patients, so
    leaving them ungrouped would make the leak it then refuses).
    """
    ids = patient_ids(refs, pattern)
    found = sum(i is not None for i in ids)
    by_patient = found > 0
    patients = len(set(i for i in ids if i))
    if found == len(ids):
        notes.append(f"patients: {patients} patient ids in {found}/{len(ids)} file names")
    elif found:
        notes.append(f"patients: {patients} patient ids in {found}/{len(ids)} file names (pattern {pattern!r}): "
                     f"those are grouped by patient, each of the other {len(ids) - found} files is its own patient")
    names = [p if by_patient and p is not None else f"#{n}" for n, p in enumerate(ids)]
    keys = [[f"patient:{p}"] if by_patient and p is not None else [] for p in ids]
    copies = _duplicates(hashes) if hashes is not None else 0
    if copies:
        notes.append(f"duplicates: {copies} images are identical copies of another; carving keeps copies together")
        keys = [k + [f"hash:{h}"] for k, h in zip(keys, hashes)]
    how = " and ".join(w for w, used in (("by patient", by_patient), ("identical images together", copies)) if used)
    return _connected(keys, names), f"grouped {how}" if how else "ungrouped"


def _duplicates(hashes: list[str]) -> int:
    """How many images have an identical earlier copy."""
    return len(hashes) - len(set(hashes))


def _connected(keys: list[list[str]], names: list[str]) -> np.ndarray:
    """Images that share any key get one group, named after its first image's name (union-find).

    Without shared keys beyond the patient, every group keeps its patient's name,
    so splits are the same as when only patients were grouped.
    """
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, image_keys in enumerate(keys):
        for key in image_keys:
            if key in first:
                a, b = root(i), root(first[key])
                parent[max(a, b)] = min(a, b)  # the earliest image is the root
            else:
                first[key] = i
    return np.array([names[root(i)] for i in range(len(keys))], dtype=object)


def _carve(labels: np.ndarray, groups: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of about `fraction` of each class, taking whole groups at a time.

    A group counts towards the class most of its images have; groups are
    visited in a seeded random order until each class reaches its share.
    """
    unique, inverse = np.unique(groups.astype(str), return_inverse=True)
    counts = np.zeros((len(unique), labels.max() + 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    majority, size = counts.argmax(axis=1), counts.sum(axis=1)
    take = np.zeros(len(unique), dtype=bool)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(majority == label))
        target = fraction * size[members].sum()
        filled = np.cumsum(size[members])
        # take groups until the share is reached (the group that crosses it goes in if it helps)
        stop = int(np.searchsorted(filled, target))
        if stop < len(members) and abs(filled[stop] - target) < abs(target - (filled[stop - 1] if stop else 0)):
            stop += 1
        take[members[:stop]] = True
    return take[inverse]
