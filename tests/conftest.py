"""Shared fixtures: small synthetic images and data folders made in tmp_path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def distinct_image(index: int, size: int = 40) -> np.ndarray:
    """A gray uint8 image whose content is unique to `index` (so content hashes differ)."""
    rng = np.random.default_rng(index)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


@pytest.fixture
def make_class_folders():
    """make(root, {"class": n_images, ...}) -> root, one distinct PNG per image."""

    def make(root: Path, counts: dict[str, int], size: int = 40, start: int = 0) -> Path:
        index = start
        for name, n in counts.items():
            folder = Path(root) / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(distinct_image(index, size)).save(folder / f"img{k:03d}.png")
                index += 1
        return Path(root)

    return make


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny binary run (32 px synthetic lesions, evaluated), trained once per session: the service tests."""
    from live_server import train_tiny_run

    return train_tiny_run(tmp_path_factory.mktemp("tiny_run"))
