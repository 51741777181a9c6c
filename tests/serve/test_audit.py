"""The audit log's hash chain on real SQLite files: rows edited, deleted or inserted behind the service's back
(with sqlite3, as an intruder would) are named by `verify` with the right row id; concurrent writers keep a
valid chain; a log from before the chain is taken over honestly; `ultrasonic audit verify` as a command
(exit status, one line, no traceback); and the files the log writes are 0600."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ultrasonic.errors import ConfigError
from ultrasonic.serve.audit import CONTENT, GENESIS, AuditLog, row_hash
from ultrasonic.serve.audit_verify import verify

N = 6


def _record(log: AuditLog, k: int) -> int:
    return log.record(model_id="m1", sha256=f"{k:064x}", file=f"img{k}.png", label="pneumonia",
                      probabilities={"normal": 0.25, "pneumonia": 0.75}, threshold=0.5, client="127.0.0.1",
                      ood_score=12.5, in_distribution=True)


@pytest.fixture
def db(tmp_path) -> Path:
    log = AuditLog(tmp_path / "audit.sqlite")
    assert [_record(log, k) for k in range(N)] == list(range(1, N + 1))
    return log.path


def _sql(db: Path, *statements: str, params: tuple = ()) -> None:
    conn = sqlite3.connect(db)
    with conn:
        for statement in statements:
            conn.execute(statement, params if "?" in statement else ())
    conn.close()


def _row(db: Path, row_id: int) -> tuple:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {', '.join(CONTENT)}, prev_hash, hash FROM predictions WHERE id = ?",
                            (row_id,)).fetchone()
    finally:
        conn.close()


def test_an_untouched_log_verifies_and_names_its_head(db):
    report = verify(db)
    assert report.ok and report.rows == N and report.unchained == 0
    assert report.head_id == N and report.head == _row(db, N)[-1]
    first, second = _row(db, 1), _row(db, 2)
    assert first[-2] == GENESIS and second[-2] == first[-1]  # each row chained to the one before
    assert verify(db, head=_row(db, 3)[-1]).ok  # an older head: the log has only grown since


@pytest.mark.parametrize("edit", [
    "UPDATE predictions SET class = 'normal' WHERE id = 3",
    "UPDATE predictions SET probabilities = '{\"normal\": 0.75, \"pneumonia\": 0.25}' WHERE id = 3",
    "UPDATE predictions SET threshold = 0.9 WHERE id = 3",
    "UPDATE predictions SET file = 'someone_else.png' WHERE id = 3",
    "UPDATE predictions SET in_distribution = 0 WHERE id = 3",
    "UPDATE predictions SET time = '2020-01-01T00:00:00.000+00:00' WHERE id = 3",
    "UPDATE predictions SET id = 3 WHERE id = 3",  # a no-op edit is not one: see the assertion below
    "UPDATE predictions SET hash = '" + "ab" * 32 + "' WHERE id = 3",
])
def test_an_edited_row_is_named(db, edit):
    _sql(db, edit)
    report = verify(db)
    if "SET id = 3" in edit:
        assert report.ok, report  # writing the same values back changes nothing: no false alarm
        return
    assert not report.ok and report.problem.row == 3 and "content changed" in report.problem.what


def test_an_edit_whose_hash_was_recomputed_breaks_the_link_to_the_next_row(db):
    row = list(_row(db, 3))
    row[CONTENT.index("class")] = "normal"
    _sql(db, "UPDATE predictions SET class = 'normal', hash = ? WHERE id = 3",
         params=(row_hash(tuple(row[:len(CONTENT)]), row[-2]),))
    report = verify(db)
    assert report.problem.row == 4 and "row 3's hash" in report.problem.what


def test_a_deleted_middle_row_is_named(db):
    _sql(db, "DELETE FROM predictions WHERE id = 3")
    report = verify(db)
    assert report.problem.row == 3 and report.problem.what.startswith("deleted") and "row 3 missing" in \
        report.problem.what


def test_deleted_first_rows_are_caught(db):
    _sql(db, "DELETE FROM predictions WHERE id <= 2")
    report = verify(db)
    assert report.problem.row == 3 and "first rows were deleted" in report.problem.what


def test_deleted_newest_rows_are_caught_by_the_counter_and_by_the_head(db):
    head = verify(db).head
    _sql(db, "DELETE FROM predictions WHERE id >= 5")
    report = verify(db)
    assert report.problem.row == 5 and "rows 5 to 6 missing" in report.problem.what
    # an intruder who also resets SQLite's counter passes the chain, but not the head hash noted earlier
    _sql(db, "UPDATE sqlite_sequence SET seq = 4 WHERE name = 'predictions'")
    assert verify(db).ok
    against_head = verify(db, head=head)
    assert not against_head.ok and "not in the chain" in against_head.problem.what


def test_a_row_inserted_in_the_middle_with_a_valid_hash_is_caught_at_the_row_after_it(db):
    forged = list(_row(db, 3))
    _sql(db, "UPDATE predictions SET id = id + 100 WHERE id >= 3", "UPDATE predictions SET id = id - 99 WHERE id > 100")
    forged[CONTENT.index("class")] = "normal"
    content = tuple(forged[:len(CONTENT)])
    _sql(db, f"INSERT INTO predictions ({', '.join(CONTENT)}, prev_hash, hash) VALUES "
             f"({', '.join('?' * (len(CONTENT) + 2))})", params=(*content, forged[-2], row_hash(content, forged[-2])))
    report = verify(db)
    assert report.problem.row == 4 and "row 3's hash" in report.problem.what and "inserted" in report.problem.what


@pytest.mark.parametrize("copied", [False, True])
def test_a_row_appended_by_hand_is_caught(db, copied):
    """An appended row without a hash, or with the last row's chain fields copied onto new content."""
    last = _row(db, N)
    chain = (last[-2], last[-1]) if copied else (None, None)
    _sql(db, "INSERT INTO predictions (time, model_id, sha256, file, class, probabilities, threshold, prev_hash, "
             "hash) VALUES ('2024-01-01T00:00:00.000+00:00', 'm1', 'x', 'fake.png', 'normal', '{}', 0.5, ?, ?)",
         params=chain)
    report = verify(db)
    assert report.problem.row == N + 1
    assert ("no hash" if not copied else "prev_hash") in report.problem.what


def test_concurrent_writers_keep_one_valid_chain(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite")
    threads = [threading.Thread(target=lambda k=k: [_record(log, 100 * k + j) for j in range(15)]) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = verify(log.path)
    assert report.ok and report.rows == 120
    conn = sqlite3.connect(log.path)
    prevs = [row[0] for row in conn.execute("SELECT prev_hash FROM predictions")]
    conn.close()
    assert len(set(prevs)) == 120  # no two rows chained to the same one


def test_a_log_from_before_the_chain_keeps_its_rows_unchecked_and_chains_after_them(tmp_path):
    db = tmp_path / "old.sqlite"
    _sql(db, "CREATE TABLE predictions (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, model_id TEXT "
             "NOT NULL, sha256 TEXT NOT NULL, file TEXT NOT NULL, class TEXT NOT NULL, probabilities TEXT NOT NULL, "
             "threshold REAL, client TEXT)",
         "INSERT INTO predictions (time, model_id, sha256, file, class, probabilities) VALUES "
         "('2024-01-01T00:00:00.000+00:00', 'm0', 'aa', 'old.png', 'normal', '{\"normal\": 1.0}')")
    log = AuditLog(db)
    assert log.page()[0]["hash"] is None  # the old row: its columns added, null
    _record(log, 1)
    report = verify(db)
    assert report.ok and report.rows == 2 and report.unchained == 1 and report.head_id == 2
    assert _row(db, 2)[-2] == GENESIS
    # a chained row passed off as an old one (its hash erased, so that it could be edited) is caught:
    # the log noted in chain_start that the chain began after row 1
    _sql(db, "UPDATE predictions SET hash = NULL, prev_hash = NULL, class = 'pneumonia' WHERE id = 2")
    problem = verify(db).problem
    assert problem.row == 2 and "hash was erased" in problem.what


def test_the_files_the_log_writes_are_its_owners_alone(tmp_path):
    old = os.umask(0o022)  # a permissive umask: the 0600 must come from the log itself
    try:
        log = AuditLog(tmp_path / "audit.sqlite")
        _record(log, 1)
        holder = sqlite3.connect(log.path)  # an open connection keeps -wal and -shm on disk
        holder.execute("SELECT COUNT(*) FROM predictions").fetchone()
        _record(log, 2)
        written = sorted(tmp_path.iterdir())
        assert {p.name for p in written} >= {"audit.sqlite", "audit.sqlite-wal", "audit.sqlite-shm"}
        for path in written:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        holder.close()
    finally:
        os.umask(old)


def test_verify_refuses_what_is_not_an_audit_log(tmp_path):
    (tmp_path / "notes.txt").write_text("not a database, just text long enough to have a header" * 3)
    _sql(tmp_path / "other.sqlite", "CREATE TABLE t (x)")
    for path, says in ((tmp_path / "missing.sqlite", "does not exist"), (tmp_path, "is a folder"),
                       (tmp_path / "notes.txt", "not an SQLite database"),
                       (tmp_path / "other.sqlite", "not a readable ultrasonic audit log")):
        with pytest.raises(ConfigError, match=says):
            verify(path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ultrasonic.cli", "audit", "verify", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
@pytest.mark.once
def test_the_verify_command_exit_status_and_lines(db, tmp_path):
    intact = _cli(db)
    head = _row(db, N)[-1]
    assert intact.returncode == 0 and intact.stdout.startswith(f"OK: {db}: {N} rows, hash chain intact"), intact
    assert f"head {head} (row {N})" in intact.stdout and intact.stderr == ""
    assert _cli(db, "--head", head).returncode == 0
    _sql(db, "DELETE FROM predictions WHERE id = 4")
    tampered = _cli(db, "--head", head)
    assert tampered.returncode == 1 and tampered.stdout.strip() == \
        f"TAMPERED: {db}: row 4: deleted: ids jump from 3 to 5 (row 4 missing)", tampered
    (tmp_path / "x.png").write_bytes(b"\x89PNG not a database at all, padded" * 10)
    for bad in (tmp_path / "missing.sqlite", tmp_path / "x.png"):
        done = _cli(bad)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), done
        assert "Traceback" not in done.stderr and done.stdout == ""
