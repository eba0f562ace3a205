"""``monai-fracture <verb>``: a thin dispatcher; each verb lives in ``monai_fracture.commands``.

A verb module exposes ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules are imported only when their verb is used, so ``--help`` stays fast and a missing
optional dependency breaks only its own verb.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import sys
from collections.abc import Sequence

from monai_fracture import __version__
from monai_fracture.log_privacy import install_safe_logging

# What `monai-fracture --help` says to a user (the module docstring is for developers).
DESCRIPTION = (
    "DICOM-aware bone fracture classification for radiographs and CT (research use, not a medical device). "
    "Run `monai-fracture VERB --help` for a verb's options; docs: docs/scoring.md, docs/data.md, docs/deploy.md."
)

# verb -> module under monai_fracture.commands
VERBS: dict[str, str] = {
    "demo-data": "demo_data",
    "datalist": "datalist",
    "score": "score",
    "serve": "serve",
}


def _verb_help(module_name: str) -> str:
    try:
        return importlib.import_module(f"monai_fracture.commands.{module_name}").HELP
    except ModuleNotFoundError:
        return "(unavailable)"


def build_parser(verbs: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="monai-fracture", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"monai-fracture {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in verbs if verbs is not None else VERBS:
        module_name = VERBS[verb]
        try:
            module = importlib.import_module(f"monai_fracture.commands.{module_name}")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("monai_fracture.commands"):
                continue  # verb not present in this build
            raise
        verb_parser = sub.add_parser(verb, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Import only the requested verb's module when one is named (keeps start-up fast).
    named = [a for a in argv if a in VERBS]
    parser = build_parser([named[0]] if named else None)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    install_safe_logging(max(level, logging.DEBUG))  # control characters escaped, no PHI warnings
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    return int(args._run(args) or 0)


def entry() -> int:
    """The ``monai-fracture`` program: the console script and ``python -m monai_fracture``.

    Runs ``main()``, then takes the objects it loaded (torch, MONAI: about half a million) out
    of the cyclic garbage collector's reach (``gc.freeze``) before the interpreter exits: its
    shutdown otherwise runs collection passes over all of them, which cost seconds of a short
    run (1 to 6 s measured, benchmarks/bench_cold_start.py) for memory the OS frees anyway.
    atexit handlers, stream flushing and logging shutdown still run. Callers of ``main`` in a
    longer-lived process (tests, other programs) are not affected; nor by the trimmed MONAI
    import the score verb does when it owns the process (``monai_fracture.startup``).
    """
    from monai_fracture import startup

    startup.owns_process = True
    code = main()
    gc.freeze()
    return code

