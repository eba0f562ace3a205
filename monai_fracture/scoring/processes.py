"""Process plumbing of a scoring run: the report-writer pool and the CPU thread budget.

Report workers are forked (cheap start, modules already loaded), ignore Ctrl-C (the main process
decides) and die with their parent, even when it is SIGKILLed (Linux ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import contextmanager

import torch

from monai_fracture.reports.warmup import load_standard_tables


def default_report_workers() -> int:
    """Processes that build SR/KOS: one per four cores, 1 to 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 4))


def _ignore_sigint() -> None:
    # Ctrl-C reaches the whole process group; report workers finish the study they are writing
    # and the main process decides what to do.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    return_large_buffers()


#: glibc ``mallopt`` parameter number of the mmap threshold (malloc.h).
_M_MMAP_THRESHOLD = -3
LARGE_BUFFER_BYTES = 8 << 20


def return_large_buffers() -> bool:
    """glibc: serve every allocation of 8 MiB or more by ``mmap``, so freeing it gives it back to the system.

    By default glibc raises its mmap threshold up to 32 MiB after the first large buffer is freed;
    from then on decoded 2048x2048 images, heatmaps and ONNX Runtime's activations come from the heap,
    whose freed pages the process keeps (summed PSS of a run grew by hundreds of MB, see
    docs/performance.md, Memory). A fixed threshold also stops that adjustment. 8 MiB, not lower:
    a 2048x2048 image's buffers are larger, while the activations of a few images at 320 px stay
    on the heap and are reused instead of being mapped and faulted in again on every call.
    Returns False where there is no glibc (a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, LARGE_BUFFER_BYTES))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False


def _die_with_parent() -> None:
    """Linux: end this forked worker when its parent dies, even by SIGKILL (else it lingers forever)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        # SIGKILL, not SIGTERM: the worker inherits the parent's SIGTERM handler, which only sets a flag;
        # a report cut short leaves just a temporary file, removed by the next run
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)


def report_pool(workers: int, warm: bool = False) -> Executor:
    """Forked worker processes where fork exists (cheap start, modules already loaded), else threads.

    ``warm`` (a run that writes DICOM) forks them at once and has them read highdicom's standard
    tables while the main process scores (``reports.warmup``), not when the first study is due.

    ``workers <= 0`` builds reports in one thread of this process: for long-running servers,
    whose forked children would inherit (and, if the server is killed, keep) its listening socket.
    """
    if workers <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="reports")
    if "fork" in multiprocessing.get_all_start_methods():
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("fork"), initializer=_ignore_sigint
        )
        if warm:  # the submit forks every worker now, before the model runs (see start_workers_now)
            pool.submit(load_standard_tables)
        else:
            start_workers_now(pool)
        return pool
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reports")


def start_workers_now(pool: ProcessPoolExecutor) -> None:
    """Fork the workers of ``pool`` now, not at the first submitted study.

    A forked worker keeps a copy-on-write image of its parent as it was at the fork. Forked at
    the first study, a report worker would inherit the model backend (ONNX Runtime's buffers, the
    batches the backend choice ran) and keep those pages while the parent rewrites its own copy:
    hundreds of MB of summed PSS (docs/performance.md, Memory). Forked here, before the model
    runs, it inherits little more than the imported modules. With the fork context a pool starts
    all its workers at the first submit, so one task starts them all.
    """
    pool.submit(os.getpid).result()


@contextmanager
def model_threads(device: torch.device, decode_workers: int, report_workers: int) -> Iterator[list[int]]:
    """Give the model the cores that decode workers and report writers leave (CPU only), then restore.

    Also makes this process return large freed buffers to the system (``return_large_buffers``).

    Yields a one-element list that holds, on exit, the thread count the model ran with.
    """
    return_large_buffers()  # before the backend is chosen and decode workers fork (they inherit it)
    threads = torch.get_num_threads()
    if decode_workers > 0 and device.type == "cpu":
        # decode workers and report writers need cores too: do not oversubscribe
        torch.set_num_threads(max(1, min(threads, (os.cpu_count() or 1) - decode_workers - report_workers)))
    used = [torch.get_num_threads()]
    try:
        yield used
    finally:
        used[0] = torch.get_num_threads()
        torch.set_num_threads(threads)
