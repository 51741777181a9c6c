"""Installs without a backend: serving an exported model needs neither Keras nor TensorFlow, and what does
need them says which extra to install (ultrasonic/backend.py).

Each command runs in a fresh interpreter where `import keras`, `import tensorflow` (and `import jax`)
raise ModuleNotFoundError, as they do after `pip install 'ultrasonic[serve,onnx]'`: a meta-path finder
put first on sys.meta_path, then ultrasonic's own entry point.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from tiny_run import make_run

BACKENDS = ("keras", "tensorflow", "jax")


def without(blocked: tuple[str, ...], code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a new Python in which the packages `blocked` are not installed, as far as imports go."""
    prelude = textwrap.dedent(f"""
        import importlib.abc, sys

        class NotInstalled(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.partition(".")[0] in {blocked!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NotInstalled())
    """)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=600)


def cli(*args: str) -> str:
    return f"from ultrasonic.cli import main\nsys.exit(main({list(args)!r}))\n"


@pytest.fixture(scope="module")
def onnx_run(tmp_path_factory):
    """An untrained default network with its model.onnx, and one image to predict."""
    pytest.importorskip("tf2onnx", reason="export needs the onnx extra (pip install -e '.[onnx]')")
    from ultrasonic.inference.export import export

    run = make_run(tmp_path_factory.mktemp("no_backend") / "run", threshold=0.4)
    export(run, "onnx")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(run.parent / "a.png")
    return run


def test_predict_with_the_onnx_engine_needs_no_backend(onnx_run):
    image = onnx_run.parent / "a.png"
    done = without(BACKENDS, cli("predict", str(onnx_run), str(image), "--engine", "onnx", "--format", "json"))
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(done.stdout)
    assert row["file"] == str(image) and row["class"] in ("normal", "pneumonia") and row["threshold"] == 0.4
    assert sum(row["probabilities"].values()) == pytest.approx(1, abs=1e-5)


def test_serving_with_the_onnx_engine_needs_no_backend(onnx_run):
    pytest.importorskip("fastapi", reason="the service needs the serve extra (pip install -e '.[serve]')")
    pytest.importorskip("httpx", reason="the service tests need httpx (pip install -e '.[dev]')")
    done = without(BACKENDS, f"""
        from fastapi.testclient import TestClient
        from ultrasonic.serve.app import create_app
        from ultrasonic.serve.settings import ServeSettings

        app = create_app({str(onnx_run)!r}, ServeSettings(engine="onnx", db={str(onnx_run / "audit.sqlite")!r}))
        with open({str(onnx_run.parent / "a.png")!r}, "rb") as f:
            reply = TestClient(app).post("/predict", files={{"file": ("a.png", f)}})
        print(reply.status_code, reply.text)
        sys.exit(reply.status_code != 200)
    """)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert '"class"' in done.stdout


@pytest.mark.parametrize("blocked, backend, missing, extra", [
    (("keras", "tensorflow"), "tensorflow", "keras", "tensorflow"),  # the core alone
    (("tensorflow",), "tensorflow", "tensorflow", "tensorflow"),    # Keras without its default backend
    (("jax",), "jax", "jax", "jax"),                                  # KERAS_BACKEND=jax without JAX
])
def test_training_without_a_backend_is_one_error_naming_the_extra(tmp_path, blocked, backend, missing, extra):
    done = without(blocked, cli("train", str(tmp_path), "--out", str(tmp_path / "run")),
                   env={"KERAS_BACKEND": backend})
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines() == [
        f"error: training (Keras with its {backend} backend) needs the optional package {missing!r}, which is not "
        f"installed; install it with: pip install 'ultrasonic[{extra}]'; predicting with --engine onnx needs neither"]


def test_the_keras_engine_without_keras_names_the_extra(onnx_run):
    done = without(BACKENDS, cli("predict", str(onnx_run), str(onnx_run.parent / "a.png")),
                   env={"KERAS_BACKEND": "tensorflow"})
    assert done.returncode == 2, done.stderr[-3000:]
    assert "pip install 'ultrasonic[tensorflow]'" in done.stderr and "Traceback" not in done.stderr
