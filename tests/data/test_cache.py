"""load_images: decode once, hit on content (not names), rebuild a damaged entry, report bad files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ultrasonic.data.cache import load_images
from ultrasonic.data.io import read_image
from ultrasonic.data.sources import open_data

N_GOOD = 40  # more than one decoding chunk (32), so workers=2 really runs two


@pytest.fixture
def data(tmp_path, make_class_folders):
    """Two classes of distinct 40 px PNGs plus one text file named like an image."""
    root = make_class_folders(tmp_path / "data", {"a": N_GOOD // 2, "b": N_GOOD // 2})
    (root / "a" / "zz_notes.png").write_text("not an image")
    return root


def expected(catalog, size, channels):
    return [read_image(catalog.path(i), size=size, channels=channels) for i in range(len(catalog))
            if not catalog.refs[i].endswith("zz_notes.png")]


@pytest.mark.parametrize("workers", [1, 2])
def test_first_call_decodes_every_image_second_call_none(tmp_path, data, workers):
    catalog = open_data(str(data))
    first = load_images(catalog, size=32, channels=1, cache_dir=tmp_path / "cache", workers=workers)
    second = load_images(catalog, size=32, channels=1, cache_dir=tmp_path / "cache", workers=workers)

    assert first.decoded == len(catalog) == N_GOOD + 1
    assert second.decoded == 0
    assert first.images.shape == (N_GOOD + 1, 32, 32, 1) and first.images.dtype == np.uint8
    np.testing.assert_array_equal(second.images, first.images)
    good = [i for i in range(len(catalog)) if i not in first.bad]
    np.testing.assert_array_equal(np.asarray(first.images)[good], np.stack(expected(catalog, 32, 1)))
    assert second.path == first.path and first.path.parent == tmp_path / "cache" / "images"
    assert second.hashes == first.hashes


def test_unreadable_file_is_reported_with_reason_and_zero_row(tmp_path, data):
    catalog = open_data(str(data))
    index = catalog.refs.index("a/zz_notes.png")
    first = load_images(catalog, size=32, channels=1, cache_dir=tmp_path, workers=1)
    second = load_images(catalog, size=32, channels=1, cache_dir=tmp_path, workers=1)

    assert list(first.bad) == [index]
    assert first.bad[index].startswith("not a recognised image")
    assert not np.asarray(first.images[index]).any()
    assert second.bad == first.bad  # the reasons survive the cache, keyed by int index


def test_renamed_and_moved_files_still_hit(tmp_path, data):
    load_images(open_data(str(data)), size=32, channels=1, cache_dir=tmp_path / "cache", workers=1)
    moved = Path(shutil.move(data, tmp_path / "elsewhere"))
    for path in sorted(moved.rglob("*.png")):
        path.rename(path.with_name(f"renamed_{path.name}"))  # keeps the order within each class

    again = load_images(open_data(str(moved)), size=32, channels=1, cache_dir=tmp_path / "cache", workers=1)
    assert again.decoded == 0


def test_changed_content_size_or_channels_miss(tmp_path, data):
    catalog = open_data(str(data))
    cache = tmp_path / "cache"
    load_images(catalog, size=32, channels=1, cache_dir=cache, workers=1)

    bigger = load_images(catalog, size=24, channels=1, cache_dir=cache, workers=1)
    colour = load_images(catalog, size=32, channels=3, cache_dir=cache, workers=1)
    assert bigger.decoded == colour.decoded == len(catalog)
    assert bigger.images.shape[1:] == (24, 24, 1) and colour.images.shape[1:] == (32, 32, 3)

    catalog.path(0).write_bytes(catalog.path(1).read_bytes())
    assert load_images(catalog, size=32, channels=1, cache_dir=cache, workers=1).decoded == len(catalog)


def test_corrupted_entry_fails_its_checksum_and_is_rebuilt(tmp_path, data):
    catalog = open_data(str(data))
    first = load_images(catalog, size=32, channels=1, cache_dir=tmp_path, workers=1)
    path = first.path
    del first  # release the memory map before damaging the file

    raw = bytearray(path.read_bytes())
    raw[-500:] = bytes(b ^ 0xFF for b in raw[-500:])  # the last image's pixels, not the header
    path.write_bytes(bytes(raw))

    rebuilt = load_images(catalog, size=32, channels=1, cache_dir=tmp_path, workers=1)
    assert rebuilt.decoded == len(catalog)
    np.testing.assert_array_equal(rebuilt.images[-1], read_image(catalog.path(len(catalog) - 1), size=32, channels=1))
    assert load_images(catalog, size=32, channels=1, cache_dir=tmp_path, workers=1).decoded == 0


def test_npz_arrays_are_converted_without_a_store(tmp_path):
    images = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    np.savez(tmp_path / "d.npz", train_images=images, train_labels=np.array([0, 1, 0, 1]))
    catalog = open_data(str(tmp_path / "d.npz"))

    same = load_images(catalog, size=28, channels=1, cache_dir=tmp_path)
    assert same.decoded == 0 and same.path is None
    np.testing.assert_array_equal(same.images[..., 0], images)
    resized = load_images(catalog, size=32, channels=3, cache_dir=tmp_path)
    assert resized.images.shape == (4, 32, 32, 3) and resized.decoded == 4
    assert not (tmp_path / "images").exists()


def test_the_quality_limits_decide_what_is_refused_and_are_part_of_the_cache_key(tmp_path):
    """min_image_side / min_dynamic_range from the settings reach the decoder; other limits, another entry."""
    from PIL import Image

    from ultrasonic.config import load_config
    from ultrasonic.data.dataset import load_dataset

    for name in ("normal", "pneumonia"):
        (tmp_path / "data" / name).mkdir(parents=True)
        for k in range(6):
            Image.fromarray(np.random.default_rng(k).integers(0, 256, (40, 40), dtype=np.uint8)).save(
                tmp_path / "data" / name / f"{name}{k}.png")
    small = np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1))
    Image.fromarray(small).save(tmp_path / "data" / "normal" / "small.png")

    def load(**limits):
        cfg = load_config(overrides=dict(data=str(tmp_path / "data"), image_size=16, cache_dir=str(tmp_path / "c"),
                                         val_fraction=0.0, test_fraction=0.0, max_bad_fraction=0.5, **limits))
        ds = load_dataset(cfg)
        return ds, {ds.catalog.refs[i] for i in ds.loaded.bad}

    strict, refused = load()
    reason = strict.loaded.bad[strict.catalog.refs.index("normal/small.png")]
    assert refused == {"normal/small.png"} and "min_image_side 24" in reason
    lenient, refused = load(min_image_side=0)
    assert refused == set() and lenient.loaded.path != strict.loaded.path
    again, refused = load()
    assert refused == {"normal/small.png"} and again.loaded.path == strict.loaded.path and again.loaded.decoded == 0
