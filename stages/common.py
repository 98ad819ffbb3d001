"""What every stage script shares: params.yaml, the study's layout, one-line errors."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ssae_core.config import load_config, read_section
from ssae_core.errors import InputError, OneLineParser
from ssae_core.study.layout import StudyLayout

ROOT = Path(__file__).resolve().parent.parent
PARAMS_FILE, LAYOUT = ROOT / "params.yaml", StudyLayout(ROOT)
T = TypeVar("T")


def load_params(section: str) -> object:
    return read_section(PARAMS_FILE, section)


def load_section(cls: type[T], section: str) -> T:
    """params.yaml ``section`` as dataclass ``cls`` (validated by ssae_core.config.load_config)."""
    return load_config(cls, load_params(section), f"params.yaml:{section}")


def stage_parser(module: str, description: str | None) -> OneLineParser:
    """An argument parser for ``python -m MODULE`` whose usage errors are one line, exit 2."""
    return OneLineParser(prog=f"python -m {module}", description=description)


def run_stage(main: Callable[[], None]) -> None:
    """Run a stage's main function; bad input becomes one line on stderr and exit status 2."""
    try:
        main()
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
