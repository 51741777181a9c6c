"""The ONNX file says how to make its input, and a reader that follows it gets ultrasonic's answers exactly.

docs/onnx_reference_reader.py (Pillow + numpy + onnxruntime) runs in a Python
that cannot import ultrasonic (plain_python.py), on full-resolution chest
X-ray JPEGs (draft decoding, one RGB file) and synthetic 16-bit PNG/TIFF,
palette, alpha, BMP and EXIF-rotated files. Same pixels, same floats: its
probabilities must equal `ultrasonic predict --engine onnx` to the bit.
Marked e2e like test_export.py: under JAX the export runs in a TensorFlow subprocess.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plain_python import plain_python, run_plain
from shared_data import SHARED_DATA
from tiny_run import make_run

from ultrasonic.cli import main
from ultrasonic.data.io import read_image
from ultrasonic.inference.predictor import Predictor

pytestmark = pytest.mark.e2e

READER = Path(__file__).resolve().parents[2] / "docs" / "onnx_reference_reader.py"
FULL_XRAYS = SHARED_DATA / "chest_xray_full" / "train"
SIZE = 64  # a quarter to an eighth of the full-resolution X-rays: draft decoding at 1/4 or 1/8


@pytest.fixture(scope="module")
def python(tmp_path_factory) -> Path:
    return plain_python(tmp_path_factory.mktemp("plain") / "venv")


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def run(request, tmp_path_factory) -> Path:
    """The default network (grey) and the seed's (RGB, VGG preprocessing), exported to ONNX."""
    preset = "default" if request.param == 1 else "seed"
    path = make_run(tmp_path_factory.mktemp(preset) / "run", preset, size=SIZE, channels=request.param)
    assert main(["-q", "export", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def reader():
    """The reference reader as a module, to compare its pixels with read_image's in this process."""
    spec = importlib.util.spec_from_file_location("onnx_reference_reader", READER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_files(folder: Path) -> list[Path]:
    """Files whose decoding has a rule of its own in the contract: 16-bit, palette, alpha, EXIF, BMP."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    wide = (rng.random((150, 90)) * 3000 + 1000).astype(np.uint16)  # a 12-bit range inside 16 bits
    files = {"wide16.png": Image.fromarray(wide), "wide16.tif": Image.fromarray(wide),
             "rgba.png": Image.fromarray(rng.integers(0, 256, (70, 120, 4), dtype=np.uint8), "RGBA"),
             "gray8.bmp": Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8)),
             "palette.png": Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)).quantize(16)}
    for name, img in files.items():
        img.save(folder / name)
    rotated = Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    rotated.save(folder / "rotated.jpg", exif=exif, quality=90)
    transparent = files["palette.png"].copy()
    transparent.info["transparency"] = 0
    transparent.save(folder / "transparent.png", transparency=0)
    return sorted(folder.iterdir())


def real_files() -> list[Path]:
    if not FULL_XRAYS.is_dir():
        pytest.skip(f"{FULL_XRAYS} is absent: the full-resolution chest X-rays are in ../shared/data")
    return sorted(FULL_XRAYS.glob("*/*.jpeg"))


def reader_rows(python: Path, model: Path, files: list[Path], cwd: Path) -> list[dict]:
    done = run_plain(python, str(READER), str(model), *map(str, files), cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines()]


def check_reader_matches_ultrasonic(python, reader, run, files, tmp_path, capsys):
    predictor = Predictor(run, engine="onnx")
    height, width = predictor.image_size
    pixels = np.stack([read_image(f, (height, width), predictor.channels) for f in files])
    for f, x in zip(files, pixels):  # the same pixels ...
        assert np.array_equal(reader.read_image(str(f), height, width, predictor.channels), x), f.name
    rows = reader_rows(python, run / "model.onnx", files, tmp_path)
    got = np.array([[r["probabilities"][c] for c in predictor.classes] for r in rows])
    assert [r["file"] for r in rows] == [str(f) for f in files]
    # ... the same floats: identical to ultrasonic's ONNX engine on the same batch, and to `ultrasonic predict`
    assert np.array_equal(got, predictor.predict_proba(pixels).astype(np.float64))
    capsys.readouterr()
    assert main(["predict", str(run), *map(str, files), "--engine", "onnx", "--format", "json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    assert [[row["probabilities"][c] for c in predictor.classes] for row in cli] == \
        [[round(p, 6) for p in row] for row in got.tolist()]  # the CLI rounds to 6 decimals
    assert got[:, 1].std() > 1e-4  # the files give different answers: agreement means something
    return pixels


def test_reader_matches_ultrasonic_exactly_on_16bit_palette_alpha_exif_and_bmp_files(python, reader, run,
                                                                                      tmp_path, capsys):
    files = synthetic_files(tmp_path / "synthetic")
    check_reader_matches_ultrasonic(python, reader, run, files, tmp_path, capsys)


@pytest.mark.realdata
def test_reader_matches_ultrasonic_exactly_on_full_resolution_chest_xrays(python, reader, run, tmp_path, capsys):
    files = real_files()  # 40 files: two batches of the reader and of `ultrasonic predict`
    pixels = check_reader_matches_ultrasonic(python, reader, run, files, tmp_path, capsys)
    channels = pixels.shape[-1]
    naive = np.stack([np.asarray(Image.open(f).convert("L" if channels == 1 else "RGB")
                                 .resize((SIZE, SIZE), Image.Resampling.BILINEAR)).reshape(SIZE, SIZE, channels)
                      for f in files])
    assert np.abs(naive.astype(int) - pixels).max() > 10  # what the contract is for: draft decoding above all


def test_onnx_file_carries_the_input_contract_and_names_its_output(run):
    import onnx

    proto = onnx.load(str(run / "model.onnx"))
    carried = {p.key: json.loads(p.value) for p in proto.metadata_props}
    contract = carried["input_contract"]
    assert [s["step"] for s in contract["steps"]] == ["open", "jpeg_draft", "decode", "channels", "resize", "tensor"]
    assert contract["tensor"]["name"] == proto.graph.input[0].name == "image"
    assert contract["tensor"]["shape"] == [None, SIZE, SIZE, carried["channels"]]
    assert contract["output"]["name"] == proto.graph.output[0].name == "probabilities"
    assert "DICOM" in contract["dicom"] and contract["reference_reader"] == "docs/onnx_reference_reader.py"
    sidecar = json.loads((run / "model.onnx.json").read_text())
    assert sidecar["input_contract"] == contract
