"""collect_warnings: the Python warnings a decoder emits, kept for the file being decoded.

Pillow and pydicom report oddities they work around (corrupt EXIF, an invalid
header value) with `warnings.warn`, which names no file. While one thread
decodes a file inside `collect_warnings(notes)`, every warning raised in that
thread is appended to `notes` as "decoder warning: <text>" instead of being
printed; other threads' warnings go their usual way.

`warnings.catch_warnings` would not do: it swaps process-wide state, so two
threads decoding at once (data/cache.py does) restore each other's filters
and can leave warnings captured into a finished file's list for good. Here
the hook is installed once per process while any thread collects, under a
lock, and each thread collects into its own list.

Not captured: what C libraries print themselves. libtiff writes its warnings
("Unknown field with tag ...") to stderr with no file name, and Pillow offers
no hook for them; redirecting file descriptor 2 would silence every thread's
stderr, so they are left alone.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from typing import Iterator

MAX_WARNINGS = 5  # per file: a header with a thousand bad values gives five notes and a count

_lock = threading.Lock()
_local = threading.local()
_active = 0  # threads collecting now
_saved: tuple | None = None  # (filters, showwarning, warn) from before the first collector
_original_warn = warnings.warn


@contextlib.contextmanager
def collect_warnings(notes: list[str]) -> Iterator[None]:
    """Append this thread's warnings to `notes` (at most MAX_WARNINGS, then how many more)."""
    caught: list[str] = []
    outer = getattr(_local, "caught", None)
    _local.caught = caught
    _install()
    try:
        yield
    finally:
        _local.caught = outer
        _uninstall()
        notes.extend(_summarise(caught))


def _summarise(caught: list[str]) -> list[str]:
    unique = list(dict.fromkeys(caught))
    kept = [f"decoder warning: {text}" for text in unique[:MAX_WARNINGS]]
    if len(unique) > MAX_WARNINGS:
        kept.append(f"decoder warning: {len(unique) - MAX_WARNINGS} more")
    return kept


def _install() -> None:
    global _active, _saved
    with _lock:
        if _active == 0:
            _saved = (warnings.filters[:], warnings.showwarning, warnings.warn)
            warnings.simplefilter("always")  # every occurrence, not once per code line of the decoder
            # warnings.warn (what Pillow and pydicom call) is noted before any filter, so an "ignore" block another
            # thread opens meanwhile (catch_warnings is process-wide) cannot drop a decoding thread's warning;
            # showwarning still catches those raised from C (numpy's RuntimeWarning)
            warnings.showwarning, warnings.warn = _show, _warn
        _active += 1


def _uninstall() -> None:
    global _active, _saved
    with _lock:
        _active -= 1
        if _active == 0 and _saved is not None:
            filters, show, warn = _saved
            warnings.filters[:] = filters
            getattr(warnings, "_filters_mutated", lambda: None)()  # as catch_warnings does: drop cached lookups
            warnings.showwarning, warnings.warn = show, warn
            _saved = None


def _show(message, category, filename, lineno, file=None, line=None) -> None:
    caught = getattr(_local, "caught", None)
    if caught is None:  # another thread, not decoding: its warning is shown as it would have been
        saved_show = _saved[1] if _saved else warnings._showwarning_orig  # type: ignore[attr-defined]
        saved_show(message, category, filename, lineno, file, line)
        return
    caught.append(" ".join(str(message).split()))


def _warn(message, category=None, stacklevel=1, source=None, **kwargs) -> None:
    caught = getattr(_local, "caught", None)
    if caught is None:  # not decoding: one level deeper than the caller's own call, so point at the caller
        return _original_warn(message, category, stacklevel + 1, source, **kwargs)
    caught.append(" ".join(str(message).split()))
