"""A Python without ultrasonic, for tests of what must work without it (model.keras, the ONNX reader).

A fresh virtual environment (no pip: seconds) whose one .pth line adds the
site-packages of the Python running the tests. Directories added by a .pth
line get no .pth processing of their own, so the editable ultrasonic install
there (itself a .pth file) is not seen, while Keras, TensorFlow, JAX, Pillow
and ONNX Runtime are. Run it with `-I` (no PYTHONPATH, no script folder on sys.path).

    python = plain_python(tmp_path / "venv")
    subprocess.run([python, "-I", "-c", "import keras"], env=plain_env(), check=True)
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path


def plain_python(folder: Path) -> Path:
    """The python of a new virtual environment in `folder` that sees our packages but not ultrasonic."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=120)
    python = folder / "bin" / "python"
    target = subprocess.run([python, "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            capture_output=True, text=True, check=True, env=plain_env()).stdout.strip()
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (Path(target) / "test_packages.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


def plain_env() -> dict:
    """This process's environment without PYTHONPATH (the tests put the source folder on it)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run_plain(python: Path, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -I args...` (e.g. "-c", code, ...) in `cwd`, without PYTHONPATH."""
    return subprocess.run([str(python), "-I", *args], capture_output=True, text=True, cwd=cwd,
                          env=plain_env(), timeout=timeout)
