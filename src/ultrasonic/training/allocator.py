"""Training keeps the memory it frees: glibc's malloc otherwise hands it back to the kernel at once.

Measured (benchmarks/bench_allocator.py, TensorFlow 2.21 on 2 CPU cores, medians of 3 rounds): fed by
a Keras PyDataset, as `train` feeds it, the default network trained at 29.8 images/s, with 7.3 million
minor page faults and 30 s of system time in 40 steps; with the two settings below, 51.9 images/s,
0.75 million and 4 s (1.74x). glibc serves large blocks with mmap and gives them, and the top of the
heap, back to the kernel at every free, so every step faulted its activations' pages in afresh.
A whole `train` of chest_xray_224 went from 29.4 to 17.7 min (system time 1,147 s to 144 s).
M_MMAP_MAX = 0 takes large blocks from the heap; a 1 GiB M_TRIM_THRESHOLD keeps up to that much
freed heap for the next step.

The numbers trained are the same (that cxr run's meta.json and history.csv matched to every digit, timings
aside): only where the memory comes from changes. The cost is that a
training process holds on to up to 1 GiB it has freed, so the service does not do this.
glibc only (mallopt); elsewhere, or when MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ are set in the
environment (the user's own choice), nothing is changed. No Python library does this: it is one
C call, made with ctypes.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 1 << 30  # bytes of freed heap top kept rather than returned
USER_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True when it did (Linux with glibc)."""
    if not sys.platform.startswith("linux") or any(name in os.environ for name in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library already loaded into this process
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
