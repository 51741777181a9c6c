"""dicomize: pictures as Secondary Capture files that read back to the same pixels and pass dciodvfy."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from PIL import Image

from ultrasonic.cli import main
from ultrasonic.data.io import read_image
from ultrasonic.errors import ConfigError
from ultrasonic.pacs.picture import dicomize, write_dicomized
from tiny_run import real_chest_xrays


def _picture(path, rgb=False, seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (36, 44, 3) if rgb else (36, 44), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90) if path.suffix == ".jpeg" else Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("name,rgb", [("grey.png", False), ("grey.jpeg", False), ("colour.png", True)])
def test_a_dicomized_picture_reads_back_to_the_same_pixels(tmp_path, validate, name, rgb):
    picture = _picture(tmp_path / name, rgb)
    [path] = write_dicomized([picture], tmp_path / "out")
    channels = 3 if rgb else 1
    assert np.array_equal(read_image(path, channels=channels), read_image(picture, channels=channels))
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    assert ds.PhotometricInterpretation == ("RGB" if rgb else "MONOCHROME2")
    validate(path)


def test_pictures_share_the_study_given_and_one_series(tmp_path):
    pictures = [_picture(tmp_path / f"p{i}.png", seed=i) for i in range(2)]
    paths = write_dicomized(pictures, tmp_path / "out", study_uid="1.2.826.0.1.3680043.9.1", patient_id="anon-7",
                            modality="DX")
    a, b = (pydicom.dcmread(p) for p in paths)
    assert a.StudyInstanceUID == b.StudyInstanceUID == "1.2.826.0.1.3680043.9.1"
    assert a.SeriesInstanceUID == b.SeriesInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    assert (a.PatientID, a.Modality, [a.InstanceNumber, b.InstanceNumber]) == ("anon-7", "DX", [1, 2])


def test_without_a_study_each_picture_is_its_own_and_the_same_picture_gets_the_same_uids(tmp_path):
    one, two = _picture(tmp_path / "one.png", seed=1), _picture(tmp_path / "two.png", seed=2)
    assert dicomize(one).StudyInstanceUID != dicomize(two).StudyInstanceUID
    assert dicomize(one).SOPInstanceUID == dicomize(one).SOPInstanceUID  # uploading it twice adds no copy


def test_two_pictures_of_one_name_are_refused_before_anything_is_written(tmp_path):
    a = _picture((tmp_path / "a").mkdir() or tmp_path / "a" / "x.png")
    b = _picture((tmp_path / "b").mkdir() or tmp_path / "b" / "x.jpeg")
    with pytest.raises(ConfigError, match="would both be written"):
        write_dicomized([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_bad_modality_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--modality 'chest x-ray'"):
        dicomize(_picture(tmp_path / "p.png"), modality="chest x-ray")


def test_the_command_writes_one_file_per_picture(tmp_path, capsys):
    pictures = [_picture(tmp_path / f"p{i}.png", seed=i) for i in range(2)]
    assert main(["dicomize", *map(str, pictures), "--out", str(tmp_path / "out"), "--modality", "CR",
                 "--patient-id", "anon-2", "--study-uid", "1.2.3.4"]) == 0
    written = capsys.readouterr().out.split()
    assert [pydicom.dcmread(p).StudyInstanceUID for p in written] == ["1.2.3.4"] * 2
    assert main(["dicomize", str(pictures[0]), "--out", str(tmp_path / "o2"), "--series-uid", "1.2"]) == 2


@pytest.mark.realdata
def test_a_real_chest_xray_jpeg(tmp_path, validate):
    pictures = real_chest_xrays(1)[:1]
    if not pictures:
        pytest.skip("../shared/data/chest_xray_224 is absent")
    [path] = write_dicomized(pictures, tmp_path, modality="CR")
    assert np.array_equal(read_image(path, channels=1), read_image(pictures[0], channels=1))
    validate(path)
