"""AuditLog: every prediction the service makes, one row each, in a SQLite file that outlives it.

    log = AuditLog("runs/cxr/audit.sqlite")
    row_id = log.record(model_id="f41f...", sha256="9a3c...", file="a.png", label="pneumonia",
                        probabilities={"normal": 0.1, "pneumonia": 0.9}, threshold=0.46, client="127.0.0.1")
    log.page(limit=50, offset=0)   # newest first: [{"id", "time", "model_id", "sha256", "file", ...}]

SQLite gives the atomicity here (a transaction per row, WAL journal), so this
file, unlike the rest of ultrasonic, does not write through atomic.py. Each
call opens its own connection: uvicorn runs endpoints on a thread pool and a
sqlite3 connection must not be shared between threads.
"""

from __future__ import annotations

import contextlib
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
COLUMNS = ("id", "time", "model_id", "sha256", "file", "class", "probabilities", "threshold", "client",
           *OOD_COLUMNS)
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
                conn.execute(SCHEMA)
                _add_ood_columns(conn)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError(f"{self.path}: cannot open the audit log ({exc}); give a writable file "
                              "with --db") from exc

    def record(self, *, model_id: str, sha256: str, file: str, label: str | None, probabilities: dict,
               threshold: float | None, client: str | None, ood_score: float | None = None,
               in_distribution: bool | None = None, message: str | None = None) -> int:
        """Write one prediction in its own transaction; return its id. label None: the OOD gate refused it."""
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        inside = None if in_distribution is None else int(in_distribution)
        with self._connect() as conn, conn:
            cursor = conn.execute(
                "INSERT INTO predictions (time, model_id, sha256, file, class, probabilities, threshold, client,"
                " ood_score, in_distribution, message) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, model_id, sha256, file, label or "", json.dumps(probabilities), threshold, client,
                 ood_score, inside, message))
            return int(cursor.lastrowid)

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
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S)
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


def _add_ood_columns(conn: sqlite3.Connection) -> None:
    """Give a log made before the OOD gate its columns (its old rows read null there)."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(predictions)")}
    for name, kind in OOD_COLUMNS.items():
        if name not in present:
            conn.execute(f"ALTER TABLE predictions ADD COLUMN {name} {kind}")


def _as_dict(row: tuple) -> dict:
    item = dict(zip(COLUMNS, row))
    item["probabilities"] = json.loads(item["probabilities"])
    item["class"] = item["class"] or None  # '' is stored for a prediction the OOD gate refused
    if item["in_distribution"] is not None:
        item["in_distribution"] = bool(item["in_distribution"])
    return item
