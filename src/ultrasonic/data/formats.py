"""The accepted file formats, listed once: the folder scan (data/files.py) and the reader (data/io.py) both use it.

    IMAGE_SUFFIXES    # {".png", ".jpg", ..., ".dcm"}: what the folder scan takes
    PIL_FORMATS       # ("PNG", "JPEG", ...): what Pillow may try, sniffed from the content
    ACCEPTED          # "PNG, JPEG, ... or DICOM": the words every "not an image" message uses

A format is added or refused here and nowhere else, so a file the reader
decodes is never one the folder scan skips, and the other way round.
"""

from __future__ import annotations

import functools

# Pillow format name -> (name for people, file name suffixes). No "MPO": Pillow opens MPO
# through JPEG's factory and has no OPEN entry for it, so naming it raises KeyError for
# every format listed after it; an MPO file still opens (as JPEG) and gets a multi-frame note.
PIL_FORMAT_SUFFIXES: dict[str, tuple[str, tuple[str, ...]]] = {
    "PNG": ("PNG", (".png", ".apng")),
    "JPEG": ("JPEG", (".jpg", ".jpeg")),
    "BMP": ("BMP", (".bmp",)),
    "TIFF": ("TIFF", (".tif", ".tiff")),
    "GIF": ("GIF", (".gif",)),
    "WEBP": ("WebP", (".webp",)),
    "PPM": ("PPM/PGM/PBM", (".ppm", ".pgm", ".pbm", ".pnm")),
    "JPEG2000": ("JPEG 2000", (".jp2", ".j2k")),
}
DICOM_SUFFIXES = (".dcm", ".dicom")

PIL_FORMATS = tuple(PIL_FORMAT_SUFFIXES)
IMAGE_SUFFIXES = frozenset(s for _, suffixes in PIL_FORMAT_SUFFIXES.values() for s in suffixes) | set(DICOM_SUFFIXES)
ACCEPTED = ", ".join(name for name, _ in PIL_FORMAT_SUFFIXES.values()) + " or DICOM"

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def tiff_codec_problem(data: bytes) -> str | None:
    """For a TIFF whose compression this Pillow/libtiff cannot decode, the sentence saying so; else None.

    Pillow reports a missing libtiff codec (e.g. WebP-in-TIFF) only as "decoder
    error -2", and refuses a compression it has no name for as "cannot identify
    image file": both would read as a corrupt file. The compression tag is read
    from the first directory and libtiff is asked whether it has that codec.
    """
    if data[:4] not in TIFF_MAGIC:
        return None
    code = _tiff_compression(data)
    if code is None or code == 1:
        return None
    from PIL import TiffImagePlugin, features

    name = TiffImagePlugin.COMPRESSION_INFO.get(code)
    if name is not None and (features.check_codec("libtiff") and _libtiff_has_codec(code) is not False):
        return None
    what = f"{name} ({code})" if name else f"{code}"
    return (f"TIFF compression {what} is not supported by this Pillow/libtiff; convert the file to an "
            "uncompressed, LZW or Deflate TIFF, or to PNG")


def _tiff_compression(data: bytes) -> int | None:
    import io

    from PIL import TiffImagePlugin

    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(data[:16] if data[2:4] in (b"+\x00", b"\x00+") else data[:8])
        fp = io.BytesIO(data)
        fp.seek(ifd.next)
        ifd.load(fp)
        return int(ifd.get(259, 1))
    except Exception:  # a directory Pillow cannot parse: the caller's own message stands
        return None


def _libtiff_has_codec(code: int) -> bool | None:
    """libtiff's own answer (TIFFIsCODECConfigured) from the libtiff Pillow loaded; None when unknown."""
    probe = _libtiff_probe()
    return None if probe is None else bool(probe(code))


@functools.cache
def _libtiff_probe():
    import ctypes

    for path in _libtiff_paths():
        try:
            function = ctypes.CDLL(path).TIFFIsCODECConfigured
        except (OSError, AttributeError):
            continue
        function.argtypes, function.restype = [ctypes.c_uint16], ctypes.c_int
        return function
    return None


def _libtiff_paths() -> list[str]:
    """The libtiff already mapped into this process (Linux), else the one bundled with Pillow's wheel."""
    import glob
    from pathlib import Path

    import PIL
    from PIL import Image  # noqa: F401  (loads Pillow's core, and with it libtiff)

    paths = []
    try:
        with open("/proc/self/maps") as maps:
            mapped = {line.split()[-1] for line in maps if len(line.split()) >= 6}
        paths = sorted(p for p in mapped if "/libtiff" in p and ".so" in p)
    except OSError:
        pass
    bundled = Path(PIL.__file__).parent
    for pattern in ("../pillow.libs/libtiff*", ".dylibs/libtiff*"):
        paths += sorted(glob.glob(str(bundled / pattern)))
    return paths
