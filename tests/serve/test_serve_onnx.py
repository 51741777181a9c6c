"""`ultrasonic serve --engine onnx`: the exported model through ONNX Runtime, no TensorFlow loaded."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import httpx
import numpy as np
import pytest
from live_server import LiveServer
from PIL import Image
from tiny_run import make_run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory):
    from ultrasonic.inference.export import export

    run = make_run(tmp_path_factory.mktemp("onnx_serve") / "run", threshold=0.4)
    export(run, "onnx")
    return run


def test_onnx_service_answers_like_the_keras_predictor(onnx_run, tmp_path):
    from ultrasonic import Predictor

    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(image)
    expected = Predictor(onnx_run).predict_files([image])[0]
    server = LiveServer(onnx_run, tmp_path / "server.log", "--engine", "onnx", "--db", str(tmp_path / "a.sqlite"))
    try:
        model = httpx.get(f"{server.url}/model").json()
        assert model["engine"] == "onnx"
        with open(image, "rb") as f:
            reply = httpx.post(f"{server.url}/predict?cam=base64", files={"file": ("scan.png", f)})
        assert reply.status_code == 200
        row = reply.json()
        assert row["class"] == expected["class"] and row["threshold"] == pytest.approx(0.4)
        for name, p in expected["probabilities"].items():
            assert row["probabilities"][name] == pytest.approx(p, abs=1e-4)
        assert row["cam_url"] is None and row["cam_png_base64"] is None  # no gradients in ONNX Runtime
        assert httpx.get(f"{server.url}/predictions").json()[0]["sha256"] == row["sha256"]
    finally:
        server.stop()


def test_onnx_service_loads_neither_keras_nor_tensorflow(onnx_run):
    code = textwrap.dedent(f"""
        import sys
        from ultrasonic.serve.app import create_app
        from ultrasonic.serve.settings import ServeSettings
        create_app({str(onnx_run)!r}, ServeSettings(engine="onnx", db={str(onnx_run / "audit.sqlite")!r}))
        loaded = [m for m in ("keras", "tensorflow", "jax") if m in sys.modules]
        print("loaded:", loaded)
        sys.exit(1 if loaded else 0)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
