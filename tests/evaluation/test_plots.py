"""Figures are real PNG files, annotated as a reader expects, and never left open."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from ultrasonic.evaluation import plots
from ultrasonic.errors import DataError
from ultrasonic.evaluation.plots import _cell_text, _metric_pairs, plot_confusion_matrix, plot_history, plot_pr, plot_roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.35, 0.55, 0.8, 0.9])
HISTORY = (
    "epoch,accuracy,auc,learning_rate,loss,note,val_accuracy,val_auc,val_loss\n"
    "0,0.70,0.75,0.001,0.60,warmup,0.68,0.72,0.65\n"
    "1,0.80,0.85,0.001,0.45,,0.75,0.80,0.55\n"
    "2,0.85,0.90,0.0005,0.35,,0.79,0.84,0.50\n"
)


def assert_png(path: Path, min_bytes: int = 5_000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > min_bytes
    with Image.open(path) as image:
        image.verify()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp files


@pytest.fixture(autouse=True)
def no_open_figures():
    yield
    assert plt.get_fignums() == []  # every figure is closed, even after an error


def test_cell_text():
    assert _cell_text(180, 600) == "180 | 30.0%"
    assert _cell_text(1, 3) == "1 | 33.3%"
    assert _cell_text(0, 0) == "0 | 0.0%"


def test_metric_pairs_match_train_and_val_and_skip_text_columns(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(HISTORY)
    columns = plots._read_history(path)
    assert "note" not in columns
    assert columns["val_loss"] == [0.65, 0.55, 0.50]
    assert _metric_pairs(columns) == [
        ("accuracy", "val_accuracy"), ("auc", "val_auc"), ("learning_rate", None), ("loss", "val_loss"),
    ]


def test_plot_history(tmp_path):
    (tmp_path / "history.csv").write_text(HISTORY)
    plot_history(tmp_path / "history.csv", tmp_path / "out" / "history.png")
    assert_png(tmp_path / "out" / "history.png")


def test_plot_history_one_epoch(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n0,0.7,0.8\n")
    plot_history(tmp_path / "history.csv", tmp_path / "history.png")
    assert_png(tmp_path / "history.png", min_bytes=2_000)


def test_plot_history_empty_file_is_a_clear_error(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,loss,val_loss\n")
    with pytest.raises(DataError, match="no epochs"):
        plot_history(tmp_path / "history.csv", tmp_path / "history.png")
    assert not (tmp_path / "history.png").exists()


def test_plot_confusion_matrix_annotations(tmp_path, monkeypatch):
    drawn = {}
    real_save = plots._save

    def spy(fig, out_png):
        ax = fig.axes[0]
        drawn.update(texts=[t.get_text() for t in ax.texts], x=ax.get_xlabel(), y=ax.get_ylabel(),
                     ticks=[t.get_text() for t in ax.get_xticklabels()])
        real_save(fig, out_png)

    monkeypatch.setattr(plots, "_save", spy)
    plot_confusion_matrix([[4, 2], [1, 3]], ["NORMAL", "PNEUMONIA"], tmp_path / "cm.png")
    assert drawn["texts"] == ["4 | 40.0%", "2 | 20.0%", "1 | 10.0%", "3 | 30.0%"]  # row by row
    assert (drawn["x"], drawn["y"]) == ("Predicted", "True")
    assert drawn["ticks"] == ["NORMAL", "PNEUMONIA"]
    assert_png(tmp_path / "cm.png")


def test_plot_confusion_matrix_rejects_wrong_shape(tmp_path):
    with pytest.raises(DataError, match="does not match 3 classes"):
        plot_confusion_matrix([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "cm.png")


def test_plot_roc_and_pr_binary(tmp_path, monkeypatch):
    legends = []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: (
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()]), real_save(fig, out)))
    probs = np.c_[1 - P, P]
    plot_roc(Y, probs, ["NORMAL", "PNEUMONIA"], tmp_path / "roc.png", threshold=0.35)
    plot_pr(Y, probs, ["NORMAL", "PNEUMONIA"], tmp_path / "pr.png")
    assert legends[0] == ["PNEUMONIA (AUC = 0.792)", "threshold 0.35", "chance"]  # AUC 19/24
    assert legends[1] == ["PNEUMONIA (AP = 0.793)", "chance (0.40)"]  # AP (1 + 1 + 3/5 + 4/7) / 4
    assert_png(tmp_path / "roc.png")
    assert_png(tmp_path / "pr.png")


def test_plot_roc_and_pr_multiclass(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 10)
    probs = rng.dirichlet([1, 1, 1], 30) + np.eye(3)[y]
    plot_roc(y, probs / probs.sum(1, keepdims=True), ["a", "b", "c"], tmp_path / "roc.png")
    plot_pr(y, probs / probs.sum(1, keepdims=True), ["a", "b", "c"], tmp_path / "pr.png")
    assert_png(tmp_path / "roc.png")
    assert_png(tmp_path / "pr.png")


def test_plot_roc_needs_both_classes(tmp_path):
    with pytest.raises(DataError, match="only one class"):
        plot_roc([1, 1], [[0.2, 0.8], [0.3, 0.7]], ["NORMAL", "PNEUMONIA"], tmp_path / "roc.png")


def test_plot_reliability_shows_before_and_after(tmp_path, monkeypatch):
    from ultrasonic.evaluation.calibration import calibration_report

    legends, titles = [], []
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, out: (
        legends.append([t.get_text() for t in fig.axes[0].get_legend().get_texts()]),
        titles.append(fig.axes[0].get_title()), real_save(fig, out)))
    report = calibration_report(Y, np.c_[1 - P, P], 2.0)
    plots.plot_reliability(report, tmp_path / "reliability.png")
    assert legends[0] == ["perfect calibration", f"before: T = 1, ECE {report['before']['ece']:.3f}",
                          f"after: T = 2.00, ECE {report['after']['ece']:.3f}"]
    assert titles[0] == "Reliability diagram (15 equal-width bins)"
    assert_png(tmp_path / "reliability.png")
