"""Batching and the heat-map flag: the batcher on its own (model calls counted), then a live server:
concurrent requests answer as sequential ones, Grad-CAM only when asked, the preview PNG; once under JAX."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from live_server import LiveServer
from ultrasonic.errors import ConfigError
from ultrasonic.serve.batcher import Batcher
from ultrasonic.serve.cams import PREVIEW_SIDE, CamStore, preview_png
from ultrasonic.serve.local import LocalServer
from ultrasonic.serve.settings import ServeSettings

httpx = pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")

SHAPE = (8, 8, 1)
JAX_START_TIMEOUT_S = 480


class Model:
    """A stand-in for predict_scored that records each call's batch size: probabilities from the image's
    mean, so each row can be traced to its image; an image of another shape is refused, as the
    predictor refuses one."""

    def __init__(self, scores: bool = True):
        self.sizes: list[int] = []
        self.scores = scores
        self.lock = threading.Lock()

    def __call__(self, images: np.ndarray):
        if images.shape[1:] != SHAPE:
            raise ValueError(f"images have shape {images.shape}; this model takes (N, {SHAPE})")
        with self.lock:
            self.sizes.append(len(images))
        p = images.reshape(len(images), -1).mean(axis=1) / 255
        return np.stack([1 - p, p], axis=1), (p * 10 if self.scores else None)


def _image(value: int, shape=SHAPE) -> np.ndarray:
    return np.full(shape, value, np.uint8)


def test_requests_that_arrive_together_share_one_model_call():
    model = Model()
    batcher = Batcher(model, max_batch=16, max_wait_ms=500)
    try:
        futures = [batcher.submit(_image(10 * k)) for k in range(8)]
        rows = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    assert model.sizes == [8] and batcher.calls == 1
    for k, (probs, scores) in enumerate(rows):  # each request its own row, in its own order
        assert probs.shape == (1, 2) and probs[0, 1] == pytest.approx(10 * k / 255)
        assert scores.shape == (1,) and scores[0] == pytest.approx(100 * k / 255)


def test_a_full_batch_goes_at_once_and_the_rest_follows():
    model = Model(scores=False)
    batcher = Batcher(model, max_batch=4, max_wait_ms=500)
    try:
        start = time.monotonic()
        futures = [batcher.submit(_image(k)) for k in range(10)]
        results = [f.result(timeout=10) for f in futures]
        elapsed = time.monotonic() - start
    finally:
        batcher.close()
    assert model.sizes == [4, 4, 2] and all(scores is None for _, scores in results)
    assert elapsed < 2.0  # only the last, short batch waited (0.5 s) for more


def test_one_bad_image_does_not_fail_the_others():
    model = Model()
    batcher = Batcher(model, max_batch=16, max_wait_ms=300)
    try:
        futures = [batcher.submit(_image(k)) for k in range(3)]
        futures.insert(1, batcher.submit(_image(7, shape=(9, 9, 1))))
        futures.append(batcher.submit(_image(50)))
        with pytest.raises(ValueError, match="this model takes"):
            futures[1].result(timeout=10)
        good = [futures[k].result(timeout=10) for k in (0, 2, 3, 4)]
    finally:
        batcher.close()
    assert [probs[0, 1] * 255 for probs, _ in good] == pytest.approx([0, 1, 2, 50])
    assert model.sizes == [1, 1, 1, 1]  # the batch failed (np.stack), then each image alone; the bad one raised


def test_a_lone_request_waits_at_most_about_max_wait():
    model = Model()
    for max_wait_ms, low, high in ((0, 0.0, 0.5), (150, 0.14, 1.5)):
        batcher = Batcher(model, max_batch=16, max_wait_ms=max_wait_ms)
        try:
            start = time.monotonic()
            batcher.submit(_image(1)).result(timeout=10)
            elapsed = time.monotonic() - start
        finally:
            batcher.close()
        assert low <= elapsed <= high, (max_wait_ms, elapsed)


def test_requests_from_many_threads_are_each_answered_with_their_own_row():
    model = Model()
    batcher = Batcher(model, max_batch=16, max_wait_ms=20)
    try:
        with ThreadPoolExecutor(16) as pool:
            rows = list(pool.map(lambda k: batcher.submit(_image(k)).result(timeout=30), range(200)))
    finally:
        batcher.close()
    assert [round(probs[0, 1] * 255) for probs, _ in rows] == list(range(200))
    assert sum(model.sizes) == 200 and len(model.sizes) < 200 and max(model.sizes) <= 16


@pytest.mark.parametrize("bad", [dict(max_batch=0), dict(max_batch=5000), dict(max_wait_ms=-1),
                                 dict(max_wait_ms=5000)])
def test_batching_settings_refuse_nonsense(bad):
    with pytest.raises(ConfigError, match="--max-"):
        ServeSettings(**bad)


def test_the_store_keeps_overlays_and_previews_apart():
    store = CamStore(capacity=2)
    store.put(1, b"cam1")
    store.put(1, b"preview1", kind="preview")
    store.put(2, b"preview2", kind="preview")
    store.put(3, b"preview3", kind="preview")
    assert store.get(1) == b"cam1" and store.get(1, kind="preview") is None  # previews have their own bound
    assert store.get(3, kind="preview") == b"preview3" and len(store) == 1 and store.count("preview") == 2


def test_a_preview_is_the_image_shrunk_to_its_bound():
    grey = preview_png(np.arange(32 * 48, dtype=np.uint16).reshape(32, 48, 1).astype(np.uint8))
    picture = Image.open(io.BytesIO(grey))
    assert picture.format == "PNG" and picture.mode == "L" and picture.size == (48, 32)
    big = Image.open(io.BytesIO(preview_png(np.zeros((600, 1200, 3), np.uint8))))
    assert big.mode == "RGB" and big.size == (PREVIEW_SIDE, PREVIEW_SIDE // 2)


# ---- a live server -------------------------------------------------------------------------------------------

def _images(run_dir, n: int) -> list[bytes]:
    files = sorted((run_dir.parent / "data").rglob("*.png"))
    return [files[round(k * len(files) / n)].read_bytes() for k in range(n)]


def _post(server, k: int, data: bytes, **params) -> httpx.Response:
    return httpx.post(server.url + "/predict", files={"file": (f"img{k}.png", data)}, params=params, timeout=120)


def _probabilities(replies: list[httpx.Response]) -> np.ndarray:
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]
    return np.array([list(r.json()["probabilities"].values()) for r in replies])


def _concurrent_equals_sequential(server, run_dir, n: int = 8) -> list[httpx.Response]:
    images = _images(run_dir, n)
    sequential = [_post(server, k, data) for k, data in enumerate(images)]
    barrier = threading.Barrier(n)

    def together(k: int) -> httpx.Response:
        barrier.wait()  # all n leave at once, so they meet in the batcher's queue
        return _post(server, k, images[k])

    with ThreadPoolExecutor(n) as pool:
        concurrent = list(pool.map(together, range(n)))
    assert np.allclose(_probabilities(concurrent), _probabilities(sequential), atol=1e-5)
    assert [r.json()["class"] for r in concurrent] == [r.json()["class"] for r in sequential]
    return concurrent


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve_batching")
    live = LiveServer(tiny_run, folder / "server.log", "--db", str(folder / "audit.sqlite"))
    yield live
    live.stop()


@pytest.mark.e2e
@pytest.mark.once  # HTTP and the batcher: test_batching_under_jax runs a JAX server
def test_concurrent_requests_answer_as_sequential_ones(server, tiny_run):
    replies = _concurrent_equals_sequential(server, tiny_run)
    ids = [r.json()["id"] for r in replies]
    assert len(set(ids)) == len(ids)  # one audit row each
    log = server.log()
    assert "Traceback" not in log and "one by one" not in log, log[-3000:]


@pytest.mark.e2e
@pytest.mark.once  # HTTP and the batcher: test_batching_under_jax runs a JAX server
def test_grad_cam_only_when_asked(server, tiny_run):
    data = _images(tiny_run, 1)[0]
    plain = _post(server, 0, data).json()
    assert plain["cam_url"] is None and plain["heatmap_empty"] is None
    assert httpx.get(server.url + f"/cam/{plain['id']}.png").status_code == 404  # no overlay was made
    asked = _post(server, 0, data, heatmap="true").json()
    assert asked["cam_url"] == f"/cam/{asked['id']}.png" and isinstance(asked["heatmap_empty"], bool)
    cam = httpx.get(server.url + asked["cam_url"])
    assert cam.status_code == 200 and Image.open(io.BytesIO(cam.content)).format == "PNG"
    assert asked["probabilities"] == plain["probabilities"]
    inline = _post(server, 0, data, cam="base64").json()  # cam=base64 implies the heat map
    assert inline["cam_url"] == f"/cam/{inline['id']}.png" and inline["cam_png_base64"]


@pytest.mark.e2e
@pytest.mark.once  # HTTP and the batcher: test_batching_under_jax runs a JAX server
def test_every_prediction_has_a_preview_of_what_the_model_saw(server, tiny_run):
    body = _post(server, 0, _images(tiny_run, 1)[0]).json()
    assert body["preview_url"] == f"/preview/{body['id']}.png"
    reply = httpx.get(server.url + body["preview_url"])
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/png"
    assert reply.headers["cache-control"] == "no-store"
    picture = Image.open(io.BytesIO(reply.content))
    assert picture.format == "PNG" and picture.size == (32, 32) and picture.mode == "L"  # the run's input
    missing = httpx.get(server.url + "/preview/999999.png")
    assert missing.status_code == 404 and "predict the image again" in missing.json()["detail"]


@pytest.mark.e2e
@pytest.mark.once  # HTTP and the batcher: test_batching_under_jax runs a JAX server
def test_the_preview_is_behind_the_token(tiny_run, tmp_path):
    token = "s3cret-token"
    with LiveServer(tiny_run, tmp_path / "server.log", "--db", str(tmp_path / "audit.sqlite"),
                    "--token", token, "--max-batch", "4", "--max-wait-ms", "5") as live:
        auth = {"Authorization": f"Bearer {token}"}
        body = httpx.post(live.url + "/predict", files={"file": ("a.png", _images(tiny_run, 1)[0])},
                          headers=auth, timeout=120).json()
        assert httpx.get(live.url + body["preview_url"]).status_code == 401
        assert httpx.get(live.url + body["preview_url"], headers=auth).status_code == 200


@pytest.mark.e2e
@pytest.mark.once  # it starts its own server under JAX: the TensorFlow pass runs it
def test_batching_under_jax(tiny_run, tmp_path, monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")  # the server's process; the run was trained under the default
    # JAX compiles each batch shape (1, 2, 4, 8, 16) and the gradient at start-up: seconds each on busy cores
    with LocalServer(tiny_run, tmp_path / "server.log", "--db", str(tmp_path / "audit.sqlite"),
                     start_timeout=JAX_START_TIMEOUT_S) as live:
        _concurrent_equals_sequential(live, tiny_run)
        body = _post(live, 0, _images(tiny_run, 1)[0], heatmap="true").json()
        assert httpx.get(live.url + body["cam_url"]).status_code == 200
        assert "Traceback" not in live.log()
        assert "jaxlib" in Path(f"/proc/{live.process.pid}/maps").read_text()  # the server really ran JAX
