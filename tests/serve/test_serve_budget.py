"""The decoding budget (serve/budget.py): unit tests of the byte semaphore and the estimates, and the
service's answers through it (503 with Retry-After when full, 413 when one image needs more than all of it).
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ultrasonic.errors import ImageTooLargeError, ServiceBusyError
from ultrasonic.serve.budget import (DEEP16_PIL, DEEP_GREY_DICOM, GREY_DICOM, JPEG, OTHER_PIL, DecodeBudget,
                                     estimate_decoded_bytes)
from live_server import png_bytes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_dicom import make_dicom  # noqa: E402  (the DICOM maker of the decoder's tests)

MB = 2**20


def test_a_request_waits_for_room_and_gets_it_when_another_releases():
    budget = DecodeBudget(10 * MB, wait_s=30)
    budget.acquire(8 * MB, "first")
    threading.Timer(0.3, budget.release, args=(8 * MB,)).start()
    start = time.monotonic()
    assert budget.acquire(5 * MB, "second") == 5 * MB
    assert 0.2 < time.monotonic() - start < 25  # it waited for the release, not for the time-out
    assert budget.in_use == 5 * MB


def test_a_full_budget_times_out_with_a_retry_after():
    budget = DecodeBudget(10 * MB, wait_s=0.2)
    budget.acquire(8 * MB, "first")
    start = time.monotonic()
    with pytest.raises(ServiceBusyError, match=r"^scan.dcm: the service is decoding other images.*again in 1 s") as info:
        budget.acquire(5 * MB, "scan.dcm")
    assert time.monotonic() - start >= 0.15
    assert info.value.retry_after_s == 1
    assert budget.in_use == 8 * MB  # the refused request took nothing


def test_hold_releases_when_decoding_raises_and_an_image_over_the_whole_budget_is_413():
    data = make_dicom(np.zeros((64, 64), np.uint16))
    budget = DecodeBudget(64 * 64 * GREY_DICOM, wait_s=0)
    with pytest.raises(RuntimeError):
        with budget.hold(data, "scan.dcm"):
            assert budget.in_use == 64 * 64 * GREY_DICOM
            raise RuntimeError("the decoder failed")
    assert budget.in_use == 0
    with pytest.raises(ImageTooLargeError, match="more than the whole decoding budget.*--decode-budget-mb"):
        DecodeBudget(64 * 64 * GREY_DICOM - 1).acquire(64 * 64 * GREY_DICOM, "scan.dcm")


def test_no_budget_never_waits():
    budget = DecodeBudget(0, wait_s=60)
    assert budget.acquire(10**12, "huge") == 0 and budget.in_use == 0


def test_estimates_come_from_the_header():
    assert estimate_decoded_bytes(make_dicom(np.zeros((48, 80), np.uint16))) == 48 * 80 * GREY_DICOM
    assert estimate_decoded_bytes(png_bytes(np.zeros((30, 40), np.uint8))) == 30 * 40 * OTHER_PIL
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (50, 20)).save(buffer, format="JPEG")
    assert estimate_decoded_bytes(buffer.getvalue()) == 50 * 20 * JPEG
    assert estimate_decoded_bytes(b"not an image at all") == 0  # the decoder refuses it before any pixel


@pytest.mark.parametrize("kind", ["16-bit DICOM", "32-bit DICOM", "16-bit PNG"])
def test_the_estimate_covers_what_decoding_really_takes(kind, tmp_path):
    """The factors are measured: decoding a 2000 x 2000 image in a process that has its decoders loaded grows
    its memory (peak resident, over what it held just before) by less than the estimate, and by more than a
    third of it."""
    import subprocess

    path, small = tmp_path / "big", tmp_path / "small.dcm"
    ramp = (np.arange(2000 * 2000) % 4000).reshape(2000, 2000)
    if kind == "16-bit PNG":
        path.write_bytes(png_bytes(ramp.astype(np.uint16)))
        per_pixel = DEEP16_PIL
    else:
        path.write_bytes(make_dicom(ramp.astype(np.uint32 if kind.startswith("32") else np.uint16)))
        per_pixel = GREY_DICOM + (2 * DEEP_GREY_DICOM if kind.startswith("32") else 0)
    small.write_bytes(make_dicom((np.arange(64 * 64, dtype=np.uint16) % 4000).reshape(64, 64)))
    # The peak is read as VmHWM after resetting it (clear_refs 5): ru_maxrss would also count the peak of the
    # imports before the decode.
    code = ("import sys; from pathlib import Path; from ultrasonic.data.contain import decode_contained;"
            "status = lambda key: int(Path('/proc/self/status').read_text().split(key + ':')[1].split()[0]);"
            "decode_contained(Path(sys.argv[2]).read_bytes(), (64, 64), 1);"  # the decoders imported, as in a server
            "data = Path(sys.argv[1]).read_bytes();"
            "Path('/proc/self/clear_refs').write_text('5'); now = status('VmRSS');"
            "assert decode_contained(data, (64, 64), 1).error is None;"
            "print((status('VmHWM') - now) * 1024)")
    grown = int(subprocess.run([sys.executable, "-c", code, str(path), str(small)], capture_output=True, text=True,
                               check=True).stdout)
    estimate = estimate_decoded_bytes(path.read_bytes())
    assert estimate == 2000 * 2000 * per_pixel
    assert estimate / 3 < grown <= estimate, (grown, estimate)


# --- through the service ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(tiny_run, tmp_path_factory):
    pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")
    from fastapi.testclient import TestClient

    from ultrasonic.serve import ServeSettings
    from ultrasonic.serve.app import create_app

    db = tmp_path_factory.mktemp("budget") / "audit.sqlite"
    # room for one 1000 x 1000 grey DICOM being decoded, not for two
    app = create_app(tiny_run, ServeSettings(db=db, decode_budget_mb=1.5 * 1000 * 1000 * GREY_DICOM / MB,
                                             budget_wait_s=0))
    return TestClient(app, raise_server_exceptions=False)


def big_dicom() -> bytes:
    return make_dicom((np.arange(1000 * 1000, dtype=np.uint16) % 3000).reshape(1000, 1000))


@pytest.mark.e2e
@pytest.mark.once
def test_a_second_big_upload_while_one_decodes_gets_503_with_retry_after_then_200(client):
    budget = client.app.state.service.budget
    data = big_dicom()
    with budget.hold(data, "the other upload"):  # a concurrent upload of the same file, decoding now
        busy = client.post("/predict", files={"file": ("b.dcm", data)})
    assert busy.status_code == 503, busy.text
    assert busy.headers["retry-after"] == "1"
    assert busy.json()["detail"].startswith("b.dcm: the service is decoding other images")
    assert budget.in_use == 0
    done = client.post("/predict", files={"file": ("b.dcm", data)})
    assert done.status_code == 200, done.text
    assert budget.in_use == 0  # released after decoding


@pytest.mark.e2e
@pytest.mark.once
def test_an_image_over_the_whole_budget_is_413_and_503_is_documented(client):
    huge = make_dicom(np.zeros((1300, 1300), np.uint16))
    answer = client.post("/predict", files={"file": ("huge.dcm", huge)})
    assert answer.status_code == 413 and "--decode-budget-mb" in answer.json()["detail"]
    responses = client.get("/openapi.json").json()["paths"]["/predict"]["post"]["responses"]
    assert "503" in responses and "Retry-After" in responses["503"]["description"]
