"""Batch prediction over an archive: streamed CSV, lazy walking, resume after a kill, stable shards."""

from __future__ import annotations

import csv
import itertools

import pytest
from tiny_run import make_run, write_images

from ultrasonic.inference.batch import parse_shard, predict_to_csv
from ultrasonic.cli import main
from ultrasonic.errors import ConfigError, RunError
from ultrasonic.data.files import in_shard, iter_paths
from ultrasonic.inference.predictor import Predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return Predictor(make_run(tmp_path_factory.mktemp("arch") / "run", size=32))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """30 images in nested folders, one unreadable file, one non-image file."""
    root = tmp_path_factory.mktemp("archive")
    write_images(root / "b", 12, prefix="x")
    write_images(root / "a" / "deeper", 10, seed=1)
    write_images(root, 8, seed=2, prefix="top")
    (root / "a" / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("not an image name: not listed")
    return root


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_walk_is_sorted_per_folder_and_lazy(archive):
    files = list(iter_paths([archive]))
    names = [f.relative_to(archive).as_posix() for f in files]
    assert len(names) == 31 and "notes.txt" not in names
    assert names[0] == "a/broken.png" and names[1] == "a/deeper/img000.png" and names[-1] == "top007.png"
    walker = iter_paths([archive])
    assert next(walker) == files[0]  # a generator: nothing listed beyond what was asked for


def test_csv_streams_every_file_once_with_header_and_errors(predictor, archive, tmp_path, capsys):
    out = tmp_path / "preds.csv"
    code = main(["predict", str(predictor.run.path), str(archive), "--out", str(out), "--batch-size", "8"])
    rows = read_rows(out)
    assert code == 1  # one unreadable file: said in the exit status
    assert list(rows[0]) == ["file", "class", "p_normal", "p_pneumonia", "threshold", "error", "note", "ood_score",
                            "in_distribution", "message"]
    assert [r["file"] for r in rows] == [str(f) for f in iter_paths([archive])]
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and bad[0]["file"].endswith("broken.png") and bad[0]["class"] == ""
    assert "31 rows added (1 unreadable files), 0 already there" in capsys.readouterr().err
    with pytest.raises(RunError, match="--resume"):
        predict_to_csv(predictor, [archive], out, progress=False)  # never clobbers an earlier run


def test_resume_after_a_kill_cuts_the_torn_line_and_skips_done_files(predictor, archive, tmp_path):
    out = tmp_path / "preds.csv"
    files = list(iter_paths([archive]))
    first = predict_to_csv(predictor, files[:10], out, batch_size=4, progress=False)
    assert first.written == 10
    with open(out, "a") as f:
        f.write(f"{files[10]},pneum")  # killed in the middle of a row
    again = predict_to_csv(predictor, [archive], out, batch_size=4, resume=True, progress=False)
    assert (again.skipped, again.written) == (10, 21)
    rows = read_rows(out)
    assert [r["file"] for r in rows] == [str(f) for f in files]  # each file once, in order, no part-row
    assert all(r["class"] in ("normal", "pneumonia") or r["error"] for r in rows)


def test_resume_refuses_a_csv_of_another_model(predictor, archive, tmp_path):
    out = tmp_path / "other.csv"
    out.write_text("file,class,p_benign,p_malignant,threshold,error\n")
    with pytest.raises(RunError, match="another model"):
        predict_to_csv(predictor, [archive], out, resume=True, progress=False)


def test_shards_split_the_archive_stably(predictor, archive, tmp_path):
    all_files = set(iter_paths([archive]))
    shards = [set(iter_paths([archive], shard=(k, 3))) for k in (1, 2, 3)]
    assert set().union(*shards) == all_files and sum(map(len, shards)) == len(all_files)
    assert all(shards)  # 31 files over 3 shards: none is empty
    (archive / "b" / "new.png").write_bytes((archive / "b" / "x000.png").read_bytes())
    try:
        after = [set(iter_paths([archive], shard=(k, 3))) for k in (1, 2, 3)]
        assert all(before <= now for before, now in zip(shards, after))  # adding a file moves no other
    finally:
        (archive / "b" / "new.png").unlink()
    # the relative path decides, not where the archive is mounted
    assert in_shard("b/x000.png", (1, 2)) != in_shard("b/x000.png", (2, 2))
    out = tmp_path / "s.csv"
    assert main(["predict", str(predictor.run.path), str(archive), "--out", str(out), "--shard", "2/3"]) in (0, 1)
    assert {r["file"] for r in read_rows(out)} == {str(f) for f in shards[1]}


def test_shard_and_resume_flags_are_checked(predictor, archive, capsys):
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(bad)
    assert main(["predict", str(predictor.run.path), str(archive), "--resume"]) == 2
    assert "go with --out" in capsys.readouterr().err


def test_files_are_pulled_lazily_with_bounded_prefetch(predictor, archive):
    """Memory stays constant: a long stream of files is read only a few batches ahead."""
    image = next(iter_paths([archive / "b"]))
    pulled = itertools.count()

    def many():  # as good as endless here; finite so that an eager reader fails rather than hangs
        for _ in range(1000):
            next(pulled)
            yield image

    batches = predictor.iter_files(many(), batch_size=4, prefetch=2)
    first = next(batches)
    assert len(first) == 4 and first[0]["file"] == str(image)
    assert next(pulled) <= 4 * (2 + 1)  # the batch returned plus two decoding ahead
    batches.close()
