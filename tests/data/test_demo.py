"""Demo data: an md5-checked download from a local server, and the synthetic fallback offline."""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading

import numpy as np
import pytest

from ultrasonic.data.demo import DownloadError, demo_file, download
from ultrasonic.data.sources import open_npz

PAYLOAD_BUFFER = io.BytesIO()
np.savez(PAYLOAD_BUFFER, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=np.array([0, 1, 0, 1]))
PAYLOAD = PAYLOAD_BUFFER.getvalue()
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 must not go through a proxy set in the environment."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def server():
    """A local HTTP server on a free port serving PAYLOAD at /demo.npz; .requests counts GETs."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path != "/demo.npz":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.requests = requests
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def closed_url():
    """A URL on a local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/demo.npz"


def test_download_saves_the_file_and_reuses_it(tmp_path, server):
    target = tmp_path / "cache" / "demo.npz"
    assert download(f"{server.url}/demo.npz", target, PAYLOAD_MD5, timeout=5) == target
    assert target.read_bytes() == PAYLOAD
    assert server.requests == ["/demo.npz"]

    assert download(f"{server.url}/demo.npz", target, PAYLOAD_MD5, timeout=5) == target
    assert server.requests == ["/demo.npz"]  # no second request


def test_wrong_md5_is_an_error_and_leaves_no_file(tmp_path, server):
    with pytest.raises(DownloadError, match=f"md5 {PAYLOAD_MD5} does not match the expected 0+$"):
        download(f"{server.url}/demo.npz", tmp_path / "demo.npz", "0" * 32, timeout=5)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary file


def test_http_error_is_a_download_error(tmp_path, server):
    with pytest.raises(DownloadError, match="Not Found"):
        download(f"{server.url}/missing.npz", tmp_path / "demo.npz", PAYLOAD_MD5, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_is_a_download_error(tmp_path, closed_url):
    with pytest.raises(DownloadError, match=f"^{closed_url}: "):
        download(closed_url, tmp_path / "demo.npz", PAYLOAD_MD5, timeout=5)
    assert not (tmp_path / "demo.npz").exists()


def test_demo_file_downloads_from_the_configured_url(tmp_path, server, monkeypatch):
    monkeypatch.setenv("ULTRASONIC_DEMO_URL", f"{server.url}/demo.npz")
    monkeypatch.setenv("ULTRASONIC_DEMO_MD5", PAYLOAD_MD5)
    path = demo_file(tmp_path)
    assert path == tmp_path / "pneumoniamnist.npz" and path.read_bytes() == PAYLOAD


def test_demo_file_falls_back_to_synthetic_when_offline(tmp_path, closed_url, monkeypatch):
    monkeypatch.setenv("ULTRASONIC_DEMO_URL", closed_url)
    path = demo_file(tmp_path)

    assert path.parent == tmp_path and path.name.startswith("synthetic_lesions")
    assert not (tmp_path / "pneumoniamnist.npz").exists()
    catalog = open_npz(path, ["normal", "pneumonia"])
    assert catalog.arrays.shape == (1200, 64, 64, 1)
    assert {s: catalog.given_split.count(s) for s in ("train", "val", "test")} == {
        "train": 840, "val": 180, "test": 180}
    assert set(catalog.labels.tolist()) == {0, 1}
    assert demo_file(tmp_path) == path  # made once, reused
