"""The one exception type for bad user input, the argument parser that reports usage mistakes in
one line, and the checks on input that several modules share."""

from __future__ import annotations

import argparse
import math
import os


class InputError(ValueError):
    """Bad input from a user: the message is one line that names the file or parameter and the fix.

    The command-line tool prints it as ``error: <message>`` and exits with status 2.
    """


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line (``error: ...; see `ssae train --help```), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


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
