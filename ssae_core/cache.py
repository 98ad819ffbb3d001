"""The user cache of ssae: converted models (ssae_core.lm.loading), downloaded data sets
(ssae_core.datasets.truthfulqa)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "SSAE_CACHE"


def cache_root() -> Path:
    """The user cache: ``$SSAE_CACHE``, else ``$XDG_CACHE_HOME/ssae``, else ``~/.cache/ssae``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ssae"
