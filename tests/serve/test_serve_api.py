"""The service's API promises on a real uvicorn (tests/live_server.py): inputs that once gave a 500 (an
L*a*b* TIFF, an offset past SQLite's integers), one JSON error shape even from uvicorn's own parser, the
OpenAPI schema a generated client relies on, /docs with no external host, and privacy by default (no file
name in the log, a 0600 audit log, no server path in /model, no public address without a token)."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image, ImageCms

from live_server import LiveServer, png_bytes

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

SECRET_NAME = "Doe_Jane_MRN0012345.png"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return tmp_path_factory.mktemp("api_audit") / "audit.sqlite"


@pytest.fixture(scope="module")
def server(tiny_run, db, tmp_path_factory):
    live = LiveServer(tiny_run, tmp_path_factory.mktemp("api_log") / "server.log", "--db", str(db))
    yield live
    live.stop()


def _post(server, files, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/predict", files=files, timeout=60, **kwargs)


def _lab_tiff(lab: Image.Image) -> bytes:
    buffer = io.BytesIO()
    lab.save(buffer, format="TIFF")
    return buffer.getvalue()


@pytest.mark.e2e
@pytest.mark.once
def test_an_lab_tiff_is_read_as_its_colours_and_a_flat_one_is_a_422(server):
    rng = np.random.default_rng(3)
    lab = Image.frombytes("LAB", (48, 48), rng.integers(0, 256, (48, 48, 3), dtype=np.uint8).tobytes())
    to_srgb = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    as_rgb = ImageCms.applyTransform(lab, to_srgb)  # the colours a colour-managed viewer shows
    from_tiff = _post(server, {"file": ("lab.tif", _lab_tiff(lab))})
    from_png = _post(server, {"file": ("rgb.png", png_bytes(np.asarray(as_rgb)))})
    assert from_tiff.status_code == 200, from_tiff.text
    assert from_tiff.json()["probabilities"] == from_png.json()["probabilities"]  # the same pixels reached the model
    flat = _post(server, {"file": ("flat.tif", _lab_tiff(Image.new("LAB", (48, 48))))})
    assert flat.status_code == 422 and "blank" in flat.json()["detail"]


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.parametrize("params", [{"offset": 2**63}, {"offset": 10**30}, {"offset": -1}, {"limit": 2**64}])
def test_query_numbers_past_sqlite_integers_are_a_422(server, params):
    reply = httpx.get(server.url + "/predictions", params=params, timeout=30)
    assert reply.status_code == 422, reply.text
    assert next(iter(params)) in reply.json()["detail"]


@pytest.mark.e2e
@pytest.mark.once
def test_more_than_one_file_part_is_a_422_that_says_so(server, tiny_run):
    image = sorted((tiny_run.parent / "data" / "normal").glob("*.png"))[0].read_bytes()
    before = int(httpx.get(server.url + "/predictions").headers["x-total-count"])
    reply = _post(server, [("file", ("a.png", image)), ("file", ("b.png", image)), ("file", ("c.png", image))])
    assert reply.status_code == 422 and "3 parts named 'file'" in reply.json()["detail"]
    assert int(httpx.get(server.url + "/predictions").headers["x-total-count"]) == before  # none predicted


def _raw(server, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.parametrize("request_bytes", [
    b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
])
def test_a_request_uvicorn_cannot_parse_gets_a_json_400(server, request_bytes):
    head, _, body = _raw(server, request_bytes).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and b"content-type: application/json" in head.lower()
    assert "malformed HTTP request" in json.loads(body)["detail"]


@pytest.mark.e2e
@pytest.mark.once
def test_the_schema_tells_generated_clients_the_truth(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    body = spec["components"]["schemas"]["Body_predict_predict_post"]["properties"]["file"]
    assert body["type"] == "string" and body["format"] == "binary"
    assert "securitySchemes" not in spec.get("components", {})  # no token: no Authorize button, no 401
    expected = {"/predict": {"200", "400", "413", "415", "422", "503"}, "/predictions": {"200", "422"},
                "/cam/{cam_id}.png": {"200", "404", "422"}, "/preview/{preview_id}.png": {"200", "404", "422"},
                "/model": {"200"}, "/health": {"200"}}
    for path, statuses in expected.items():
        (operation,) = spec["paths"][path].values()
        assert set(operation["responses"]) == statuses, path
        assert "security" not in operation
        for status, response in operation["responses"].items():
            schema = response["content"].get("application/json", {}).get("schema", {})
            if status != "200":
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
    refs = {path: spec["paths"][path]["get" if path != "/predict" else "post"]["responses"]["200"]["content"]
            ["application/json"]["schema"] for path in ("/predict", "/model", "/health", "/predictions")}
    assert refs["/predict"] == {"$ref": "#/components/schemas/Prediction"}
    assert refs["/predictions"]["items"] == {"$ref": "#/components/schemas/AuditRow"}
    assert spec["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"


@pytest.mark.e2e
@pytest.mark.once
def test_docs_load_from_the_service_alone(server):
    page = httpx.get(server.url + "/docs")
    assert page.status_code == 200
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", page.text), page.text  # no host but this one
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3 and all(a.startswith("/docs/assets/") for a in assets)
    for asset in assets:
        reply = httpx.get(server.url + asset)
        assert reply.status_code == 200 and len(reply.content) > 500, asset
    assert "SwaggerUIBundle" in httpx.get(server.url + "/docs/assets/swagger-ui-bundle.js").text


@pytest.mark.e2e
@pytest.mark.once
def test_private_by_default_no_name_in_the_log_a_0600_audit_log_no_path_in_model(server, tiny_run, db):
    image = sorted((tiny_run.parent / "data" / "pneumonia").glob("*.png"))[0].read_bytes()
    reply = _post(server, {"file": (SECRET_NAME, image)})
    assert reply.status_code == 200 and reply.json()["file"] == SECRET_NAME  # the client gets its name back
    log = server.log()
    assert "Doe_Jane" not in log and "MRN0012345" not in log
    assert f"sha256:{reply.json()['sha256'][:12]}" in log
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        assert not path.exists() or stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    model = httpx.get(server.url + "/model").text
    assert "evaluated_on" not in model and str(tiny_run.parent) not in model and "/tmp" not in model
    assert '"roc_auc"' in model or '"intervals"' in model  # the figures are still there


def _serve(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ULTRASONIC_TOKEN"}
    return subprocess.run([sys.executable, "-m", "ultrasonic.cli", "serve", *args], capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_a_public_address_without_a_token_refuses_to_start(tmp_path, host):
    done = _serve(str(tmp_path / "no_run"), "--host", host)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --host") and "--token" in lines[0] \
        and "--insecure" in lines[0], done.stderr


def test_insecure_or_a_token_lets_a_public_address_past_the_check(tmp_path):
    for extra in (["--insecure"], ["--token", "s3cret"]):
        done = _serve(str(tmp_path / "no_run"), "--host", "0.0.0.0", *extra)
        assert done.returncode == 2 and "--host" not in done.stderr, done.stderr  # it got as far as the run
