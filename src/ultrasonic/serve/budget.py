"""DecodeBudget: the decoded bytes of all uploads being decoded at once stay under one process-wide budget.

A 1.5 MB RLE-compressed 7000 x 7000 16-bit DICOM is inside the upload and pixel limits; decoding it took
about 1.2 GB while the grey display pipeline ran on the whole frame in float64 (0.2 GB since it runs in
blocks of rows), and four at once took the server from 0.8 to 3.9 GB. So before an upload is decoded, its
decoded size is estimated from its header (the pixel count the max_pixels check reads, times the bytes
the decoders' working copies take per pixel) and that much is taken from the budget; the rest of the
request runs on the small resized image and needs none. When the budget has no room, the request waits
up to `wait_s`, then fails with ServiceBusyError (503 with Retry-After); an image that alone needs more
than the whole budget gets ImageTooLargeError (413), like one over --max-pixels.

    budget = DecodeBudget(capacity=1024 * 2**20, wait_s=5)
    with budget.hold(data, "scan.dcm"):
        decoded = predictor.decode(data, name="scan.dcm")

Bytes per pixel at the peak of read_image (measured as the growth of ru_maxrss over one decode to 64 px,
4000 x 4000 and 7000 x 7000 images, pydicom 3, Pillow): colour DICOM 10, 8-bit PNG/TIFF 5-10, JPEG under 1
(draft mode decodes at 1/8 scale). Since the grey DICOM pipeline and the scaling of deep images to 0-255
run in blocks of rows (data/io.row_blocks; on the whole image in float64 they took 26-37), measured as the
VmHWM growth of test_the_estimate_covers_what_decoding_really_takes at 2000 x 2000 and 7000 x 7000 (4000
for 32-bit TIFF): grey DICOM 16-bit 4.1-5.2 at 7000 and 5.0-7.2 at 2000 (rescale, window, VOI LUT,
MONOCHROME1, min-max: the stored data, the decoded frame and the uint8 image, plus about 10 MB of block
working copies; an RLE file peaks in pydicom's RLE decoder itself, 4.1), 8-bit 3.4-4.6, 32-bit 9.4-10.6
(the stored data and the frame take 2 bytes more per pixel for each byte over 2); 16-bit PNG 6.0-7.3;
32-bit integer or float TIFF 12.2-12.9. The estimates below round those up.
"""

from __future__ import annotations

import io
import math
import threading
from contextlib import contextmanager

from ultrasonic.errors import ImageTooLargeError, ServiceBusyError

GREY_DICOM = 12  # bytes per pixel while decoding 8- or 16-bit grey DICOM
DEEP_GREY_DICOM = 2  # and per pixel for each byte a sample takes over 2 (32-bit: 16 in all)
COLOUR_DICOM = 12
DEEP16_PIL = 12  # 16-bit modes, scaled to 0-255 in blocks
DEEP_PIL = 16  # 32-bit integer and float modes
JPEG = 2
OTHER_PIL = 10
DEEP_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class DecodeBudget:
    """A counting semaphore on bytes, shared by the request threads; capacity 0: no budget (never waits)."""

    def __init__(self, capacity: int, wait_s: float = 5.0):
        self.capacity = capacity
        self.wait_s = wait_s
        self.in_use = 0
        self._room = threading.Condition()

    @contextmanager
    def hold(self, data: bytes, label: str):
        """Hold the estimated decoded size of `data` for the block; released whatever the block raises."""
        nbytes = self.acquire(estimate_decoded_bytes(data), label)
        try:
            yield nbytes
        finally:
            self.release(nbytes)

    def acquire(self, nbytes: int, label: str) -> int:
        """Take `nbytes` (waiting up to wait_s for room); returns what was taken (0 without a budget)."""
        if not self.capacity or nbytes <= 0:
            return 0
        if nbytes > self.capacity:
            raise ImageTooLargeError(label, f"decoding it takes about {_mb(nbytes)} MB, more than the whole "
                                            f"decoding budget of {_mb(self.capacity)} MB; send a smaller image, "
                                            "or restart the service with a larger --decode-budget-mb")
        with self._room:
            if not self._room.wait_for(lambda: self.in_use + nbytes <= self.capacity, timeout=self.wait_s):
                retry = max(1, math.ceil(self.wait_s))
                raise ServiceBusyError(f"{label}: the service is decoding other images and had no room for this "
                                       f"one (about {_mb(nbytes)} MB of its {_mb(self.capacity)} MB decoding "
                                       f"budget) within {self.wait_s:g} s; send it again in {retry} s", retry)
            self.in_use += nbytes
        return nbytes

    def release(self, nbytes: int) -> None:
        if not nbytes:
            return
        with self._room:
            self.in_use -= nbytes
            self._room.notify_all()


def estimate_decoded_bytes(data: bytes) -> int:
    """The peak bytes read_image takes to decode `data`, from its header alone; 0 when the header cannot be
    read (the decoder, which parses it the same way, then refuses the file before decoding any pixel)."""
    from ultrasonic.data.dicom import looks_like_dicom

    try:
        return _dicom_bytes(data) if looks_like_dicom(data) else _pil_bytes(data)
    except MemoryError:
        raise
    except Exception:  # a malformed header: the decoder's error says what is wrong with it
        return 0


def _dicom_bytes(data: bytes) -> int:
    import pydicom

    has_preamble = len(data) >= 132 and data[128:132] == b"DICM"
    ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble, stop_before_pixels=True)
    pixels = int(ds.Rows) * int(ds.Columns)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        return pixels * COLOUR_DICOM
    deep = max(0, int(ds.get("BitsAllocated", 16) or 16) // 8 - 2)
    return pixels * (GREY_DICOM + DEEP_GREY_DICOM * deep)


def _pil_bytes(data: bytes) -> int:
    from PIL import Image

    from ultrasonic.data.formats import PIL_FORMATS

    with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as img:
        width, height = img.size
        per_pixel = (DEEP16_PIL if img.mode.startswith("I;16") else DEEP_PIL if img.mode in DEEP_MODES
                     else JPEG if img.format in ("JPEG", "MPO") else OTHER_PIL)
    return width * height * per_pixel


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:,.0f}"
