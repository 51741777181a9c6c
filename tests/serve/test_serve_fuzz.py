"""Fuzz `POST /predict` of one real `ultrasonic serve`: hostile bytes get 200 or a 4xx JSON error, never a 5xx.

One uvicorn server (tests/live_server.py) is started for the module and takes
every example: random bytes behind image signatures, valid PNG/JPEG/BMP/TIFF/
DICOM files with flipped bytes, cuts, insertions and spliced headers (the
mutations of tests/test_fuzz_read_image.py, which fuzzes read_image itself),
odd file names, and multipart framing that is itself damaged. The property
of each answer: 200 with the full prediction row for exactly the bytes sent,
or a 4xx with a JSON {"detail": "..."}. At the end (the server fixture's
teardown, so in any test order) the server is still up, logged no traceback,
and its audit log holds one row per 200 and no other.

Bounded for CI (about 150 examples, derandomised, so CI sees the same inputs
every time); ULTRASONIC_SERVE_FUZZ_EXAMPLES scales it for a longer hunt.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from live_server import LiveServer

# tests/data, where the read_image fuzz lives, is on sys.path only once pytest has collected it: this file
# must import it in any order, and alone
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_fuzz_read_image import SEEDS, mutated  # noqa: E402  (its seeds and mutations, not a copy)

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

pytestmark = [pytest.mark.e2e, pytest.mark.once]  # the tiny run: shared with tests/test_serve.py

SCALE = float(os.environ.get("ULTRASONIC_SERVE_FUZZ_EXAMPLES", "150")) / 150


def fuzz(examples: int):
    """Hypothesis settings: `examples` (scaled), derandomised, no deadline (a request may wait on the model)."""
    return settings(max_examples=max(1, round(examples * SCALE)), deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


ROW_KEYS = {"id", "file", "class", "threshold", "probabilities", "model_id", "sha256", "cam_url", "ood_score",
            "in_distribution", "preview_url", "heatmap_empty"}
SIGNATURES = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"\x00" * 128 + b"DICM"]
NAMES = st.one_of(st.sampled_from(["scan.png", "x.jpeg", "a.dcm", "", "../../etc/passwd", "C:\\x\\y.tif",
                                   "a" * 400 + ".png", "naïve 画像.bmp", 'q"uote;.png', "%00.png"]),
                  st.text(max_size=40))
BOUNDARY = "fuzzboundary"


@st.composite
def spliced(draw) -> bytes:
    """The start of one valid file (its header) glued onto the rest of another."""
    head, body = (SEEDS[draw(st.sampled_from(sorted(SEEDS)))] for _ in range(2))
    cut = draw(st.integers(1, min(len(head), 300)))
    return head[:cut] + body[draw(st.integers(0, len(body))):]


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    """One server for the whole module (default limits), with a fresh audit log.

    After the module's last test, whichever it is, the fixture checks what the fuzz left
    (check_server_after_the_fuzz); a failure there is reported as an error of that test.
    """
    folder = tmp_path_factory.mktemp("serve_fuzz")
    live = LiveServer(tiny_run, folder / "server.log", "--db", str(folder / "audit.sqlite"))
    live.answered_200 = []  # ids of the predictions the fuzz got; checked against the audit log at the end
    live.classes = httpx.get(live.url + "/model").json()["classes"]
    yield live
    try:
        check_server_after_the_fuzz(live)
    finally:
        live.stop()


def check_server_after_the_fuzz(server) -> None:
    """The fuzz left a healthy server, no traceback in its log, and one audit row per 200 and no other."""
    assert server.process.poll() is None, server.log()
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"
    logged, total = [], None
    while total is None or len(logged) < total:
        page = httpx.get(server.url + "/predictions", params={"limit": 1000, "offset": len(logged)}, timeout=30)
        total = int(page.headers["x-total-count"])
        logged += [row["id"] for row in page.json()]
        if not page.json():
            break
    assert total == len(server.answered_200) and sorted(logged) == sorted(server.answered_200)
    log = server.log()
    assert "Traceback" not in log and " 500 " not in log, log[-5000:]


def check_answer(server, reply: httpx.Response, sent: bytes | None) -> None:
    """200 with a valid row for `sent` (None: the file bytes are unknown), or a 4xx JSON error."""
    event(f"HTTP {reply.status_code}")  # --hypothesis-show-statistics: how often each answer came
    assert reply.status_code == 200 or 400 <= reply.status_code < 500, (reply.status_code, reply.text[:500])
    assert reply.headers["content-type"].startswith("application/json"), reply.headers
    body = reply.json()
    if reply.status_code != 200:
        assert isinstance(body, dict) and isinstance(body.get("detail"), str) and body["detail"], body
        return
    # a note: the decoder warned about the file; a message: the gate found it unlike the training images
    assert ROW_KEYS <= set(body) <= ROW_KEYS | {"note", "message"}, body
    if body["in_distribution"] is False:  # --ood abstain: no class, the reason in the message
        assert body["class"] is None and body["message"].startswith("not like the training images"), body
    else:
        assert body["class"] in server.classes and "message" not in body, body
    assert set(body["probabilities"]) == set(server.classes)
    assert sum(body["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    assert body["cam_url"] is None and len(body["sha256"]) == 64  # no ?heatmap=true: no Grad-CAM
    assert body["preview_url"] == f"/preview/{body['id']}.png"
    assert isinstance(body["file"], str) and len(body["file"]) <= 255
    if sent is not None:
        assert body["sha256"] == hashlib.sha256(sent).hexdigest()
    server.answered_200.append(body["id"])


def post_file(server, name: str, data: bytes, content_type: str | None) -> httpx.Response:
    file = (name, data) if content_type is None else (name, data, content_type)
    return httpx.post(server.url + "/predict", files={"file": file}, timeout=120)


@fuzz(70)
@given(data=st.one_of(mutated(), spliced()), name=NAMES,
       content_type=st.sampled_from([None, "image/png", "application/octet-stream", "text/plain", "\x7f/\x00"]))
def test_mutated_images_get_a_prediction_or_a_4xx(server, data, name, content_type):
    check_answer(server, post_file(server, name, data, content_type), data)  # asserts: 200 and a valid row, or a 4xx


@fuzz(40)
@given(data=st.binary(max_size=4096), prefix=st.sampled_from(SIGNATURES), name=NAMES)
def test_random_bytes_get_a_4xx_or_a_prediction(server, data, prefix, name):
    check_answer(server, post_file(server, name, prefix + data, None), prefix + data)  # 200 and a valid row, or a 4xx


@st.composite
def damaged_multipart(draw) -> tuple[bytes, str]:
    """A multipart body carrying a valid image whose framing (boundaries, part headers) is damaged."""
    image = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    head = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    head, tail = bytearray(head), bytearray(tail)
    for _ in range(draw(st.integers(1, 3))):
        part = draw(st.sampled_from([head, tail]))
        at = draw(st.integers(0, len(part)))
        how = draw(st.sampled_from(["flip", "cut", "insert"]))
        if how == "flip" and at < len(part):
            part[at] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del part[at:at + draw(st.integers(1, 20))]
        else:
            part[at:at] = draw(st.binary(min_size=1, max_size=40))
    content_type = draw(st.sampled_from([f"multipart/form-data; boundary={BOUNDARY}", "multipart/form-data",
                                         "multipart/form-data; boundary=", "multipart/form-data; boundary=other",
                                         "application/x-www-form-urlencoded", "image/png"]))
    return bytes(head) + image + bytes(tail), content_type


@fuzz(40)
@given(request=damaged_multipart())
def test_damaged_multipart_framing_gets_a_4xx_or_a_prediction(server, request):
    body, content_type = request
    reply = httpx.post(server.url + "/predict", content=body, headers={"content-type": content_type}, timeout=120)
    check_answer(server, reply, None)  # the file part, if any survives, is not known exactly


def test_text_in_the_file_field_is_a_422_saying_what_to_send(server):
    """Found by the fuzz: a part without a file name reaches FastAPI as text; say so, not 'Expected UploadFile'."""
    for request in (dict(files={"file": ("", SEEDS["png_gray"])}), dict(data={"file": "scan.png"})):
        reply = httpx.post(server.url + "/predict", timeout=60, **request)
        assert reply.status_code == 422 and "holds text, not a file" in reply.json()["detail"], reply.text

