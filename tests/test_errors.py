"""MissingExtraError: one error, naming the extra and its pip command, wherever an optional package is missing.

`sys.modules[name] = None` makes `import name` fail as if the package were not installed.
"""

from __future__ import annotations

import sys

import pytest

from ultrasonic.errors import MissingExtraError, UltrasonicError


def test_the_message_names_the_feature_the_package_and_the_pip_command():
    error = MissingExtraError("serve", "`ultrasonic serve`", "uvicorn")
    assert isinstance(error, UltrasonicError) and error.extra == "serve" and error.module == "uvicorn"
    assert str(error) == ("`ultrasonic serve` needs the optional package 'uvicorn', which is not installed; "
                          "install it with: pip install 'ultrasonic[serve]'")


@pytest.mark.parametrize("module", ["uvicorn", "fastapi"])
def test_serve_without_the_serve_extra(monkeypatch, tmp_path, module):
    from ultrasonic.serve import serve

    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "ultrasonic.serve.app", raising=False)  # so that it imports fastapi again
    with pytest.raises(MissingExtraError, match=rf"'{module}'.*pip install 'ultrasonic\[serve\]'"):
        serve(tmp_path)


def test_the_onnx_engine_without_onnxruntime(monkeypatch, tmp_path):
    from ultrasonic.inference.engines import open_engine
    from ultrasonic.rundir import RunMeta

    meta = RunMeta(model_id="0" * 16, task="binary", classes=["a", "b"], positive_class="b", image_size=(8, 8),
                   channels=1, threshold=0.5)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"engine 'onnx' needs .*'onnxruntime'.*ultrasonic\[onnx\]"):
        open_engine(tmp_path, meta, "onnx")


def test_the_jax_backend_without_jax(monkeypatch):
    from ultrasonic.backend import require_keras

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.delitem(sys.modules, "keras", raising=False)
    monkeypatch.setitem(sys.modules, "keras", None)  # what Keras' import does when jax is missing: ImportError
    with pytest.raises(MissingExtraError, match=r"training \(Keras with its jax backend\) needs .*ultrasonic\[jax\]"):
        require_keras("training")


def test_the_cli_prints_it_as_one_line(monkeypatch, tmp_path, capsys):
    from ultrasonic.cli import main

    monkeypatch.setitem(sys.modules, "uvicorn", None)
    assert main(["serve", str(tmp_path)]) == 2
    assert capsys.readouterr().err == ("error: `ultrasonic serve` needs the optional package 'uvicorn', which is "
                                       "not installed; install it with: pip install 'ultrasonic[serve]'\n")
