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


class ServiceBusyError(UltrasonicError):
    """The service has no room for a request now (its decoding budget is full); the client retries later."""

    def __init__(self, message: str, retry_after_s: int):
        self.retry_after_s = retry_after_s
        super().__init__(message)


class DownloadError(UltrasonicError):
    """A download failed or its checksum did not match."""


class ServerStartError(UltrasonicError):
    """The server exited or did not answer /health in time; the message ends with its log."""


class PacsError(UltrasonicError):
    """A PACS (DICOMweb) cannot be reached, refuses the credentials or answers a search with an error."""


def error_lines(exc: BaseException, command: str) -> list[str]:
    """'error: ...' lines for the user: an OSError names its path, a MemoryError what was running."""
    if isinstance(exc, MemoryError):
        text = str(exc)
        if not text.startswith("out of memory"):
            text = f"out of memory while running `ultrasonic {command}`" + (f" ({text})" if text else "")
        return [f"error: {text}; close other programs or lower batch_size, image_size or workers"]
    if isinstance(exc, OSError) and not isinstance(exc, UltrasonicError):
        where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        what = exc.strerror or str(exc)
        return [f"error: {where}: {what}" if where else f"error: {what}"]
    lines = str(exc).splitlines() or [""]
    if isinstance(exc, ConfigError):  # one bad setting per line: load_config reports them all at once
        return [f"error: {line}" for line in lines]
    return [f"error: {lines[0]}", *lines[1:]]
