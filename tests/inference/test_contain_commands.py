"""One file the decoder fails on never stops `predict` or `explain`: it is that file's row, the others go on.

The decoder is made to fail inside Pillow (crashing_decoder.py: one file per
exception type a real decoder raises) and to warn on one file; every output
(table, csv, json, the streamed --out CSV, killed and resumed) must give
exactly one row per file, the failed ones with their cause, and no traceback.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from crashing_decoder import NOTE, crash_files, crashing_decoder, child_env, noted_png
from tiny_run import make_run, write_images

from ultrasonic.cli import main
from ultrasonic.data.files import iter_paths

HELPER = Path(__file__).resolve().parents[1] / "crashing_decoder.py"
N_CRASHES = len(crash_files())


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("contain") / "run", size=32)


def odd_files() -> dict[str, tuple[bytes, str]]:
    """The crash files, named so that the last sorts after every good image: name -> (bytes, error start)."""
    files = list(crash_files().items())
    return {**dict(files[:-1]), f"zz_{files[-1][0]}": files[-1][1]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """6 good images, 8 crash files in between and one at the end, one image that warns."""
    root = tmp_path_factory.mktemp("odd")
    write_images(root, 3, prefix="a_good")
    write_images(root, 3, seed=1, prefix="z_good")
    for name, (data, _) in odd_files().items():
        (root / name).write_bytes(data)
    (root / "noted.png").write_bytes(noted_png())
    return root


@pytest.fixture(autouse=True)
def decoder():
    with crashing_decoder():
        yield


def expected_errors(root: Path) -> dict[str, str]:
    return {str(root / name): reason for name, (_, reason) in odd_files().items()}


def check_rows(rows: list[dict], root: Path) -> None:
    """One row per file, in order; each crash file's error names its exception; the warning is a note."""
    assert [r["file"] for r in rows] == [str(f) for f in iter_paths([root])]
    errors = {r["file"]: r["error"] for r in rows if r.get("error")}
    assert set(errors) == set(expected_errors(root))
    for name, start in expected_errors(root).items():
        assert errors[name].startswith(start) and "convert it to PNG" in errors[name]
    good = [r for r in rows if not r.get("error")]
    assert len(good) == 7 and all(r["class"] in ("normal", "pneumonia") for r in good)
    assert [r.get("note") for r in rows if r.get("note")] == [NOTE]
    assert next(r for r in rows if r.get("note"))["file"].endswith("noted.png")


def test_predict_json_gives_one_row_per_file_and_no_traceback(run, folder, capsys):
    code = main(["predict", str(run), str(folder), "--format", "json", "--batch-size", "4"])
    out, err = capsys.readouterr()
    check_rows(json.loads(out), folder)
    assert code == 1 and "Traceback" not in err
    assert f"{N_CRASHES} of {N_CRASHES + 7} files could not be read; their rows say why" in err


@pytest.mark.parametrize("fmt", ["csv", "table"])
def test_predict_csv_and_table_give_one_row_per_file(run, folder, capsys, fmt):
    code = main(["predict", str(run), str(folder), "--format", fmt])
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(out)))
        assert list(rows[0])[-5:] == ["error", "note", "ood_score", "in_distribution", "message"]
        check_rows(rows, folder)
    else:
        lines = out.splitlines()
        assert len(lines) == 1 + N_CRASHES + 7 + 1  # header, a line per file, the threshold
        assert sum("ERROR: cannot be decoded (" in line for line in lines) == N_CRASHES
        assert any(line.startswith(str(folder / "noted.png")) and f"(note: {NOTE})" in line for line in lines)


def test_explain_gives_a_row_per_file_and_a_heat_map_per_readable_one(run, folder, tmp_path, capsys):
    code = main(["explain", str(run), str(folder), "--out", str(tmp_path / "cams"), "--format", "json"])
    out, err = capsys.readouterr()
    rows = json.loads(out)
    check_rows(rows, folder)
    assert code == 1 and "Traceback" not in err
    assert all(Path(r["cam"]).is_file() for r in rows if not r.get("error"))
    assert not any("cam" in r for r in rows if r.get("error"))


def test_predict_out_resume_skips_the_failed_files_it_has_rows_for(run, folder, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    files = list(iter_paths([folder]))
    assert main(["predict", str(run), *map(str, files[:8]), "--out", str(out), "--batch-size", "3"]) == 1
    assert main(["predict", str(run), str(folder), "--out", str(out), "--resume", "--batch-size", "3"]) == 1
    err = capsys.readouterr().err
    assert "8 already there" in err and "Traceback" not in err
    with open(out, newline="") as f:
        check_rows(list(csv.DictReader(f)), folder)


def test_a_csv_begun_before_the_note_column_is_resumed_in_its_own_columns(run, folder, tmp_path, capsys):
    out = tmp_path / "old.csv"
    out.write_text("file,class,p_normal,p_pneumonia,threshold,error\n")
    # the gate's verdicts would have no column: refused, unless the gate is off
    assert main(["predict", str(run), str(folder), "--out", str(out), "--resume"]) == 2
    assert "--ood off" in capsys.readouterr().err and out.read_text().count("\n") == 1
    assert main(["predict", str(run), str(folder), "--out", str(out), "--resume", "--ood", "off"]) == 1
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert all(len(row) == 6 for row in rows) and len(rows) == 1 + N_CRASHES + 7


def test_a_csv_begun_before_the_gate_columns_but_with_notes_is_resumed_with_the_gate_off(run, folder, tmp_path):
    out = tmp_path / "old.csv"
    out.write_text("file,class,p_normal,p_pneumonia,threshold,error,note\n")
    assert main(["predict", str(run), str(folder), "--out", str(out), "--resume", "--ood", "off"]) == 1
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert all(len(row) == 7 for row in rows) and len(rows) == 1 + N_CRASHES + 7


def test_predict_out_killed_then_resumed_finishes_with_one_row_per_file(run, folder, tmp_path):
    """A real `ultrasonic predict --out` process, SIGKILLed mid-way, then `--resume`: every file once."""
    out = tmp_path / "preds.csv"
    command = [sys.executable, str(HELPER), "predict", str(run), str(folder), "--out", str(out),
               "--batch-size", "2", "-q"]
    slow = {**child_env(), "CRASHING_DECODER_SLOW": "0.5"}  # per good image: the kill lands mid-way
    child = subprocess.Popen(command, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and child.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 1 + 4:  # the header and two batches
            break
        time.sleep(0.05)
    assert child.poll() is None, child.stderr.read().decode()
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stderr.close()
    done = out.read_text().count("\n") - 1
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert 4 <= done < N_CRASHES + 7 and any(r["error"] for r in rows), done  # mid-way, failed files among
    again = subprocess.run([*command, "--resume"], env=child_env(), capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "Traceback" not in again.stderr, again.stderr  # the last crash file
    assert f"{done} already there" in again.stderr
    with open(out, newline="") as f:
        check_rows(list(csv.DictReader(f)), folder)
