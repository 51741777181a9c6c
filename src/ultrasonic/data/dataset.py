"""A data set ready for a model: catalog + splits + decoded images + the report of what happened.

`load_dataset(cfg)` is what train and evaluate both call, so they see the
same images, decoded the same way, with the same split.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from ultrasonic.atomic import write_json
from ultrasonic.config import Config
from ultrasonic.data.cache import LoadedImages, load_images
from ultrasonic.data.leakage import count_by_kind, describe_leaks, find_leaks
from ultrasonic.data.sources import Catalog, open_data
from ultrasonic.data.split import SPLITS, assign_splits, patient_ids
from ultrasonic.errors import DataError

log = logging.getLogger("ultrasonic")


@dataclass
class Dataset:
    catalog: Catalog
    images: np.ndarray  # (N, H, W, C) uint8
    split: np.ndarray  # "train" / "val" / "test", or "bad" for unreadable images
    patients: list[str | None]
    loaded: LoadedImages
    notes: list[str]
    leaks: list[dict] = field(default_factory=list)  # see leakage.find_leaks

    @property
    def classes(self) -> list[str]:
        return self.catalog.classes

    @property
    def labels(self) -> np.ndarray:
        return self.catalog.labels

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def fingerprint(self) -> str:
        """Changes when any image's content, class or split changes."""
        digest = hashlib.blake2b(digest_size=16)
        for h, label, s in zip(self.loaded.hashes, self.labels, self.split):
            digest.update(f"{h}|{label}|{s}\n".encode())
        return digest.hexdigest()

    def report(self) -> dict:
        """data_report.json: counts per split and class, skipped and unreadable files, leaks, notes.

        "unreadable": every file the decoders failed on, with its reason (and the decoder's "note", if it
        warned); "file_notes": readable files the decoder warned about; "dropped": train copies of val/test
        images taken out of train (drop_duplicates).
        """
        counts = {s: {c: int(((self.split == s) & (self.labels == k)).sum()) for k, c in enumerate(self.classes)}
                  for s in SPLITS}
        notes = {i: "; ".join(n) for i, n in self.loaded.notes.items()}
        unreadable = [{"file": self.catalog.refs[i], "reason": r, **({"note": notes[i]} if i in notes else {})}
                      for i, r in sorted(self.loaded.bad.items())]
        file_notes = [{"file": self.catalog.refs[i], "note": n} for i, n in sorted(notes.items())
                      if i not in self.loaded.bad]
        return {"data": self.catalog.root, "kind": self.catalog.kind, "classes": self.classes,
                "counts": counts, "images": len(self.catalog), "skipped": self.catalog.skipped,
                "unreadable": unreadable, "file_notes": file_notes, "leaks": self.leaks, "notes": self.notes,
                "dropped": [self.catalog.refs[i] for i in self.indices("dropped")],
                "cache": {"path": str(self.loaded.path or ""), "decoded": self.loaded.decoded}}


def load_dataset(cfg: Config, split_of: dict[str, str] | None = None,
                 report_to: str | os.PathLike | None = None) -> Dataset:
    """Open cfg.data, decode via the cache, assign splits (or take `split_of`: file -> split).

    With `report_to`, data_report.json is written there before unreadable
    images can stop the run, so the full list is always at hand. Decoding
    never stops it: a file any decoder fails on is one "unreadable" entry.
    """
    catalog = open_data(cfg.data, cfg.classes, cfg.cache_dir)
    log.info("data: %s (%s): %d images, classes %s", catalog.root, catalog.kind, len(catalog), catalog.classes)
    for item in catalog.skipped[:5]:
        log.warning("data: skipped %s (%s)", item["file"], item["reason"])
    if len(catalog.skipped) > 5:
        log.warning("data: ... and %d more skipped files (see data_report.json)", len(catalog.skipped) - 5)
    patients = patient_ids(catalog.refs, cfg.patient_pattern)
    loaded = load_images(catalog, cfg.image_size, cfg.channels, cfg.cache_dir, cfg.workers, quality_limits(cfg))
    if split_of is None:
        split, notes = assign_splits(catalog.refs, catalog.labels, catalog.given_split,
                                     val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction,
                                     min_images=cfg.min_split_images, patient_pattern=cfg.patient_pattern,
                                     seed=cfg.seed, hashes=loaded.hashes)
    else:
        split = np.array([split_of.get(ref, "unused") for ref in catalog.refs], dtype=object).astype(str)
        notes = ["splits: given, not carved (a run's splits.csv, or a fold of cross-validation)"]
    for note in notes:
        log.info("split: %s", note)
    split = split.astype(object)
    split[list(loaded.bad)] = "bad"
    split = split.astype(str)
    leaks = find_leaks(catalog.refs, split, loaded.hashes, patients)
    if cfg.drop_duplicates and split_of is None:
        split = split.astype(object)
        _drop_train_copies(catalog.refs, split, leaks, notes)
        split = split.astype(str)
        leaks = find_leaks(catalog.refs, split, loaded.hashes, patients)
    ds = Dataset(catalog, loaded.images, split, patients, loaded, notes, leaks)
    if report_to is not None:
        write_json(report_to, ds.report())
    _log_file_notes(catalog, loaded)
    _check_bad(catalog, loaded, cfg)
    return ds


def quality_limits(cfg: Config) -> dict[str, int]:
    """The settings that decide which decoded images are refused as blank or too small (data/quality.py)."""
    return {"min_image_side": cfg.min_image_side, "min_dynamic_range": cfg.min_dynamic_range}


def _drop_train_copies(refs: list[str], split: np.ndarray, leaks: list[dict], notes: list[str]) -> None:
    """Images identical to a val or test image leave train (split 'dropped'); noted and listed in the report.

    On by default (drop_duplicates): a train copy of an evaluation image can only inflate the scores, and
    taking it out can never leak; the val/test copy stays, so the evaluation splits are what the data gave.
    """
    index = {ref: i for i, ref in enumerate(refs)}
    dropped = [ref for leak in leaks if leak["kind"] == "duplicate image" and "train" in leak["files"]
               for ref in leak["files"]["train"]]
    split[[index[ref] for ref in dropped]] = "dropped"
    if dropped:
        note = (f"drop_duplicates: {len(dropped)} train image(s) identical to a val/test image left train "
                "(listed under 'dropped'; --no-drop-duplicates keeps them): "
                + ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
        notes.append(note)
        log.warning("data: %s", note)


def check_leakage(ds: Dataset, cfg: Config) -> None:
    """Stop training on leaks between splits, unless cfg.allow_leakage says go on (with a warning)."""
    if not ds.leaks:
        return
    counts = count_by_kind(ds.leaks)
    summary = (f"{counts['duplicate image']} image(s) (identical content) and {counts['patient']} patient(s) "
               "occur in more than one split")
    lines = describe_leaks(ds.leaks)
    if not cfg.allow_leakage:
        drop = ("" if cfg.drop_duplicates or not counts["duplicate image"] else
                "leave out --no-drop-duplicates to take the train copies of val/test images out of train, or ")
        raise DataError(f"{ds.catalog.root}: {summary}, so validation and test scores would be too optimistic:\n  "
                        + "\n  ".join(lines) + "\nremove the copies or move them into one split "
                        f"(or {drop}pass --allow-leakage to train anyway)")
    log.warning("data: leakage allowed: %s; listed in data_report.json", summary)
    for line in lines:
        log.warning("data: leak: %s", line)


def _log_file_notes(catalog: Catalog, loaded: LoadedImages) -> None:
    """What the decoders warned about readable files: the first five, then the count (all in the report)."""
    noted = sorted(i for i in loaded.notes if i not in loaded.bad)
    for i in noted[:5]:
        log.warning("data: note on %s: %s", catalog.refs[i], "; ".join(loaded.notes[i]))
    if len(noted) > 5:
        log.warning("data: ... and %d more files with notes (see data_report.json, 'file_notes')", len(noted) - 5)


def _check_bad(catalog: Catalog, loaded: LoadedImages, cfg: Config) -> None:
    """Unreadable images: list them; stop when told to, or when there are too many."""
    if not loaded.bad:
        return
    first = [f"{catalog.refs[i]}: {r}" for i, r in sorted(loaded.bad.items())[:5]]
    for line in first:
        log.warning("data: unreadable image %s", line)
    fraction = len(loaded.bad) / len(catalog)
    log.warning("data: %d of %d images unreadable (%.1f %%)%s; listed in data_report.json", len(loaded.bad),
                len(catalog), 100 * fraction, ", skipped" if cfg.on_bad_image == "skip" else "")
    if cfg.on_bad_image == "fail":
        index, reason = min(loaded.bad.items())
        more = f" (and {len(loaded.bad) - 1} more, listed in data_report.json)" if len(loaded.bad) > 1 else ""
        raise DataError(f"{catalog.path(index)}: {reason}{more}; stopped because on_bad_image=fail: "
                        "fix or remove the file, or pass --on-bad-image skip to train without it")
    if fraction > cfg.max_bad_fraction:
        raise DataError(f"{catalog.root}: {len(loaded.bad)} of {len(catalog)} images are unreadable "
                        f"({100 * fraction:.1f} % > max_bad_fraction {100 * cfg.max_bad_fraction:g} %), "
                        f"first: {first[0]}; all are listed in data_report.json; fix the files "
                        "or raise --max-bad-fraction")
