"""With a real (untrained, tiny) model: predict a dicomized picture, and the SR and FHIR carry its numbers."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.inference.predictor import Predictor
from ultrasonic.pacs import codes as C
from ultrasonic.pacs.picture import write_dicomized
from ultrasonic.pacs.report import structured_report
from tiny_run import make_run


def test_the_sr_and_predict_format_fhir_carry_the_predicted_probability(tmp_path, capsys, validate):
    run = make_run(tmp_path / "run", size=32)
    picture = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)).save(picture)
    [dcm] = write_dicomized([picture], tmp_path / "dicom", modality="CR")
    predictor = Predictor(run)
    [row] = predictor.predict_files([dcm])
    path = tmp_path / "sr.dcm"
    structured_report(pydicom.dcmread(dcm), row, predictor.meta).save_as(path, enforce_file_format=True)
    validate(path)
    [probability] = hd.sr.utils.find_content_items(hd.sr.srread(path), name=C.PROBABILITY, recursive=True)
    assert float(probability.MeasuredValueSequence[0].NumericValue) == row["probabilities"]["pneumonia"]

    capsys.readouterr()
    assert main(["predict", str(run), str(dcm), "--format", "fhir"]) == 0
    report = json.loads(capsys.readouterr().out)
    [obs] = report["contained"]
    assert obs["component"][0]["valueQuantity"]["value"] == row["probabilities"]["pneumonia"]
    assert report["imagingStudy"][0]["identifier"]["value"] == f"urn:oid:{pydicom.dcmread(dcm).StudyInstanceUID}"
