"""What travels: the sdist carries every file the README links to, the licence and the web page; serving
an exported model installs no backend (pyproject.toml)."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
BACKENDS = {"keras", "tensorflow", "tensorflow-cpu", "jax", "jaxlib", "torch"}


def readme_links() -> list[str]:
    """The README's relative link and image targets (not URLs, not anchors in the page itself)."""
    targets = LINK.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    return sorted({t.split("#")[0] for t in targets if not t.startswith(("http://", "https://", "mailto:", "#"))})


def test_every_relative_link_in_the_readme_points_to_a_file():
    links = readme_links()
    assert {"docs/results.md", "docs/img/gradcam.png"} <= set(links)  # the pattern finds links and images
    assert [t for t in links if not (ROOT / t).is_file()] == []


def requirements(extra: str | None = None) -> list[Requirement]:
    """The core dependencies, or one extra's with the extras it names of ultrasonic itself expanded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = []
    for line in project["dependencies"] if extra is None else project["optional-dependencies"][extra]:
        req = Requirement(line)
        found += [r for e in sorted(req.extras) for r in requirements(e)] if req.name == "ultrasonic" else [req]
    return found


def test_serving_an_exported_model_installs_no_backend():
    for extra in (None, "serve", "onnx", "pacs"):
        assert {r.name for r in requirements(extra)} & BACKENDS == set(), extra
    assert {"keras", "tensorflow-cpu", "tensorflow"} <= {r.name for r in requirements("tensorflow")}
    assert {"keras", "jax"} <= {r.name for r in requirements("jax")}


def test_upper_bounds_admit_the_installed_releases():
    """A cap such as `pillow<13` must not refuse a newer release that is installed and tested here."""
    refused = []
    for extra in (None, "tensorflow", "jax", "serve", "onnx", "pacs", "dev"):
        for req in requirements(extra):
            try:
                installed = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                continue
            caps = [spec for spec in req.specifier if spec.operator in ("<", "<=", "~=", "==", "===")]
            if (req.marker is None or req.marker.evaluate()) and not all(c.contains(installed, True) for c in caps):
                refused.append(f"{req} refuses the installed {installed}")
    assert refused == []


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tuple[set[str], str]:
    """Build the sdist offline with the installed setuptools; its file names (top folder cut) and PKG-INFO."""
    if Version(metadata.version("setuptools")) < Version("77"):
        pytest.skip("building the sdist needs setuptools>=77, as pyproject.toml does (pip install -e '.[dev]')")
    out = tmp_path_factory.mktemp("sdist")
    code = "import sys; from setuptools import build_meta; print(build_meta.build_sdist(sys.argv[1]))"
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with tarfile.open(out / done.stdout.split()[-1]) as archive:
        names = {m.name.partition("/")[2] for m in archive.getmembers() if m.isfile()}
        pkg_info = next(archive.extractfile(m).read().decode() for m in archive.getmembers()
                        if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
    return names, pkg_info


def test_the_sdist_ships_every_readme_link_the_licence_and_the_web_page(sdist):
    names, _ = sdist
    wanted = readme_links() + ["LICENSE", "Makefile", "src/ultrasonic/serve/static/index.html", "tests/tiny_run.py"]
    assert [name for name in wanted if name not in names] == []
    assert [name for name in names if "__pycache__" in name or name.endswith(".pyc")] == []


def test_the_sdist_metadata_names_the_licence_and_keeps_backends_in_extras(sdist):
    _, pkg_info = sdist
    assert "License-Expression: MIT" in pkg_info and "License-File: LICENSE" in pkg_info
    assert set(re.findall(r"^Provides-Extra: (\S+)$", pkg_info, re.M)) == {"tensorflow", "jax", "serve", "onnx",
                                                                           "pacs", "dev"}
    core = [Requirement(line.split(":", 1)[1]) for line in pkg_info.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and {r.name for r in core} & BACKENDS == set()
