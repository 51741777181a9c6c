"""`ultrasonic pacs` against a real Orthanc (tests/pacs/orthanc.py): what it writes, that a second run adds
nothing, --limit then a rerun continues, basic auth, and a PACS that is down or answers 500."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.data.synthetic import lesion_images
from ultrasonic.pacs import codes as C
from ultrasonic.pacs.capture import capture_uids
from ultrasonic.pacs.picture import write_dicomized
from ultrasonic.pacs.report import report_uids
from orthanc import free_port, running_orthanc
from shared_data import SHARED_DATA
from tiny_run import gated_run, make_run, real_chest_xrays, write_images

pytest.importorskip("dicomweb_client", reason="the `pacs` extra is not installed")
pytestmark = [pytest.mark.e2e, pytest.mark.once]

# Orthanc refuses (at STOW) the results of one patient: a per-instance STOW failure, the others stored
REFUSE = """
function ReceivedInstanceFilter(dicom, origin, info)
  return not (dicom.PatientID == 'refuse-results' and dicom.Modality == 'SR')
end
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run", size=32)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """One Orthanc for the tests that name their own study (--study): one start for all of them."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


def pictures(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n chest X-ray JPEGs of the shared data when present, else synthetic PNGs."""
    real = real_chest_xrays((n + 1) // 2)[:n]
    return real if len(real) == n else write_images(folder, n, size=64, seed=seed)


def study_of(paths: list[Path], folder: Path, study: str, **options) -> list[Path]:
    return write_dicomized(paths, folder, study_uid=study, modality="CR", **options)


def pacs(run: Path, url: str, *options: str) -> int:
    return main(["pacs", str(run), "--url", url, "-q", *options])


def test_sr_and_heat_map_per_image_in_the_source_study_with_predicts_probability(run, tmp_path, capsys, validate):
    real = sorted((SHARED_DATA / "dicom").glob("*.dcm"))
    chest = study_of(pictures(tmp_path / "pics", 2), tmp_path / "chest", "1.2.826.0.1.3680043.10.1.1")
    [refused] = write_dicomized(write_images(tmp_path / "other", 1, size=64, seed=5), tmp_path / "refused",
                                patient_id="refuse-results", modality="CR")
    sources = real + chest + [refused]
    with running_orthanc(tmp_path / "orthanc", lua=REFUSE) as orthanc:
        for path in sources:
            orthanc.upload(path)
        fhir = tmp_path / "report.json"
        capsys.readouterr()
        assert pacs(run, orthanc.dicomweb, "--format", "fhir", "--fhir-out", str(fhir)) == 1  # some failed
        out = capsys.readouterr().out
        predicted = {}
        for path in sources:  # one file a call, as the command predicts them: a batch's size moves the 7th digit
            main(["predict", str(run), str(path), "--format", "json"])
            predicted.update((r["file"], r) for r in json.loads(capsys.readouterr().out) if "error" not in r)
        meta = json.loads((run / "meta.json").read_text())
        checked = 0
        for path in sources:
            ds = pydicom.dcmread(path)
            sr_uids, sc_uids = report_uids(ds, meta["model_id"]), capture_uids(ds, meta["model_id"])
            if str(path) not in predicted:  # the decoder refused it (the 16 x 16 CR): reported, nothing written
                assert f"failed: {ds.SOPInstanceUID}: not predicted:" in out
                assert not orthanc.lookup(sr_uids["sop"]) and not orthanc.lookup(sc_uids["sop"])
                continue
            if path == refused:  # Orthanc refused its SR: reported with the reason, the batch went on
                assert f"failed: {ds.SOPInstanceUID}: not stored (STOW-RS)" in out
                continue
            sr_file, sc_file = tmp_path / f"{ds.SOPInstanceUID}.sr.dcm", tmp_path / f"{ds.SOPInstanceUID}.sc.dcm"
            sr_file.write_bytes(orthanc.instance_file(sr_uids["sop"]))
            sc_file.write_bytes(orthanc.instance_file(sc_uids["sop"]))
            validate(sr_file)
            validate(sc_file)
            sr, sc = hd.sr.srread(sr_file), hd.imread(sc_file)
            assert sr.StudyInstanceUID == sc.StudyInstanceUID == ds.StudyInstanceUID
            [evidence] = sr.CurrentRequestedProcedureEvidenceSequence
            assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID \
                == ds.SOPInstanceUID
            assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == ds.SOPInstanceUID
            [p] = hd.sr.utils.find_content_items(sr, name=C.PROBABILITY, recursive=True)
            assert float(p.MeasuredValueSequence[0].NumericValue) == predicted[str(path)]["probabilities"]["pneumonia"]
            checked += 1
        assert checked == len(predicted) - 1 >= 3
        assert f"{checked} predicted" in out and f"written: {2 * checked} objects" in out  # the stored ones
        assert f"{len(sources) - checked} failed" in out
        report = json.loads(fhir.read_text())
        assert len(report["contained"]) == checked
        assert {s["identifier"]["value"] for s in report["imagingStudy"]} >= {"urn:oid:1.2.826.0.1.3680043.10.1.1"}


def test_limit_then_rerun_continues_and_a_third_run_adds_nothing(run, orthanc, tmp_path, capsys):
    study = "1.2.826.0.1.3680043.10.1.2"
    for path in study_of(pictures(tmp_path / "pics", 3), tmp_path / "cr", study):
        orthanc.upload(path)
    [other] = write_dicomized(write_images(tmp_path / "ot", 1, size=64, seed=9), tmp_path / "otdcm", study_uid=study,
                              series_uid="1.2.826.0.1.3680043.10.1.2.7", modality="OT")
    orthanc.upload(other)
    counts = []
    for options, said in [(["--limit", "1"], "1 predicted"), (["--resume"], "2 predicted"), ([], "0 predicted")]:
        capsys.readouterr()
        assert pacs(run, orthanc.dicomweb, "--study", study, "--modality", "CR", *options) == 0
        assert said in capsys.readouterr().out
        counts.append(len(orthanc.study_instances(study)))
    assert counts == [4 + 2, 4 + 6, 4 + 6]  # the OT instance: not CR, so no result
    ot = pydicom.dcmread(other)
    meta = json.loads((run / "meta.json").read_text())
    assert not orthanc.lookup(report_uids(ot, meta["model_id"])["sop"])


def test_basic_auth_from_the_environment(run, tmp_path, capsys, monkeypatch):
    [path] = write_dicomized(write_images(tmp_path / "pics", 1, size=64, seed=3), tmp_path / "dicom", modality="CR")
    with running_orthanc(tmp_path / "orthanc", users={"doctor": "s3cret"}) as orthanc:
        orthanc.upload(path)
        capsys.readouterr()
        assert pacs(run, orthanc.dicomweb) == 2
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "ULTRASONIC_PACS_USER" in err
        monkeypatch.setenv("ULTRASONIC_PACS_USER", "doctor")
        monkeypatch.setenv("ULTRASONIC_PACS_PASSWORD", "s3cret")
        assert pacs(run, orthanc.dicomweb) == 0
        assert "1 predicted" in capsys.readouterr().out
        assert orthanc.count() == 3


def test_a_pacs_that_is_down_is_one_error_line_and_nothing_written(run, tmp_path, capsys):
    fhir = tmp_path / "report.json"
    assert pacs(run, f"http://127.0.0.1:{free_port()}/dicom-web", "--format", "fhir", "--fhir-out", str(fhir)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no PACS answers there" in err[0], err
    assert not fhir.exists()


class _Failing(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 500 and records what it was sent."""
    seen: list[tuple[str, str, str | None]] = []

    def do_GET(self):
        self.seen.append(("GET", self.path, self.headers.get("Authorization")))
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"internal error")

    def do_POST(self):
        self.seen.append(("POST", self.path, None))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_a_search_answered_500_is_one_error_line_nothing_stored_and_the_token_was_sent(run, tmp_path, capsys,
                                                                                        monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ULTRASONIC_PACS_TOKEN", "t0ken")
    fhir = tmp_path / "report.json"
    try:
        url = f"http://127.0.0.1:{server.server_port}/dicom-web"
        assert pacs(run, url, "--format", "fhir", "--fhir-out", str(fhir)) == 2
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HTTP 500" in err[0] and "search (QIDO-RS)" in err[0], err
    assert [m for m, _, _ in _Failing.seen] == ["GET"]  # no retry storm, no STOW
    assert _Failing.seen[0][2] == "Bearer t0ken"
    assert not fhir.exists()


def test_an_image_the_gate_refuses_gets_a_result_without_a_finding(tmp_path, capsys):
    """With the run's OOD gate: a lesion image (like the training images) gets its coded finding; a
    gradient (not like them) gets an SR that says so and carries no finding."""
    run = gated_run(tmp_path / "gated", size=32)
    inside, _, _ = lesion_images(1, size=32, seed=11)
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.float64)[None, :], (64, 1)).astype(np.uint8)
    Image.fromarray(inside[0, ..., 0]).save(tmp_path / "inside.png")
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    like, unlike = study_of([tmp_path / "inside.png", tmp_path / "ramp.png"], tmp_path / "dicom",
                            "1.2.826.0.1.3680043.10.1.4")
    meta = json.loads((run / "meta.json").read_text())
    with running_orthanc(tmp_path / "orthanc") as orthanc:
        for path in (like, unlike):
            orthanc.upload(path)
        capsys.readouterr()
        assert pacs(run, orthanc.dicomweb) == 0
        assert "(1 refused as not like the training images)" in capsys.readouterr().out
        findings = {}
        for path in (like, unlike):
            sr_file = tmp_path / f"{path.stem}.sr.dcm"
            sr_file.write_bytes(orthanc.instance_file(report_uids(pydicom.dcmread(path), meta["model_id"])["sop"]))
            sr = hd.sr.srread(sr_file)
            findings[path] = hd.sr.utils.find_content_items(sr, name=C.FINDING, recursive=True)
            comments = hd.sr.utils.find_content_items(sr, name=C.COMMENT, recursive=True)
            if path == unlike:
                assert any("not like the training images" in c.TextValue for c in comments)
        assert findings[like] and not findings[unlike]
