"""The one exception type for bad user input, and the checks on it that several modules share."""

from __future__ import annotations

import math
import os


class InputError(ValueError):
    """Bad input from a user: the message is one line that names the file or parameter and the fix.

    The command-line tool prints it as ``error: <message>`` and exits with status 2.
    """


def require_finite(where: str, **values: float) -> None:
    """Raise unless every value is a finite number (``where`` names the configuration)."""
    for name, value in values.items():
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise InputError(f"{where}{name}={value!r}: must be a finite number")


def physical_memory() -> int | None:
    """Bytes of physical memory of this machine (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def require_memory(needed: int, what: str, fix: str) -> None:
    """Refuse work that needs more bytes than the machine has, before allocating any of it."""
    available = physical_memory()
    if available is not None and needed > available:
        raise InputError(
            f"{what} needs about {needed / 2**30:.1f} GiB of memory, more than this machine's "
            f"{available / 2**30:.1f} GiB; {fix}"
        )
