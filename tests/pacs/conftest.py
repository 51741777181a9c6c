"""Shared by the pacs tests: dciodvfy (dicom3tools) as a check, a source DICOM image, a run's meta."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
from PIL import Image

pytest.importorskip("highdicom", reason="the `pacs` extra is not installed")


@pytest.fixture
def validate():
    """dciodvfy's output for a file, asserting it has no Error line; skips without dicom3tools (CI installs it)."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy is missing: apt-get install dicom3tools (.ci/run does)")

    def run(path: Path) -> str:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        out = done.stdout + done.stderr
        assert not [line for line in out.splitlines() if line.startswith("Error")], out
        return out

    return run


@pytest.fixture
def source(tmp_path) -> pydicom.Dataset:
    """A dicomized 40 x 48 grey picture with a gradient, read back as a pydicom Dataset."""
    from ultrasonic.pacs.picture import write_dicomized

    picture = tmp_path / "source.png"
    Image.fromarray(np.add.outer(np.arange(40), np.arange(48)).astype(np.uint8) * 2).save(picture)
    [path] = write_dicomized([picture], tmp_path / "dicom", patient_id="anon-1", modality="CR")
    return pydicom.dcmread(path)


@pytest.fixture
def meta():
    return SimpleNamespace(model_id="0123456789abcdef", classes=["normal", "pneumonia"], positive_class="pneumonia")


def prediction(cls="pneumonia", p=0.875, threshold=0.42, refused=False) -> dict:
    """A row as Predictor.rows makes it (and `predict --format json` prints it)."""
    row = {"file": "source.dcm", "class": None if refused else cls, "threshold": threshold,
           "probabilities": {"normal": round(1 - p, 6), "pneumonia": p}, "ood_score": 9.5 if refused else 1.5,
           "in_distribution": not refused}
    if refused:
        row["message"] = "not like the training images (OOD score 9.5 above 4.2)"
    return row
