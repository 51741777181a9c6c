"""Slow and lying clients against a real `ultrasonic serve` (uvicorn), with real sockets on loopback.

The server runs with short deadlines (2 s for headers, a 2 s grace for bodies, then 2000 bytes/s) so the
tests take seconds; the defaults (10 s, 10 s, 10 KB/s) are the same code. Times are asserted with generous
margins: the point is "dropped, not held for ever", never how fast the machine is.
"""

from __future__ import annotations

import json
import select
import socket
import time

import numpy as np
import pytest

from live_server import LiveServer, png_bytes

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

pytestmark = [pytest.mark.e2e, pytest.mark.once]

HEADER_S, GRACE_S, MIN_RATE = 2.0, 2.0, 2000
MARGIN_S = 20.0  # a loaded 2-core machine: the deadline plus this is "dropped"; "for ever" is much longer
BOUNDARY = "bNd"


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    log = tmp_path_factory.mktemp("transport") / "serve.log"
    with LiveServer(tiny_run, log, "--db", str(log.with_name("audit.sqlite")), "--header-timeout", str(HEADER_S),
                    "--body-timeout", str(GRACE_S), "--min-body-rate", str(MIN_RATE)) as live:
        yield live
        assert live.process.poll() is None, "the server died"
    assert "Traceback" not in live.log(), live.log()[-3000:]


def multipart(data: bytes, name: str = "scan.png") -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def head(length: int) -> bytes:
    return (f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode()


def trickle(server, first: bytes, rest: bytes, rate: float, limit_s: float) -> tuple[float, bytes]:
    """Send `first` at once, then `rest` at `rate` bytes/s (in pieces every 0.1 s) until the server answers
    or closes; returns (seconds until it closed or answered, what it sent back). Stops sending at the end of
    `rest` and waits; gives up after limit_s (the test then fails on the time)."""
    start = time.monotonic()
    piece = max(1, int(rate * 0.1))
    with socket.create_connection(("127.0.0.1", server.port), timeout=limit_s) as sock:
        if first:
            sock.sendall(first)
        received = b""
        while time.monotonic() - start < limit_s:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                chunk = _recv(sock)
                received += chunk
                if not chunk or b"\r\n\r\n" in received and _complete(received):
                    return time.monotonic() - start, received
                continue
            if rest:
                try:
                    sock.sendall(rest[:piece])
                except (BrokenPipeError, ConnectionResetError):
                    return time.monotonic() - start, received + _drain(sock)
                rest = rest[piece:]
        return time.monotonic() - start, received


def _recv(sock) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def _drain(sock) -> bytes:
    sock.settimeout(2)
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _complete(response: bytes) -> bool:
    header, _, body = response.partition(b"\r\n\r\n")
    for line in header.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def status_and_body(response: bytes) -> tuple[int, dict]:
    header, _, body = response.partition(b"\r\n\r\n")
    return int(header.split()[1]), json.loads(body)


def scan() -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes(rng.integers(0, 255, (96, 96), dtype=np.uint8))


def test_headers_trickled_at_2_bytes_per_s_are_closed_without_an_answer(server):
    endless = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Slow: " + b"a" * 10_000
    elapsed, answer = trickle(server, b"", endless, rate=2, limit_s=HEADER_S + MARGIN_S)
    assert answer == b"", answer  # headers never complete: no request to answer, just closed
    assert HEADER_S * 0.5 < elapsed < HEADER_S + MARGIN_S


def test_a_connection_that_sends_nothing_is_closed(server):
    elapsed, answer = trickle(server, b"", b"", rate=1, limit_s=HEADER_S + MARGIN_S)
    assert answer == b"" and elapsed < HEADER_S + MARGIN_S


def test_a_body_at_80_bytes_per_s_gets_408_json_and_is_closed(server):
    body = multipart(scan())
    elapsed, answer = trickle(server, head(len(body)), body, rate=80, limit_s=GRACE_S + MARGIN_S)
    status, detail = status_and_body(answer)
    assert status == 408 and "slower than the minimum of 2000 bytes/s" in detail["detail"]
    assert b"connection: close" in answer.lower()
    assert GRACE_S * 0.5 < elapsed < GRACE_S + MARGIN_S


def test_a_declared_30_mb_body_never_sent_gets_408(server):
    elapsed, answer = trickle(server, head(30 * 2**20), b"", rate=1, limit_s=GRACE_S + MARGIN_S)
    status, detail = status_and_body(answer)
    assert status == 408 and "0 bytes/s" in detail["detail"]
    assert elapsed < GRACE_S + MARGIN_S


def test_a_normal_upload_and_a_slow_one_above_the_minimum_both_succeed(server):
    image = scan()
    fast = httpx.post(server.url + "/predict", files={"file": ("scan.png", image)}, timeout=60)
    assert fast.status_code == 200, fast.text
    # padded so that it takes about 3 x the grace period at twice the minimum rate: the check really runs
    body = multipart(image + b"\0" * (int(MIN_RATE * 2 * GRACE_S * 3) - len(image)))
    elapsed, answer = trickle(server, head(len(body)), body, rate=2 * MIN_RATE, limit_s=120)
    assert elapsed > GRACE_S * 2, "the upload was not slow: the test checks nothing"
    status, row = status_and_body(answer)
    assert status == 200, row
    assert row["sha256"] != fast.json()["sha256"]  # the padded upload, predicted (a PNG with trailing bytes)


def test_a_kept_alive_connection_gets_a_fresh_header_deadline_per_request(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        for _ in range(3):  # the third request comes after more than one header deadline
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            answer = b""
            while not _complete(answer):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200")
            time.sleep(HEADER_S * 0.6)  # twice this is past one header deadline, inside keep-alive (5 s)
