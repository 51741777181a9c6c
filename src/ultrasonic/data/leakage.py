"""Leakage: the same image, or the same patient, in two splits.

A model scored on images it was trained on (or on another image of a patient
it was trained on) looks better than it is. `find_leaks` lists every content
hash and every patient id that occurs in more than one of train, val and
test; `describe_leaks` turns the list into lines for a log or an error.

    leaks = find_leaks(refs, split, hashes, patients)
    # [{"kind": "duplicate image", "id": "3f2a...", "files": {"train": ["a.png"], "val": ["b.png"]}}]

Duplicates are exact: same file bytes (folders) or same pixel array (.npz).
Images that are only re-encoded or resized copies of each other are not found.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

from ultrasonic.data.split import SPLITS  # images in "bad" or "unused" take part in no split

KINDS = ("duplicate image", "patient")


def find_leaks(
    refs: Sequence[str],
    split: Iterable[str],
    hashes: Sequence[str],
    patients: Sequence[str | None],
) -> list[dict]:
    """Every content hash and patient id found in two or more splits: duplicates first, in catalog order."""
    split = list(split)
    return _shared(refs, split, hashes, "duplicate image") + _shared(refs, split, patients, "patient")


def _shared(refs: Sequence[str], split: list[str], keys: Sequence[str | None], kind: str) -> list[dict]:
    """Leaks of one kind: key -> {split: [files]} for keys present in more than one split."""
    members: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for ref, name, key in zip(refs, split, keys):
        if key is not None and name in SPLITS:
            members[key][name].append(ref)
    return [{"kind": kind, "id": key, "files": {s: by_split[s] for s in SPLITS if s in by_split}}
            for key, by_split in members.items() if len(by_split) > 1]


def describe_leaks(leaks: list[dict], limit: int = 5) -> list[str]:
    """One line per leak (at most `limit`, then a count of the rest)."""
    lines = []
    for leak in leaks[:limit]:
        where = "; ".join(f"{s}: {', '.join(files[:3])}{' ...' if len(files) > 3 else ''}"
                          for s, files in leak["files"].items())
        name = f"patient {leak['id']}" if leak["kind"] == "patient" else "identical image"
        lines.append(f"{name} in {' and '.join(leak['files'])} ({where})")
    if len(leaks) > limit:
        lines.append(f"... and {len(leaks) - limit} more (all listed in data_report.json under 'leaks')")
    return lines


def count_by_kind(leaks: list[dict]) -> dict[str, int]:
    """{"duplicate image": n, "patient": m}, for a one-line summary."""
    return {kind: sum(leak["kind"] == kind for leak in leaks) for kind in KINDS}
