"""AuditLog: every prediction the service makes, one row each, in a SQLite file that outlives it.

    log = AuditLog("runs/cxr/audit.sqlite")
    row_id = log.record(model_id="f41f...", sha256="9a3c...", file="a.png", label="pneumonia",
                        probabilities={"normal": 0.1, "pneumonia": 0.9}, threshold=0.46, client="127.0.0.1")
    log.page(limit=50, offset=0)   # newest first: [{"id", "time", "model_id", "sha256", "file", ...}]

SQLite gives the atomicity here (a transaction per row, WAL journal), so this
file, unlike the rest of ultrasonic, does not write through atomic.py. Each
call opens its own connection: uvicorn runs endpoints on a thread pool and a
sqlite3 connection must not be shared between threads.

The log is a hash chain, so that an edit made to the file behind the service's back shows:
each row's `hash` is SHA-256 over its stored fields (id included) and `prev_hash`, the hash
of the row before it (GENESIS for the first). `ultrasonic audit verify DB` (audit_verify.py)
recomputes it. The hash is taken over the row as SQLite stored it (read back in the same
transaction), so writer and verifier see the same values, and the row before is read inside
that transaction (BEGIN IMMEDIATE): two threads cannot chain to the same row. A log made
before the chain keeps its old rows with a null hash; the chain starts at GENESIS after them.
Without a secret, anyone who can write the file can rewrite the chain from the row they edit to
the end: the head hash an operator notes (`verify --head`) is what proves that did not happen.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from ultrasonic.errors import ConfigError

SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so an id names one prediction forever
    time          TEXT NOT NULL,                      -- ISO 8601, UTC
    model_id      TEXT NOT NULL,
    sha256        TEXT NOT NULL,                      -- of the uploaded bytes
    file          TEXT NOT NULL,                      -- the name the client gave
    class         TEXT NOT NULL,
    probabilities TEXT NOT NULL,                      -- JSON object class -> p
    threshold     REAL,
    client        TEXT
)
"""
# The out-of-distribution gate's verdict, added to the table above (an older log gets them on opening).
# An image the gate refused has class '' (read back as null) and in_distribution 0.
OOD_COLUMNS = {"ood_score": "REAL", "in_distribution": "INTEGER", "message": "TEXT"}
CHAIN_START = "CREATE TABLE IF NOT EXISTS chain_start (before_id INTEGER NOT NULL)"  # one row: see _start_chain
# The hash chain, added the same way: rows written before it keep null in both.
CHAIN_COLUMNS = {"prev_hash": "TEXT", "hash": "TEXT"}
CONTENT = ("id", "time", "model_id", "sha256", "file", "class", "probabilities", "threshold", "client",
           *OOD_COLUMNS)  # what a row's hash covers, in this order, with prev_hash
COLUMNS = (*CONTENT, *CHAIN_COLUMNS)
GENESIS = "0" * 64  # the prev_hash of the first chained row
CHAIN_VERSION = "ultrasonic-audit-v1"  # in every hashed text: a later format cannot be mistaken for this one
BUSY_TIMEOUT_S = 10.0


class AuditLog:
    """The prediction log in one SQLite file; safe to use from many threads."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(self.path)
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
                conn.execute("BEGIN IMMEDIATE")  # two services opening one old log add its columns once
                conn.execute(SCHEMA)
                _add_columns(conn, OOD_COLUMNS)
                _start_chain(conn)
                conn.execute("COMMIT")
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"{self.path}: cannot open the audit log ({exc}); give a writable file "
                              "with --db") from exc

    def record(self, *, model_id: str, sha256: str, file: str, label: str | None, probabilities: dict,
               threshold: float | None, client: str | None, ood_score: float | None = None,
               in_distribution: bool | None = None, message: str | None = None) -> int:
        """Write one prediction, chained to the last row, in its own transaction; return its id.
        label None: the OOD gate refused it."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        inside = None if in_distribution is None else int(in_distribution)
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")  # the write lock now: no other writer between reading prev and ours
            try:
                prev = last_hash(conn)
                row_id = int(conn.execute(
                    "INSERT INTO predictions (time, model_id, sha256, file, class, probabilities, threshold, client,"
                    " ood_score, in_distribution, message, prev_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (now, model_id, sha256, file, label or "", json.dumps(probabilities), threshold, client,
                     ood_score, inside, message, prev)).lastrowid)
                stored = conn.execute(f"SELECT {', '.join(CONTENT)} FROM predictions WHERE id = ?",
                                      (row_id,)).fetchone()
                conn.execute("UPDATE predictions SET hash = ? WHERE id = ?", (row_hash(stored, prev), row_id))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return row_id

    def page(self, limit: int = 50, offset: int = 0) -> list[dict]:
        """Rows newest first, `limit` of them after skipping `offset`."""
        with self._connect() as conn:
            rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM predictions ORDER BY id DESC LIMIT ? OFFSET ?",
                                (limit, offset)).fetchall()
        return [_as_dict(row) for row in rows]

    def count(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)  # we BEGIN ourselves
        try:
            yield conn
        finally:
            conn.close()


def _create_private(path: Path) -> None:
    """Make the log file readable and writable by its owner only (0600) before SQLite opens it: it holds
    file names and image hashes of patients. SQLite gives its -wal and -shm files the same mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # an existing log keeps the mode its owner gave it


def row_hash(content: tuple, prev_hash: str) -> str:
    """SHA-256 (hex) of a row's CONTENT values as SQLite returns them, and the hash of the row before.
    JSON keeps each value's type (0.5 is not "0.5"), and repr-exact floats; a blob (never written by
    the service) is hashed as its hex, so an edit that stores one is a mismatch, not a crash."""
    text = json.dumps([CHAIN_VERSION, *content, prev_hash], separators=(",", ":"),
                      default=lambda v: {"blob": v.hex()} if isinstance(v, bytes) else str(v))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def last_hash(conn: sqlite3.Connection) -> str:
    """The hash of the newest chained row, or GENESIS when there is none (a new log, or one from before the chain)."""
    found = conn.execute("SELECT hash FROM predictions WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1").fetchone()
    return found[0] if found else GENESIS


def _start_chain(conn: sqlite3.Connection) -> None:
    """Add the chain's columns to a new log, or to one from before the chain, and note in chain_start the
    last row written before it (0 for a new log): verify then knows which rows must carry a hash, and a
    chained row whose hash is erased cannot pass for an old one."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    conn.execute(CHAIN_START)
    if "hash" not in present:
        _add_columns(conn, CHAIN_COLUMNS)
        conn.execute("INSERT INTO chain_start SELECT COALESCE(MAX(id), 0) FROM predictions")


def _add_columns(conn: sqlite3.Connection, columns: dict[str, str]) -> None:
    """Give a log made before the OOD gate or the chain their columns (its old rows read null there)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for name, kind in columns.items():
        if name not in present:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")


def _as_dict(row: tuple) -> dict:
    item = dict(zip(COLUMNS, row))
    item["probabilities"] = json.loads(item["probabilities"])
    item["class"] = item["class"] or None  # '' is stored for a prediction the OOD gate refused
    if item["in_distribution"] is not None:
        item["in_distribution"] = bool(item["in_distribution"])
    return item
