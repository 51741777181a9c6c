"""Bad files in a data set, through the user's path (`ultrasonic train` and the Python `train`).

One folder mixes good synthetic images with every kind of odd or broken file
a real export contains. Readable odd images must be read correctly, broken
ones skipped and listed with their reason, hidden files ignored, and every
structural problem must stop the run before training with one clear line.
Some files make the decoder itself fail (crashing_decoder.py: ValueError,
TypeError, KeyError, ... raised inside Pillow): each is that file's reason,
and the others train; one makes it warn: a note in data_report.json.
Per-file decoding details are unit-tested in test_io.py; here it is the
whole pipeline (catalog -> cache -> report -> log -> exit status).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from crashing_decoder import NOTE, crash_files, crashing_decoder, noted_png
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.config import load_config
from ultrasonic.data.dataset import load_dataset
from ultrasonic.data.synthetic import lesion_images
from ultrasonic.errors import DataError

SIZE = 32
N_GOOD = 400  # 17 bad files (8 odd or unusable, 9 decoder crashes) stay under max_bad_fraction (5 %)
FAST = ["--epochs", "1", "--image-size", str(SIZE), "--batch-size", "16", "--no-tensorboard"]
SETTINGS = "width: 8\nmin_split_images: 10\nverbose: 0\n"

try:
    import pydicom  # noqa: F401

    HAVE_PYDICOM = True
except ImportError:
    HAVE_PYDICOM = False


# --- the corpus ---------------------------------------------------------------------------------


def encode(image: np.ndarray | Image.Image, fmt: str, **kwargs) -> bytes:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def constant_png(width: int, height: int, value: int, bit_depth: int = 8, right: int | None = None) -> bytes:
    """A gray PNG of one value (the right half `right`), compressed row by row: 20000 x 20000 px without
    400 MB in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row_bytes = (width * bit_depth + 7) // 8
    half = row_bytes // 2 if right is not None else row_bytes
    row = b"\x00" + bytes([value]) * half + bytes([right or 0]) * (row_bytes - half)  # filter type 0, pixels
    deflate = zlib.compressobj(1)
    idat = b"".join([deflate.compress(row) for _ in range(height)] + [deflate.flush()])
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def halves(height: int, width: int, left, right, dtype=np.uint8) -> np.ndarray:
    out = np.full((height, width), left, dtype=dtype)
    out[:, width // 2:] = right
    return out


def odd_readable_files() -> dict[str, bytes]:
    """Images that look odd but are fine: each must come out as its check in READ_CHECKS says."""
    palette = Image.fromarray(halves(48, 48, 0, 1)).convert("P")
    palette.putpalette([40, 40, 40, 220, 220, 220] + [0] * 762)
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[..., :3], rgba[..., 3] = halves(48, 48, 90, 30)[..., None], 0  # transparent: compositing would change it
    stored = halves(32, 64, 255, 0)  # 32 high, 64 wide, left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": white goes to the top
    files = {
        "pneumonia/huge_20000px.png": constant_png(20000, 20000, 180, right=60),
        "normal/deep16.png": encode(halves(64, 64, 1000, 3000, np.uint16), "PNG"),
        "pneumonia/deep16.tif": encode(halves(64, 64, 1000, 3000, np.uint16).T.copy(), "TIFF"),
        "normal/palette.png": encode(palette, "PNG"),
        "pneumonia/rgba.png": encode(rgba, "PNG"),
        "normal/cmyk.jpg": encode(Image.fromarray(halves(48, 48, 128, 32)).convert("RGB").convert("CMYK"), "JPEG",
                                  quality=95),
        "pneumonia/rotated.jpg": encode(stored, "JPEG", exif=exif, quality=95),
        "normal/noted.png": noted_png(),
    }
    assert Image.open(io.BytesIO(files["normal/cmyk.jpg"])).mode == "CMYK"
    return files


def _left_right(x):
    return x[:, :12].mean(), x[:, -12:].mean()


READ_CHECKS = {  # file -> (what must hold for its decoded 32 x 32 gray row, description)
    "pneumonia/huge_20000px.png": (lambda x: _left_right(x) == (180, 60), "20000x20000 px read and shrunk"),
    "normal/deep16.png": (lambda x: _left_right(x) == (0, 255), "16-bit scaled by its own range"),
    "pneumonia/deep16.tif": (lambda x: (x[:12].mean(), x[-12:].mean()) == (0, 255), "16-bit TIFF scaled"),
    "normal/palette.png": (lambda x: _left_right(x) == (40, 220), "palette expanded"),
    "pneumonia/rgba.png": (lambda x: _left_right(x) == (90, 30), "alpha dropped, not composited"),
    "normal/cmyk.jpg": (lambda x: abs(_left_right(x)[0] - 128) < 8 and abs(_left_right(x)[1] - 32) < 8,
                        "CMYK converted"),
    "pneumonia/rotated.jpg": (lambda x: x[:12].mean() > 230 and x[-12:].mean() < 25
                              and abs(x[:, :12].mean() - x[:, -12:].mean()) < 25, "EXIF rotation applied"),
    "normal/noted.png": (lambda x: x.std() > 20, "decoded although the decoder warned (noise kept)"),
}


def broken_files() -> dict[str, tuple[bytes, str]]:
    """file -> (bytes, the reason data_report.json must give)."""
    noise = np.random.default_rng(1).integers(0, 256, (48, 48, 3), dtype=np.uint8)  # the cut lands in pixels
    png, jpeg = encode(noise, "PNG"), encode(noise, "JPEG")
    files = {
        "normal/cut.jpeg": (jpeg[: len(jpeg) // 2], "truncated or corrupt JPEG"),
        "pneumonia/cut.png": (png[: len(png) // 2], "truncated or corrupt PNG"),
        "normal/empty.png": (b"", "empty file (0 bytes)"),
        "pneumonia/notes.png": (b"Patient notes, not pixels.\n", "not a recognised image"),
        "normal/one_pixel.png": (encode(np.array([[200]], dtype=np.uint8), "PNG"),
                                 "blank or too small to classify: 1 x 1 px"),
        "pneumonia/white.png": (encode(np.full((48, 48), 255, np.uint8), "PNG"),
                                "blank or too small to classify: every pixel has the same value"),
        # 23000 x 23000 px at 1 bit per pixel: a 340 kB file that would decode to 529 MB
        "normal/bomb.png": (constant_png(23000, 23000, 0xFF, bit_depth=1), "possible decompression bomb"),
    }
    if HAVE_PYDICOM:
        files["pneumonia/report.dcm"] = (dicom_without_pixels(), "DICOM Basic Text SR Storage object")
    for k, (name, crash) in enumerate(crash_files().items()):  # the decoder fails on these (any exception)
        files[f"{('normal', 'pneumonia')[k % 2]}/{name}"] = crash
    return files


def dicom_without_pixels() -> bytes:
    """A valid DICOM file holding a structured report: patient data, no image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = "Anonymous^Test", "P0001", "SR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


HIDDEN = {".DS_Store": b"\x00\x00\x00\x01Bud1", "normal/.DS_Store": b"\x00\x00\x00\x01Bud1",
          "pneumonia/._foo.png": b"\x00\x05\x16\x07AppleDouble"}


def write_good(root: Path, n: int, seed: int = 0, classes=("normal", "pneumonia")) -> None:
    images, labels, _ = lesion_images(n, size=48, n_classes=len(classes), seed=seed)
    for i, (x, y) in enumerate(zip(images, labels)):
        folder = root / classes[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[..., 0]).save(folder / f"img_{seed}_{i:03d}.png")


def write_files(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


@pytest.fixture(scope="module", autouse=True)
def decoder():
    """For every test here: the decoder fails on the crash_*.png files and warns on noted.png."""
    with crashing_decoder():
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """N_GOOD synthetic images + 7 odd readable + 7-8 broken or unusable + hidden files, in two class folders."""
    root = tmp_path_factory.mktemp("bad") / "messy"
    write_good(root, N_GOOD)
    write_files(root, odd_readable_files())
    write_files(root, {name: data for name, (data, _) in broken_files().items()})
    write_files(root, HIDDEN)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # shared: the 20000 px image is decoded once


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "fast.yaml"
    path.write_text(SETTINGS)
    return path


def train_args(data: Path, out: Path, cache: Path, settings: Path, *extra: str) -> list[str]:
    return ["train", str(data), "--out", str(out), "--cache-dir", str(cache), "--config", str(settings),
            *FAST, *extra]


def assert_one_error_line(err: str, *needles: str) -> str:
    """The CLI's error: one 'error: ...' line naming the problem, no traceback."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- one mixed folder, trained on --------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(corpus, cache, settings, tmp_path_factory):
    """`ultrasonic train` on the mixed folder (default: skip bad images, stop above 5 %).

    Returns (exit status, run directory, the run's log: train.log gets what the console gets).
    """
    out = tmp_path_factory.mktemp("runs") / "messy"
    code = main(train_args(corpus, out, cache, settings))
    return code, out, (out / "train.log").read_text()


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.slow  # data handling: once, under TensorFlow (see pyproject's markers)
def test_mixed_folder_trains_and_reports_every_bad_file_with_its_reason(trained):
    code, out, log = trained
    assert code == 0 and (out / "model.keras").is_file() and (out / "meta.json").is_file()
    report = json.loads((out / "data_report.json").read_text())
    expected = {name: reason for name, (_, reason) in broken_files().items()}
    got = {item["file"]: item["reason"] for item in report["unreadable"]}
    assert set(got) == set(expected)
    for name, reason in expected.items():
        assert reason in got[name], (name, got[name])
    n_bad, n_all = len(expected), N_GOOD + len(READ_CHECKS) + len(expected)
    # the log says how many, and names the first few with their reasons
    assert f"{n_bad} of {n_all} images unreadable ({100 * n_bad / n_all:.1f} %), skipped; listed in " \
           "data_report.json" in log
    assert "unreadable image normal/bomb.png: 23000 x 23000 px is more than the limit" in log
    # every readable image (good and odd) is in a split; the broken ones in none
    assert sum(sum(c.values()) for c in report["counts"].values()) == N_GOOD + len(READ_CHECKS)
    assert report["images"] == n_all


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.slow
def test_hidden_files_are_ignored_and_listed(trained):
    report = json.loads((trained[1] / "data_report.json").read_text())
    assert {"file": "normal/.DS_Store", "reason": "hidden file"} in report["skipped"]
    assert {"file": "pneumonia/._foo.png", "reason": "hidden file"} in report["skipped"]
    assert not any(".DS_Store" in item["file"] or "._foo" in item["file"] for item in report["unreadable"])


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.slow
def test_odd_but_readable_images_are_read_correctly(trained):
    """What training used (the same decode-once cache entry): EXIF applied, 16 bit scaled, alpha dropped."""
    code, out, _ = trained
    cfg = load_config(file=out / "config.yaml")
    ds = load_dataset(cfg)
    assert ds.loaded.decoded == 0  # the entry train wrote, not a fresh decode
    for name, (check, what) in READ_CHECKS.items():
        index = ds.catalog.refs.index(name)
        assert ds.split[index] in ("train", "val", "test"), name
        assert check(np.asarray(ds.images[index])[..., 0].astype(float)), f"{name}: {what}"


@pytest.mark.e2e
@pytest.mark.once
@pytest.mark.slow
def test_dicom_without_pixel_data_is_skipped_with_reason(trained):
    if not HAVE_PYDICOM:
        pytest.skip("pydicom is not installed: DICOM files cannot be read at all")
    report = json.loads((trained[1] / "data_report.json").read_text())
    reasons = {item["file"]: item["reason"] for item in report["unreadable"]}
    assert reasons["pneumonia/report.dcm"].startswith("DICOM Basic Text SR Storage object (1.2.840.10008.5.1.4.1.1.88.11) "
                                                      "is not an image")


def test_decoder_failures_are_each_files_reason_in_data_report(corpus, cache, tmp_path):
    """Without training: the report lists every file the decoder failed on, with the exception, and the note."""
    import logging

    report_path = tmp_path / "data_report.json"
    cfg = load_config(overrides=dict(data=str(corpus), cache_dir=str(cache), image_size=SIZE, min_split_images=10))
    logged = io.StringIO()
    handler = logging.StreamHandler(logged)  # our own: the CLI's logger setup may stop propagation to caplog
    logging.getLogger("ultrasonic").addHandler(handler)
    try:
        load_dataset(cfg, report_to=report_path)
    finally:
        logging.getLogger("ultrasonic").removeHandler(handler)
    report = json.loads(report_path.read_text())
    reasons = {item["file"]: item["reason"] for item in report["unreadable"]}
    crashes = {name: reason for name, (_, reason) in broken_files().items() if "crash_" in name}
    assert len(crashes) == 9
    for name, start in crashes.items():
        assert reasons[name].startswith(start) and "convert it to PNG" in reasons[name], reasons[name]
    assert report["file_notes"] == [{"file": "normal/noted.png", "note": NOTE}]
    assert f"note on normal/noted.png: {NOTE}" in logged.getvalue()


# --- policies: fail at the first, too many bad ---------------------------------------------------


def test_on_bad_image_fail_stops_at_the_first_with_its_name(corpus, cache, settings, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(train_args(corpus, out, cache, settings, "--on-bad-image", "fail"))
    first = sorted(broken_files())[0]  # catalog order: class folders, then sorted names
    line = assert_one_error_line(capsys.readouterr().err, str(corpus / first), "on_bad_image=fail",
                                 "--on-bad-image skip")
    assert code == 2 and "more, listed in data_report.json" in line
    assert not (out / "model.keras").exists()
    report = json.loads((out / "data_report.json").read_text())  # written before the run stopped
    assert len(report["unreadable"]) == len(broken_files())


def test_on_bad_image_fail_through_the_python_api(corpus, cache, tmp_path):
    from ultrasonic import train

    with pytest.raises(DataError, match="on_bad_image=fail") as info:
        train(str(corpus), str(tmp_path / "run"), cache_dir=str(cache), image_size=SIZE, epochs=1,
              on_bad_image="fail", tensorboard=False, verbose=0)
    assert str(corpus / sorted(broken_files())[0]) in str(info.value)


def test_more_bad_files_than_the_fraction_stops_the_run(corpus, cache, settings, tmp_path, capsys):
    n_bad = len(broken_files())
    n_all = N_GOOD + len(READ_CHECKS) + n_bad
    code = main(train_args(corpus, tmp_path / "run", cache, settings, "--max-bad-fraction", "0.01"))
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, f"{n_bad} of {n_all} images are unreadable",
                          f"({100 * n_bad / n_all:.1f} % > max_bad_fraction 1 %)", "--max-bad-fraction")


def test_default_fraction_is_five_percent(tmp_path, cache, settings, capsys):
    root = tmp_path / "data"
    write_good(root, 36, seed=3)
    write_files(root, {"normal/empty.png": b"", "pneumonia/empty.png": b""})  # 2 of 38 = 5.3 %
    code = main(train_args(root, tmp_path / "run", cache, settings))
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "2 of 38 images are unreadable (5.3 % > max_bad_fraction 5 %)")


# --- structural problems: one clear line, before training ------------------------------------


def structural(tmp_path: Path, case: str) -> Path:
    root = tmp_path / case
    if case == "empty_class":
        write_good(root, 20)
        (root / "effusion").mkdir()
    elif case == "hidden_only_class":
        write_good(root, 20)
        write_files(root, {"effusion/.DS_Store": b"x", "effusion/._a.png": b"x"})
    elif case == "single_class":
        write_good(root, 20, classes=("normal", "normal"))
    elif case == "split_classes_differ":
        write_good(root / "train", 20)
        write_good(root / "val", 20, seed=1, classes=("normal", "effusion"))
    elif case == "no_images":
        (root / "normal").mkdir(parents=True)
        write_files(root, {"pneumonia/readme.txt": b"x"})
    return root


@pytest.mark.parametrize("case, needles", [
    ("empty_class", ["effusion", "class folder has no images"]),
    ("hidden_only_class", ["effusion", "class folder has no images"]),
    ("single_class", ["found 1 class folder(s) ['normal']", "at least two"]),
    ("split_classes_differ", ["val", "differ from train's", "['effusion', 'normal']"]),
    ("no_images", ["class folder has no images"]),
])
def test_structural_problem_stops_before_training_with_one_line(tmp_path, cache, settings, capsys, case,
                                                                needles):
    root = structural(tmp_path, case)
    out = tmp_path / "run"
    code = main(train_args(root, out, cache, settings))
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, *needles)
    assert not (out / "model.keras").exists() and not (out / "history.csv").exists()


def test_a_class_left_without_readable_images_is_a_clear_error(tmp_path, cache, settings, capsys):
    """Every file of one class broken (but few enough overall): the split check names the class."""
    root = tmp_path / "data"
    write_good(root, 60, classes=("normal", "pneumonia"))
    write_files(root, {"effusion/a.png": b"", "effusion/b.png": b"GIF89a? no"})
    code = main(train_args(root, tmp_path / "run", cache, settings))  # 2 of 62 bad: under 5 %
    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "has no images of ['effusion']")
