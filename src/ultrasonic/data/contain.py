"""One file, one outcome: whatever a decoder does with a file, it stays that file's problem.

Pillow, pydicom, pylibjpeg and numpy raise many exception types on odd files
(a CIE L*a*b* TIFF: ValueError; a DICOM whose Number of Frames is not a
number: TypeError; ...). Every command decodes through `decode_contained`,
so any of them becomes a BadImageError (UndecodableImageError) that names the file, the cause and
what to do, and the other files go on. Only KeyboardInterrupt, SystemExit
and MemoryError (the machine's problem, not the file's) pass through.
The decoder's notes (its warnings, a first frame taken) come along as the file's notes.

    decoded = decode_contained("scan.tif", size=224, channels=1)
    decoded.error      # None, or the BadImageError of this file
    decoded.notes      # ["decoder warning: Possibly corrupt EXIF data ...", "animated GIF with 3 frames: ..."]
    image = decoded.unwrap()   # the image, or raises decoded.error
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ultrasonic.data.io import MAX_PIXELS, Source, read_image_with_notes, source_label
from ultrasonic.errors import BadImageError, UndecodableImageError

MAX_TEXT = 300  # characters of one exception or warning message


@dataclass
class Contained:
    """A file's image (uint8 H x W x C) or its error, and the decoder's warnings about it."""

    image: np.ndarray | None
    error: BadImageError | None = None
    notes: list[str] = field(default_factory=list)

    def unwrap(self) -> np.ndarray:
        if self.error is not None:
            raise self.error
        return self.image

    @property
    def note(self) -> str:
        """The notes as one line, for a CSV cell or a JSON field ('' when none)."""
        return "; ".join(self.notes)


def decode_contained(source: Source, size: int | tuple[int, int] | None = None, channels: int = 3, *,
                     name: str | None = None, max_pixels: int = MAX_PIXELS, **limits: int) -> Contained:
    """read_image with every failure of the file turned into its BadImageError; never raises for a file."""
    label = source_label(source, name)
    try:  # read_image_with_notes collects the decoder's warnings per thread (data/notes.py)
        decoded = read_image_with_notes(source, size, channels, name=name, max_pixels=max_pixels, **limits)
    except MemoryError:
        raise
    except BadImageError as exc:
        return Contained(None, exc, [])
    except Exception as exc:  # any decoder bug on this file; KeyboardInterrupt and SystemExit are not Exception
        error = UndecodableImageError(label, undecodable(exc))
        error.__cause__ = exc
        return Contained(None, error, [])
    return Contained(decoded.image, None, list(decoded.notes))


def undecodable(exc: BaseException) -> str:
    """The problem text for an unexpected decoder exception: its type and message, and what to do."""
    return (f"cannot be decoded ({_one_line(f'{type(exc).__name__}: {exc}')}); the file is damaged or a "
            "variant the decoders cannot read: check it in another viewer, or convert it to PNG")


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


