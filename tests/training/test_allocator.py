"""allocator.keep_freed_memory: freed memory is reused, not faulted in again; the user's own settings win."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ultrasonic.training import allocator

SRC = str(Path(__file__).resolve().parents[2] / "src")

# 64 MB blocks are above glibc's largest mmap threshold: by default each malloc is a fresh mapping and
# each free gives it back, so touching the block faults in every page again.
CHILD = """
import ctypes, resource, sys
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
if sys.argv[1] == "tuned":
    from ultrasonic.training.allocator import keep_freed_memory
    print(keep_freed_memory())
else:
    print(None)
size = 64 << 20
def touch_and_free():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    touch_and_free()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(variant: str, **env) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", CHILD, variant], env={**clean, "PYTHONPATH": SRC, **env},
                         capture_output=True, text=True, check=True).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    said, tuned = _faults("tuned")
    _, default = _faults("glibc")
    assert said == "True"
    assert default >= 10 * 1000, default  # ten 64 MB blocks, each faulted in afresh (>= 1,000 pages each)
    assert tuned * 20 < default, (tuned, default)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_the_users_own_malloc_settings_are_left_alone():
    said, faults = _faults("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert said == "False"
    assert faults >= 10 * 1000  # glibc's behaviour, as the user asked


def test_other_systems_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator.keep_freed_memory() is False
