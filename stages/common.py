"""What every stage script shares: reading params.yaml and reporting bad input in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from ssae_core.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE = ROOT / "params.yaml"


def load_params(section: str | None = None) -> dict[str, Any]:
    """The whole of params.yaml, or one top-level section of it."""
    params = yaml.safe_load(PARAMS_FILE.read_text()) or {}
    if section is None:
        return params
    if section not in params:
        raise InputError(f"{PARAMS_FILE}: missing section '{section}'; restore it from git")
    return params[section] or {}


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main function; bad input becomes one line on stderr and exit status 2."""
    try:
        main()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
