"""How a scoring command turns a run's failures into messages and exit codes (``score``, DICOMweb ``score``).

2: a usage error (bad model, journal of another run, unavailable backend or cluster, planted symlink,
...); 3: disk full (the journal is whole: free space and rerun to resume); 130: interrupted
(Ctrl-C or SIGTERM: outputs consistent, rerun to finish).
"""

from __future__ import annotations

import errno
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
EXIT_USAGE, EXIT_DISK_FULL, EXIT_INTERRUPTED = 2, 3, 130


def usage(message: str) -> int:
    print(f"monai-fracture score: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _raise_interrupt(signum, frame):  # SIGTERM ends the run like Ctrl-C: consistent outputs, exit 130
    raise KeyboardInterrupt


def usage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "fix the command or its inputs", not a bug."""
    from monai_fracture.files import UnsafeOutputError
    from monai_fracture.model.backend_table import BackendUnavailable
    from monai_fracture.model.package import ModelPackageError
    from monai_fracture.scoring import ModelNotFoundError
    from monai_fracture.scoring.journal import JournalMismatchError
    from monai_fracture.scoring.ray_engine import RayUnavailable

    return (ModelNotFoundError, ModelPackageError, JournalMismatchError, BackendUnavailable, UnsafeOutputError,
            RayUnavailable)


def run_guarded(out: Path, call: Callable[[], T], extra_usage_errors: tuple[type[BaseException], ...] = ()) -> T | int:
    """``call()`` with SIGTERM as Ctrl-C; its value, or the exit code of a usage error, a full disk or an interrupt."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return call()
    except usage_errors() + extra_usage_errors as err:
        return usage(str(err))
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        print(f"monai-fracture score: error: disk full ({err.filename or out}): free space and run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_DISK_FULL
    except KeyboardInterrupt:  # before the run had its outputs open
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
