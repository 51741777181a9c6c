"""The service: the audit log and overlay store on their own, then `ultrasonic serve` as a real uvicorn
server on loopback, every endpoint over HTTP, bad uploads, the token, and the audit log across a restart."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live_server import LiveServer, png_bytes
from ultrasonic.errors import ConfigError
from ultrasonic.serve.audit import AuditLog
from ultrasonic.serve.cams import CamStore
from ultrasonic.serve.settings import ServeSettings
from shared_data import SHARED_DATA

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

DICOM = SHARED_DATA / "dicom" / "RG1_J2KI.dcm"
ROW_KEYS = {"id", "time", "model_id", "sha256", "file", "class", "probabilities", "threshold", "client",
            "ood_score", "in_distribution", "message", "prev_hash", "hash"}
LIMIT_MB = 1
MAX_PIXELS = 5_000_000  # above the 3.6 Mpx chest DICOM


def _record(log: AuditLog, k: int) -> int:
    return log.record(model_id="m1", sha256=f"{k:064x}", file=f"img{k}.png", label="pneumonia",
                      probabilities={"normal": 0.25, "pneumonia": 0.75}, threshold=0.5, client="127.0.0.1")


def test_audit_log_pages_newest_first_and_survives_reopening(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite")
    ids = [_record(log, k) for k in range(5)]
    again = AuditLog(tmp_path / "audit.sqlite")
    assert again.count() == 5
    page = again.page(limit=2, offset=1)
    assert [r["id"] for r in page] == [ids[3], ids[2]]
    assert set(page[0]) == ROW_KEYS and page[0]["probabilities"] == {"normal": 0.25, "pneumonia": 0.75}
    assert page[0]["time"].endswith("+00:00")  # ISO 8601 in UTC


def test_audit_log_takes_concurrent_writers(tmp_path):
    log = AuditLog(tmp_path / "audit.sqlite")
    ids: list[int] = []
    threads = [threading.Thread(target=lambda k=k: ids.extend(_record(log, 10 * k + j) for j in range(10)))
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 80 and log.count() == 80


def test_audit_log_in_an_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="cannot open the audit log"):
        AuditLog(tmp_path / "file" / "audit.sqlite")


def test_cam_store_keeps_only_the_most_recently_used():
    store = CamStore(capacity=2)
    store.put(1, b"a")
    store.put(2, b"b")
    assert store.get(1) == b"a"  # 1 is now more recent than 2
    store.put(3, b"c")
    assert store.get(2) is None and store.get(1) == b"a" and store.get(3) == b"c" and len(store) == 2


@pytest.mark.parametrize("bad", [dict(max_upload_mb=0), dict(max_pixels=0), dict(token=" ")])
def test_settings_refuse_nonsense(bad):
    with pytest.raises(ConfigError):
        ServeSettings(**bad)


# ---- a real server -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("audit") / "audit.sqlite"


@pytest.fixture(scope="module")
def server(run_dir, db, tmp_path_factory):
    live = LiveServer(run_dir, tmp_path_factory.mktemp("log") / "server.log", "--db", str(db),
                      "--max-upload-mb", str(LIMIT_MB), "--max-pixels", str(MAX_PIXELS))
    yield live
    live.stop()


def _image(run_dir: Path, cls: str, k: int = 0) -> Path:
    return sorted((run_dir.parent / "data" / cls).glob("*.png"))[k]


def _post(server, name: str, data: bytes, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/predict", files={"file": (name, data)}, timeout=60, **kwargs)


@pytest.mark.e2e
def test_health_model_page_and_docs(server, run_dir):
    meta = json.loads((run_dir / "meta.json").read_text())
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "model_id": meta["model_id"]}
    model = httpx.get(server.url + "/model").json()
    assert model["classes"] == ["normal", "pneumonia"] and model["image_size"] == [32, 32]
    assert model["channels"] == 1 and model["positive_class"] == "pneumonia"
    assert model["threshold"] == pytest.approx(meta["threshold"])
    on_disk = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert model["metrics"] == {k: v for k, v in on_disk.items() if k != "evaluated_on"}  # no server path
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    offline = page.text.replace("http://www.w3.org/2000/svg", "")  # the inline favicon's namespace, not a fetch
    assert "<script" in page.text and "http://" not in offline and "https://" not in offline  # no CDN
    assert httpx.get(server.url + "/docs").status_code == 200
    assert "/predict" in httpx.get(server.url + "/openapi.json").json()["paths"]


@pytest.mark.e2e
def test_predict_answers_like_the_predict_command(server, run_dir):
    from ultrasonic import Predictor

    path = _image(run_dir, "pneumonia")
    data = path.read_bytes()
    reply = _post(server, "scan.png", data, params={"heatmap": "true"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = Predictor(run_dir).predict_files([path])[0]
    assert body["file"] == "scan.png" and body["class"] == expected["class"]
    assert body["threshold"] == pytest.approx(expected["threshold"])
    for name, p in expected["probabilities"].items():
        assert body["probabilities"][name] == pytest.approx(p, abs=1e-4)
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["model_id"] == json.loads((run_dir / "meta.json").read_text())["model_id"]
    assert body["cam_url"] == f"/cam/{body['id']}.png" and "cam_png_base64" not in body


@pytest.mark.e2e
def test_grad_cam_overlay_by_url_and_base64(server, run_dir):
    data = _image(run_dir, "pneumonia", 1).read_bytes()
    by_url = _post(server, "a.png", data, params={"heatmap": "true"}).json()
    cam = httpx.get(server.url + by_url["cam_url"])
    assert cam.status_code == 200 and cam.headers["content-type"] == "image/png"
    overlay = Image.open(io.BytesIO(cam.content))
    assert overlay.format == "PNG" and min(overlay.size) >= 32
    inline = _post(server, "a.png", data, params={"cam": "base64"}).json()
    assert base64.b64decode(inline["cam_png_base64"]) == cam.content  # same image, same overlay
    missing = httpx.get(server.url + "/cam/999999.png")
    assert missing.status_code == 404 and "predict the image again" in missing.json()["detail"]


@pytest.mark.e2e
def test_jpeg_upload_content_is_sniffed_not_the_name(server, run_dir):
    buffer = io.BytesIO()
    Image.open(_image(run_dir, "normal")).save(buffer, format="JPEG", quality=95)
    reply = _post(server, "named_like_a.png", buffer.getvalue())
    assert reply.status_code == 200 and reply.json()["class"] in ("normal", "pneumonia")


@pytest.mark.e2e
def test_predictions_page_through_the_audit_log(server, run_dir):
    sent = [_image(run_dir, "normal", k).read_bytes() for k in range(3)]
    ids = [_post(server, f"n{k}.png", data).json()["id"] for k, data in enumerate(sent)]
    first = httpx.get(server.url + "/predictions", params={"limit": 2})
    assert first.status_code == 200 and int(first.headers["x-total-count"]) >= 3
    rows = first.json()
    assert [r["id"] for r in rows] == [ids[2], ids[1]]  # newest first
    second = httpx.get(server.url + "/predictions", params={"limit": 2, "offset": 2}).json()
    assert second[0]["id"] == ids[0]
    for row in (*rows, second[0]):
        assert set(row) == ROW_KEYS
        assert row["client"] == "127.0.0.1" and row["time"].endswith("+00:00")
    assert rows[0]["sha256"] == hashlib.sha256(sent[2]).hexdigest()
    assert rows[0]["file"] is None  # no token: names are not served (tests/serve/test_audit_page.py)


def _truncated_png() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))[:300]


def _chunks(data: bytes, size: int = 64 * 1024):
    for k in range(0, len(data), size):
        yield data[k:k + size]


BIG = bytes(LIMIT_MB * 2**20 + 1)
BAD_UPLOADS = {
    "text named .png": (dict(files={"file": ("notes.png", b"patient notes, not an image")}), 415, "not a recognised"),
    "empty file": (dict(files={"file": ("empty.png", b"")}), 415, "empty"),
    "truncated png": (dict(files={"file": ("cut.png", _truncated_png())}), 415, "corrupt"),
    "pixel bomb": (dict(files={"file": ("bomb.png", png_bytes(np.zeros((2000, 3000), np.uint8)))}), 413,
                   "decompression bomb"),
    "file too large": (dict(files={"file": ("big.png", BIG)}), 413, "--max-upload-mb"),
    "chunked, too large": (dict(content=_chunks(b"--x\r\n" + BIG * 2), headers={
        "content-type": "multipart/form-data; boundary=x"}), 413, "--max-upload-mb"),
    "all-black image": (dict(files={"file": ("black.png", png_bytes(np.zeros((64, 64), np.uint8)))}), 422,
                        "blank or too small to classify"),
    "1x1 image": (dict(files={"file": ("dot.png", png_bytes(np.full((1, 1), 128, np.uint8)))}), 422,
                  "blank or too small to classify"),
    "no file field": (dict(data={"image": "x"}), 422, "field 'file'"),
    "json body": (dict(json={"file": "a.png"}), 422, "field 'file'"),
    "bad cam option": (dict(files={"file": ("a.png", b"x")}, params={"cam": "inline"}), 422, "cam"),
}


@pytest.mark.e2e
def test_bad_uploads_get_a_4xx_json_error_a_person_can_act_on(server):
    for case, (request, status, words) in BAD_UPLOADS.items():
        reply = httpx.post(server.url + "/predict", timeout=60, **request)
        assert reply.status_code == status, (case, reply.text)
        assert words in reply.json()["detail"], (case, reply.text)
    bad_page = httpx.get(server.url + "/predictions", params={"limit": 0})
    assert bad_page.status_code == 422 and "limit" in bad_page.json()["detail"]
    log = server.log()
    assert "Traceback" not in log and " 500 " not in log, log  # no bad input reaches a bug


@pytest.mark.e2e
def test_a_declared_oversized_upload_is_refused_before_its_body_is_sent(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 100000000\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):  # no body sent: only an early answer can arrive; read until closed
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413") and b"--max-upload-mb" in answer


@pytest.mark.e2e
def test_an_image_unlike_the_training_images_gets_no_class_and_the_audit_log_says_so(server):
    gradient = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))  # all-black would be refused as blank
    reply = _post(server, "gradient.png", png_bytes(gradient))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["class"] is None and body["in_distribution"] is False
    assert body["message"].startswith("not like the training images") and body["ood_score"] > 0
    assert set(body["probabilities"]) == {"normal", "pneumonia"}  # the model's answer stays visible
    logged = next(r for r in httpx.get(server.url + "/predictions", timeout=60).json() if r["id"] == body["id"])
    assert logged["class"] is None and logged["in_distribution"] is False
    assert logged["ood_score"] == pytest.approx(body["ood_score"]) and logged["message"] == body["message"]
    assert httpx.get(server.url + "/model").json()["ood"]["action"] == "abstain"


@pytest.mark.e2e
def test_dicom_upload(server):
    if not DICOM.exists():
        pytest.skip(f"{DICOM} is absent (the shared data folder is not mounted)")
    from ultrasonic.data.io import read_image
    from ultrasonic.errors import BadImageError

    try:
        read_image(DICOM, 32, 1)
    except BadImageError as exc:
        pytest.skip(f"this installation cannot read DICOM yet: {exc}")
    reply = _post(server, DICOM.name, DICOM.read_bytes(), params={"cam": "base64"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    # a real radiograph is not like the tiny run's synthetic images: the gate may refuse it a class
    assert body["file"] == "RG1_J2KI.dcm" and (body["class"] in ("normal", "pneumonia") or body["message"])
    assert Image.open(io.BytesIO(base64.b64decode(body["cam_png_base64"]))).format == "PNG"


@pytest.mark.e2e
def test_restart_keeps_the_audit_log_and_the_token_guards_patient_data(server, run_dir, db, tmp_path):
    before = httpx.get(server.url + "/predictions", params={"limit": 1000}).json()
    assert before, "earlier tests made predictions"
    server.stop()
    token = "s3cret-token"
    again = LiveServer(run_dir, tmp_path / "server2.log", "--db", str(db), "--token", token)
    try:
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(again.url + "/health").status_code == 200  # open: for load balancers
        assert httpx.get(again.url + "/").status_code == 200  # open: the page asks for the token
        for path in ("/predictions", "/cam/1.png"):
            refused = httpx.get(again.url + path, headers={"Authorization": "Bearer wrong"})
            assert refused.status_code == 401 and "Authorization: Bearer" in refused.json()["detail"]
        assert _post(again, "a.png", b"x").status_code == 401  # refused before the body is read
        after = httpx.get(again.url + "/predictions", params={"limit": 1000}, headers=auth).json()
        assert [{**r, "file": None} for r in after] == before  # every row, from the file the first server wrote
        assert all(r["file"] for r in after)  # behind the token, with its name
        data = _image(run_dir, "normal").read_bytes()
        new = _post(again, "late.png", data, headers=auth, params={"heatmap": "true"}).json()
        assert new["id"] > max(r["id"] for r in before)
        assert httpx.get(again.url + new["cam_url"], headers=auth).status_code == 200
    finally:
        again.stop()


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")  # newer Starlette's nudge
def test_a_bug_of_ours_is_a_logged_json_500_not_a_traceback(run_dir, tmp_path):
    import logging

    from fastapi.testclient import TestClient

    from ultrasonic.serve.app import create_app

    app = create_app(run_dir, ServeSettings(db=tmp_path / "audit.sqlite"))

    def broken_disk(**_):
        raise OSError("disk full")

    app.state.service.audit.record = broken_disk
    client = TestClient(app, raise_server_exceptions=False)
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)  # our own: the CLI's logger setup may stop propagation to caplog
    logging.getLogger("ultrasonic").addHandler(handler)
    try:
        reply = client.post("/predict", files={"file": ("a.png", _image(run_dir, "normal").read_bytes())})
    finally:
        logging.getLogger("ultrasonic").removeHandler(handler)
    assert reply.status_code == 500 and reply.json() == {"detail": "internal error in the service; its log has "
                                                                   "the details"}
    assert "unexpected error on POST /predict" in logged.getvalue() and "disk full" in logged.getvalue()


@pytest.mark.e2e
@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_a_decoder_failure_is_a_422_naming_it_and_a_decoder_warning_a_note(run_dir, tmp_path):
    """Any exception a decoder raises on an upload (crashing_decoder.py: inside Pillow) is a 422 saying why."""
    from crashing_decoder import NOTE, crash_files, crashing_decoder, noted_png
    from fastapi.testclient import TestClient

    from ultrasonic.serve.app import create_app

    app = create_app(run_dir, ServeSettings(db=tmp_path / "audit.sqlite"))
    client = TestClient(app, raise_server_exceptions=False)
    with crashing_decoder():
        for name, (data, start) in crash_files().items():
            reply = client.post("/predict", files={"file": (name, data)})
            assert reply.status_code == 422, (name, reply.text)
            assert reply.json()["detail"].startswith(f"{name}: {start}") and "convert it to PNG" in reply.text
        noted = client.post("/predict", files={"file": ("noted.png", noted_png())})
    assert noted.status_code == 200 and noted.json()["note"] == NOTE
    assert app.state.service.audit.count() == 1  # the prediction; no refused upload is logged
