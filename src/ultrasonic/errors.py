"""The project's one error family: every message names the thing, the problem and what to do."""


class UltrasonicError(Exception):
    """Base class of every error ultrasonic raises on purpose."""


class ConfigError(UltrasonicError):
    """A setting is missing, unknown or out of range."""


class DataError(UltrasonicError):
    """A data set is unusable as a whole (no classes, one class, leaks, too many bad files)."""


class BadImageError(UltrasonicError):
    """One image cannot be read; the message starts with the file name."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class ImageTooLargeError(BadImageError):
    """An image has more pixels than allowed (a possible decompression bomb)."""


class UnusableImageError(BadImageError):
    """An image decodes but holds nothing to classify: one grey level, almost no contrast, or a few pixels.

    The problem text starts with "blank or too small to classify"; the limits are the
    settings min_image_side and min_dynamic_range (0 turns each check off).
    """


class UndecodableImageError(BadImageError):
    """A decoder failed on the file in a way no check foresaw (data/contain.py turns any such exception into this)."""


class RunError(UltrasonicError):
    """A run directory is missing, incomplete or from an incompatible version."""


class MissingExtraError(UltrasonicError):
    """An optional dependency is not installed; the message names the extra of ultrasonic that brings it.

        raise MissingExtraError("serve", "`ultrasonic serve`", "fastapi")
    """

    def __init__(self, extra: str, feature: str, module: str, hint: str = ""):
        self.extra = extra
        self.module = module
        super().__init__(f"{feature} needs the optional package {module!r}, which is not installed; "
                         f"install it with: pip install 'ultrasonic[{extra}]'{hint}")


class UploadTooLargeError(UltrasonicError):
    """An upload is over the service's size limit."""


class DownloadError(UltrasonicError):
    """A download failed or its checksum did not match."""


class ServerStartError(UltrasonicError):
    """The server exited or did not answer /health in time; the message ends with its log."""
