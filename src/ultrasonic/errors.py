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


class RunError(UltrasonicError):
    """A run directory is missing, incomplete or from an incompatible version."""
