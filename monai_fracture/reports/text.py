"""Text copied from a source header into our objects: no control characters where the VR forbids them.

PS3.5 6.2: PN, LO, SH and CS values hold no control characters at all (ESC only inside the
character-set escape sequences, which pydicom has already decoded); LT, ST and UT may hold
TAB, LF, FF and CR. A name with CR/LF/ESC would otherwise be copied into the SR and KOS and
make them invalid (and forge lines in anything that prints them).
"""

from __future__ import annotations

import re

_ANY_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # keeps TAB LF FF CR
TEXT_VRS = frozenset({"LT", "ST", "UT"})
# C1 (0x80-0x9f) is left alone: undeclared UTF-8 read as Latin-1 holds such bytes, kept byte for byte.


def without_controls(value: object, vr: str) -> str:
    """``value`` as text with the control characters its VR forbids removed."""
    pattern = _TEXT_CONTROL if vr in TEXT_VRS else _ANY_CONTROL
    return pattern.sub("", str(value))
