"""decode_contained: any exception a decoder raises on one file is that file's error; warnings are its notes."""

from __future__ import annotations

import io
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from crashing_decoder import CRASHES, NOTE, crash_width, crashing_decoder, noise_png, noted_png
from PIL import Image

from ultrasonic.data.contain import decode_contained
from ultrasonic.errors import BadImageError, UndecodableImageError


@pytest.fixture(autouse=True)
def decoder():
    with crashing_decoder():
        yield


@pytest.mark.parametrize("k", range(len(CRASHES)), ids=[kind.__name__ for kind, _ in CRASHES])
def test_any_decoder_exception_becomes_the_files_error(k):
    kind, message = CRASHES[k]
    decoded = decode_contained(noise_png(crash_width(k)), size=32, channels=1, name="scans/odd.tif")
    assert decoded.image is None and isinstance(decoded.error, UndecodableImageError)
    assert isinstance(decoded.error, BadImageError) and decoded.error.source == "scans/odd.tif"
    assert str(decoded.error).startswith(f"scans/odd.tif: cannot be decoded ({kind.__name__}: ")
    assert message in decoded.error.problem  # the cause, as the decoder said it
    assert "convert it to PNG" in decoded.error.problem  # and what to do
    assert isinstance(decoded.error.__cause__, kind)
    with pytest.raises(UndecodableImageError, match="cannot be decoded"):
        decoded.unwrap()


def test_a_files_own_error_is_kept_as_it_is():
    decoded = decode_contained(b"not an image", name="notes.png")
    assert type(decoded.error) is BadImageError and "not a recognised image" in decoded.error.problem


@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, MemoryError])
def test_interrupts_exit_and_out_of_memory_pass_through(monkeypatch, kind):
    def fail(self, *args, **kwargs):
        raise kind()

    monkeypatch.setattr(Image.Image, "resize", fail)
    with pytest.raises(kind):
        decode_contained(noise_png(40), size=32, channels=1, name="a.png")


def test_a_long_multiline_message_is_one_short_line(monkeypatch):
    def fail(self, *args, **kwargs):
        raise ValueError("first line\n" + "x" * 5000)

    monkeypatch.setattr(Image.Image, "resize", fail)
    problem = decode_contained(noise_png(40), size=32, name="a.png").error.problem
    assert "\n" not in problem and len(problem) < 500 and "(ValueError: first line xxx" in problem


def test_decoder_warnings_are_the_files_notes_every_time():
    for _ in range(3):  # the same warning from the same line: noted for every file, not only the first
        decoded = decode_contained(noted_png(), size=32, channels=1)
        assert decoded.error is None and decoded.image.shape == (32, 32, 1)
        assert decoded.notes == [NOTE] and decoded.note == NOTE
    assert decode_contained(noise_png(40), size=32).notes == []


def test_notes_stay_with_their_file_across_threads_and_warnings_are_restored(monkeypatch):
    """Many threads decoding at once (as train and predict do): each file gets its own warnings only,
    even while another thread has warnings ignored for a moment (catch_warnings is process-wide)."""

    def warn_value(self, *args, **kwargs):
        with warnings.catch_warnings():  # as read_image opens files: a process-wide "ignore" for a moment
            warnings.simplefilter("ignore")
            time.sleep(0.002)
        warnings.warn(f"first pixel {self.getpixel((0, 0))}")  # while other threads are in that block
        return real_resize(self, *args, **kwargs)

    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", warn_value)
    data = []
    for value in range(60):
        pixels = np.random.default_rng(value).integers(0, 256, (40, 40), dtype=np.uint8)
        pixels[0, 0] = value
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        data.append(buffer.getvalue())
    before = (warnings.showwarning, warnings.warn, list(warnings.filters))
    with ThreadPoolExecutor(8) as pool:
        decoded = list(pool.map(lambda b: decode_contained(b, size=32, channels=1), data))
    assert [d.notes for d in decoded] == [[f"decoder warning: first pixel {v}"] for v in range(60)]
    assert (warnings.showwarning, warnings.warn, list(warnings.filters)) == before
    with pytest.warns(UserWarning, match="outside"):  # warnings outside a decode are shown as before
        warnings.warn("outside")
