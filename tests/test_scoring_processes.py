"""Process plumbing of a scoring run: report workers start before the model runs (memory, issue 15)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import psutil
import pytest

from monai_fracture.scoring.processes import report_pool, return_large_buffers


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forked report workers need fork")
def test_report_workers_are_forked_when_the_pool_is_made():
    """Forked later (at the first study) a worker kept a copy-on-write image of the loaded backend."""
    before = {p.pid for p in psutil.Process().children()}
    pool = report_pool(2)
    try:
        started = {p.pid for p in psutil.Process().children()} - before
        assert len(started) == 2  # nothing was submitted by the caller yet
        assert set(pool.map(_pid, range(8))) <= started
    finally:
        pool.shutdown(wait=True)


def _pid(_: int) -> int:
    return os.getpid()


FREED_BUFFERS = """
import os, sys
from monai_fracture.scoring.processes import return_large_buffers
if sys.argv[1] == "fixed":
    assert return_large_buffers()
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
big = bytearray(16 << 20)
del big  # glibc's default then serves buffers under 16 MiB from the heap, and keeps them when freed
buffers = [bytearray(12 << 20) for _ in range(2)]  # 24 MiB, touched
after = bytearray(64)
held = rss()
del buffers
print((held - rss()) >> 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_freed_large_buffers_go_back_to_the_system():
    """Decoded images, heatmaps and ONNX Runtime activations freed by a scoring process leave its RSS."""
    def returned(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FREED_BUFFERS, mode], capture_output=True, text=True,
                              timeout=120, check=True)
        return int(done.stdout.split()[-1])

    assert returned("fixed") >= 20  # MiB of the 24 freed
    assert returned("default") <= 4  # the control: glibc's own policy keeps them
