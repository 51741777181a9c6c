"""`ultrasonic audit verify DB [--head HASH]`: is the audit log the service wrote still the one it wrote?

    report = verify("runs/cxr/audit.sqlite", head=None)
    report.ok, report.problem, report.rows, report.head   # problem: Problem(row, what) or None

It walks the hash chain of serve/audit.py in id order and stops at the first row that is wrong:
  - a row's fields no longer give its hash: that row was edited (or its hash was);
  - ids jump (4 after 2): row 3 was deleted;
  - a row's prev_hash is not the hash of the row before it: a row was inserted or rewritten
    with its hash recomputed, or rows were reordered;
  - a row without a hash after chained rows: added behind the service's back (or its hash erased);
  - fewer rows at the end than SQLite's AUTOINCREMENT counter has handed out: the newest rows were
    deleted.
What a chain without a secret cannot show on its own: someone who deletes the newest rows and
resets that counter, or rewrites every hash from an edited row to the end. The head hash (the
newest row's hash, printed on every OK) closes that: note it, and `--head HASH` later checks that
the row it names is still in the chain with that hash. Rows from before the chain (a log made by
an older version) have no hash; they are counted and said to be unchecked, never passed as verified.

Exit status: 0 intact, 1 tampered, 2 not a readable audit log (one line, no traceback).
Importing this module imports neither FastAPI nor Keras.
"""

from __future__ import annotations

import argparse
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from ultrasonic.errors import ConfigError
from ultrasonic.serve.audit import CONTENT, GENESIS, row_hash

TAMPERED = 1


@dataclass(frozen=True)
class Problem:
    row: int   # the id of the first row found wrong (for a deleted row: the id it had)
    what: str  # one sentence: what is wrong there


@dataclass
class Report:
    rows: int = 0                 # rows read
    unchained: int = 0            # rows from before the chain (no hash), not checkable
    head: str | None = None       # the hash of the newest chained row
    head_id: int | None = None
    problem: Problem | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def add_parser(sub, command_factory) -> argparse.ArgumentParser:
    """`ultrasonic audit verify DB`; `command_factory(sub, name, help)` makes `audit` (the CLI's shared options)."""
    p = command_factory(sub, "audit", "check the service's audit log: `audit verify DB` (exit 1: tampered)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="walk the hash chain; name the first edited, inserted or deleted row",
                           description="Walk the audit log's hash chain in id order; print OK with the row "
                           "count and the head hash, or the first edited, inserted or deleted row. Exit status 0 "
                           "intact, 1 tampered, 2 not a readable audit log.")
    v.add_argument("db", help="the SQLite audit log (RUN_DIR/audit.sqlite, or the serve --db file)")
    v.add_argument("--head", metavar="HASH", help="a head hash noted earlier: also check that its row is still in the chain, "
                                  "unchanged (catches deleted newest rows)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    report = verify(args.db, args.head)
    print(describe(args.db, report))
    return 0 if report.ok else TAMPERED


def describe(db: str | Path, report: Report) -> str:
    """What `audit verify` prints: one line for the verdict, then the head hash to note."""
    older = (f"; {report.unchained} older row(s) from before the chain have no hash and are not checked"
             if report.unchained else "")
    if not report.ok:
        return f"TAMPERED: {db}: row {report.problem.row}: {report.problem.what}{older}"
    if report.head is None:
        return f"OK: {db}: {report.rows} rows, none chained yet{older}"
    return (f"OK: {db}: {report.rows} rows, hash chain intact{older}\n"
            f"head {report.head} (row {report.head_id}): note it; `ultrasonic audit verify DB --head HASH` "
            "later also catches deleted newest rows")


def verify(db: str | Path, head: str | None = None) -> Report:
    """Walk the chain of the log at `db`; ConfigError when it is not a readable audit log."""
    with _open_read_only(Path(db)) as conn:
        try:
            report = _walk(conn, head)
        except sqlite3.DatabaseError as exc:  # not SQLite at all, or not our table
            raise ConfigError(f"{db}: not a readable ultrasonic audit log ({exc}); give the file `ultrasonic "
                              "serve` wrote (RUN_DIR/audit.sqlite or its --db)") from exc
    return report


def _walk(conn: sqlite3.Connection, head: str | None) -> Report:
    report = Report()
    expected, last_id, head_seen = None, None, head is None  # expected: the prev_hash the next row must carry
    before = _chain_start(conn)
    for row in conn.execute(f"SELECT {', '.join(CONTENT)}, prev_hash, hash FROM predictions ORDER BY id"):
        report.rows += 1
        row_id, content, prev, stored = row[0], row[:len(CONTENT)], row[-2], row[-1]
        problem = _check(row_id, content, prev, stored, expected, last_id, before)
        if problem:
            report.problem = problem
            return report
        last_id = row_id
        if stored is None:
            report.unchained += 1
            continue
        expected = report.head = stored
        report.head_id = row_id
        head_seen = head_seen or stored == head.lower()
    report.problem = _truncated(conn, last_id) or (None if head_seen else _head_missing(head, report))
    return report


def _chain_start(conn: sqlite3.Connection) -> int | None:
    """The last row written before the chain began (0: none), or None for a log that does not say."""
    try:
        found = conn.execute("SELECT MIN(before_id) FROM chain_start").fetchone()
    except sqlite3.OperationalError:
        return None
    return found[0]


def _check(row_id, content, prev, stored, expected, last_id, before) -> Problem | None:
    """What is wrong with one row, given the hash the row before it had (None: no chained row yet) and the
    last row from before the chain (None: unknown; then rows without a hash may only come first)."""
    if expected is not None and last_id is not None and row_id != last_id + 1:
        gone = f"row {last_id + 1}" if row_id == last_id + 2 else f"rows {last_id + 1} to {row_id - 1}"
        return Problem(last_id + 1, f"deleted: ids jump from {last_id} to {row_id} ({gone} missing)")
    if stored is None:
        if (row_id <= before) if before is not None else expected is None:
            return None  # from before the chain: not checkable, counted
        return Problem(row_id, "has no hash although the chain began before it: it was added behind the "
                               "service's back, or its hash was erased")
    if prev != (expected or GENESIS):
        before = f"row {last_id}'s hash" if expected else "the chain's start (no chained row before it)"
        return Problem(row_id, f"its prev_hash is not {before}: a row was inserted before it or rewritten with "
                               "its hash recomputed, rows were reordered, or the first rows were deleted")
    if row_hash(content, prev) != stored:
        return Problem(row_id, "content changed: its fields no longer give its hash (a field or the hash was "
                               "edited)")
    return None


def _truncated(conn: sqlite3.Connection, last_id: int | None) -> Problem | None:
    """The newest rows deleted, as far as SQLite's AUTOINCREMENT counter (which DELETE leaves) shows."""
    try:
        found = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'predictions'").fetchone()
    except sqlite3.OperationalError:  # no AUTOINCREMENT table has ever had a row: nothing handed out
        return None
    given = int(found[0]) if found else 0
    if given > (last_id or 0):
        first = (last_id or 0) + 1
        gone = f"row {first}" if given == first else f"rows {first} to {given}"
        return Problem(first, f"deleted: ids up to {given} were handed out but the log ends at "
                              f"{last_id or 'no row'} ({gone} missing)")
    return None


def _head_missing(head: str, report: Report) -> Problem:
    at = report.head_id or 0
    return Problem(at, f"the head hash {head} is not in the chain: the rows up to it were deleted or rewritten "
                       f"(the chain now ends at row {at} with {report.head})")


class _open_read_only:
    """The log opened read-only (verify never changes it); ConfigError for a missing or non-SQLite file."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        if not self.path.is_file():
            what = "is a folder" if self.path.is_dir() else "does not exist"
            raise ConfigError(f"{self.path}: {what}; give the audit log `ultrasonic serve` wrote "
                              "(RUN_DIR/audit.sqlite or its --db)")
        try:
            self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            self.conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: not an SQLite database ({exc}); give the audit log `ultrasonic "
                              "serve` wrote (RUN_DIR/audit.sqlite or its --db)") from exc
        return self.conn

    def __exit__(self, *exc) -> None:
        self.conn.close()
