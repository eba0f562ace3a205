"""Logs without patient data: warnings that echo names are silenced, control characters escaped.

Logs leave the protected store (terminals, journald, log shippers), so they must hold no PHI at
any level. Our own messages name files, UIDs and reasons, never names or IDs; third-party
warnings that quote a value (highdicom's "single-component person name" warning prints the
PatientName) are filtered here. A value with CR/LF/ESC in a message could forge log lines or
drive a terminal: :class:`SafeFormatter` escapes every control character of the message.
"""

from __future__ import annotations

import logging
import re
import warnings

#: Third-party warnings whose text includes a tag value (a person name): never shown.
PHI_WARNING_MESSAGES = (
    r"The string .* is unlikely to represent the intended person name",  # highdicom valuerep
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def silence_phi_warnings() -> None:
    """Drop the known third-party warnings that quote patient values (idempotent)."""
    for message in PHI_WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)


def escape_controls(text: str) -> str:
    """``text`` with each control character as a visible escape (``\\n``, ``\\x1b``)."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


class SafeFormatter(logging.Formatter):
    """A formatter whose message part is one line of printable text; tracebacks are kept as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def install_safe_logging(level: int, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """Root logging for the command line: escaped messages, warnings routed through logging."""
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])
    logging.captureWarnings(True)
    silence_phi_warnings()
