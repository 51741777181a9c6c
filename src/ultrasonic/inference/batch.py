"""Predict over a whole archive into one CSV: streamed, resumable, shardable.

    ultrasonic predict runs/cxr /archive --out preds.csv [--resume] [--shard 2/4] [--engine onnx]

Files are walked lazily and predicted batch by batch (Predictor.iter_files:
decoding on every core overlaps inference), so memory does not grow with the
archive. Each batch's rows are appended and flushed at once, so a killed run
loses at most the batch in flight. This CSV is the one file ultrasonic does
not write atomically: it is append-only, with a header; `--resume` cuts a
torn last line and skips the files already in it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ultrasonic.data.files import iter_paths
from ultrasonic.errors import ConfigError, RunError
from ultrasonic.inference.predictor import Predictor

TAIL_BLOCK = 1 << 16


@dataclass
class ArchiveSummary:
    written: int  # rows appended by this call
    errors: int  # of them, unreadable files
    skipped: int  # files already in the CSV (--resume)


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): the second of four shards, counted from 1."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError as exc:
        raise ConfigError(f"--shard {text!r}: write K/N, e.g. 1/4 for the first of four shards") from exc
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r}: K must be between 1 and N (the shards are 1/{n} to {n}/{n})")
    return k, n


def predict_to_csv(predictor: Predictor, paths: Iterable[str | os.PathLike], out: str | os.PathLike, *,
                   batch_size: int = 32, resume: bool = False, shard: tuple[int, int] | None = None,
                   progress: bool = True) -> ArchiveSummary:
    """Append one row per image file under `paths` to the CSV `out`; see the module docstring."""
    from tqdm import tqdm

    out = Path(out)
    header = csv_header(predictor.classes)
    done, columns = _resume(out, header, gated=predictor.ood != "off") if resume else (_start(out, header), header)
    keep = [header.index(c) for c in columns]  # a CSV begun before the "note" or gate columns keeps its columns
    files = (f for f in iter_paths(paths, shard) if not _contains(done, str(f)))
    written = errors = 0
    with open(out, "a", newline="", encoding="utf-8") as sink, \
            tqdm(unit="img", desc="predict", disable=not progress, smoothing=0.05) as bar:
        if not out.stat().st_size:
            sink.write(_csv_line(header))
        for rows in predictor.iter_files(files, batch_size):  # a bad file is a row with its error: never raises
            values = (csv_row(r, predictor.classes) for r in rows)
            sink.write("".join(_csv_line([v[k] for k in keep]) for v in values))
            sink.flush()  # a kill loses at most the batch being predicted
            written += len(rows)
            errors += sum("error" in r for r in rows)
            bar.update(len(rows))
    return ArchiveSummary(written, errors, len(done))


def _start(out: Path, header: list[str]) -> np.ndarray:
    if out.exists() and out.stat().st_size:
        raise RunError(f"{out}: already exists; pass --resume to continue it, or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"")
    return np.zeros(0, dtype=np.uint64)


def _resume(out: Path, header: list[str], gated: bool = True) -> tuple[np.ndarray, list[str]]:
    """Sorted keys of the files already in `out` (after cutting a torn last line), and its columns.

    A CSV begun by an older version lacks the "note" column or the gate's: it is continued
    in its own columns, except that the gate's verdicts are never dropped in silence (a
    refused image would be a row with no class and no reason): that needs --ood off.
    """
    if not out.exists():
        return _start(out, header), header
    _cut_torn_line(out)
    with open(out, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        found = next(reader, None)
        if found is None:
            return np.zeros(0, dtype=np.uint64), header
        if found not in _older_headers(header):
            raise RunError(f"{out}: its columns {found} are not this model's {header}; "
                           "it was written by another model: choose another --out")
        if gated and not set(OOD_COLUMNS) <= set(found):
            raise RunError(f"{out}: was begun before predictions had the gate's columns "
                           f"({', '.join(OOD_COLUMNS)}); continue it with --ood off, or choose another --out")
        # every file with a row is done, an unreadable one too (its error row): a resume never retries it
        return np.unique(np.fromiter((_key(row[0]) for row in reader if row), dtype=np.uint64)), found


def _older_headers(header: list[str]) -> list[list[str]]:
    """The header, and the headers of CSVs begun before the "note" column or the gate's columns."""
    without_ood = [c for c in header if c not in OOD_COLUMNS]
    return [header, without_ood, [c for c in without_ood if c != "note"]]


def _cut_torn_line(out: Path) -> None:
    """A kill mid-write leaves a last line without its newline: drop that part-row."""
    with open(out, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            start = max(0, position - TAIL_BLOCK)
            f.seek(start)
            block = f.read(position - start)
            if position == end and block.endswith(b"\n"):
                return
            newline = block.rfind(b"\n")
            if newline >= 0:
                f.truncate(start + newline + 1)
                return
            position = start
        f.truncate(0)


def _key(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "big")


def _contains(keys: np.ndarray, name: str) -> bool:
    """Membership by 64-bit hash: 8 bytes per finished file instead of the whole name."""
    if not len(keys):
        return False
    key = np.uint64(_key(name))
    i = np.searchsorted(keys, key)
    return bool(i < len(keys) and keys[i] == key)


OOD_COLUMNS = ["ood_score", "in_distribution", "message"]  # the gate's verdict (inference/ood.py)


def csv_header(classes: list[str], cam: bool = False) -> list[str]:
    """The columns of every prediction CSV: file, class, p_<class>..., threshold, error, note, ood_score,
    in_distribution, message (and cam). An image unlike the training images has an empty class
    (under --ood abstain), in_distribution false and the message "not like the training images ..."."""
    return ["file", "class", *[f"p_{c}" for c in classes], "threshold", "error", "note", *OOD_COLUMNS,
            *(["cam"] if cam else [])]


def csv_row(row: dict, classes: list[str], cam: bool = False) -> list:
    """One prediction row (Predictor.rows_of: a prediction or {"file", "error"}, maybe a "note") under csv_header."""
    probs = row.get("probabilities", {})
    ood = [_blank(row.get("ood_score")), _blank(row.get("in_distribution")), row.get("message", "")]
    return [row["file"], _blank(row.get("class")), *[probs.get(c, "") for c in classes],
            _blank(row.get("threshold")), row.get("error", ""), row.get("note", ""), *ood,
            *([row.get("cam", "")] if cam else [])]


def _blank(value) -> str | float:
    """None as an empty cell, booleans as true/false."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else value


def _csv_line(values: list) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue()
