"""Every numeric option of every subcommand says its valid range in its --help ("range: [1, inf)"),
and a value just outside each bound the range names is refused in one line that names the option,
before any work (the inputs given do not even exist)."""

from __future__ import annotations

import argparse
import math
import re

import pytest

from ssae_core.cli import build_parser, range_text
from tests.helpers import ssae_in_process

RANGE = re.compile(r"range: ([\[(])([^,\s]+), ([^\])]+)([\])])")
BASE = {
    "train": ["train", "nosuch.parquet", "--out", "o"],
    "embed": ["embed", "nosuch.parquet", "--out", "o"],
    "steer": ["steer", "nosuch", "--export", "o.safetensors"],
    "vector md": ["vector", "md", "nosuch.parquet", "--out", "o.safetensors"],
    "inspect": ["inspect", "nosuch", "--pairs", "nosuch.parquet", "--out", "o"],
    "synth": ["synth", "o.parquet", "--concepts", "2", "--max-changes", "1"],
    "pairs": ["pairs", "nosuch.csv", "--x", "a", "--x-tilde", "b", "--out", "o.parquet"],
}
NUMERIC = {"int", "float", "_seeds", "_sparsities", "_numbers"}


def numeric_options() -> list[tuple[str, str, str, str]]:
    """(subcommand, flag, type name, help) of every option that takes numbers."""
    found = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*prefix, name])
            elif action.option_strings and getattr(action.type, "__name__", "") in NUMERIC:
                found.append(
                    (" ".join(prefix), action.option_strings[0], action.type.__name__, action.help)
                )

    walk(build_parser(), [])
    return found


OPTIONS = numeric_options()


def test_the_walk_finds_the_numeric_options():
    flags = {(command, flag) for command, flag, _, _ in OPTIONS}
    assert {("train", "--lr"), ("steer", "--alpha"), ("inspect", "--strengths")} <= flags
    assert len(OPTIONS) > 40 and set(BASE) == {command for command, *_ in OPTIONS}


@pytest.mark.parametrize(
    "command, flag, kind, text", OPTIONS, ids=[f"{c} {f}" for c, f, _, _ in OPTIONS]
)
def test_every_numeric_option_says_its_range(command, flag, kind, text):
    assert RANGE.search(text or ""), f"ssae {command} {flag}: no 'range: [low, high]' in {text!r}"


def outside(kind: str, bracket: str, bound: str, below: bool) -> str | None:
    """A value just outside one end of a range (None: a bound that depends on the data)."""
    try:
        value = float(bound)
    except ValueError:
        return None
    if math.isinf(value):
        return None
    integer = kind in {"int", "_seeds"}
    closed = bracket in "[]"
    step = 1 if integer else max(abs(value) * 1e-3, 1e-3)
    if closed or integer:
        value = value - step if below else value + step
    text = str(int(value)) if integer else repr(value)
    return text


CASES = [
    (command, flag, value)
    for command, flag, kind, text in OPTIONS
    for match in [RANGE.search(text or "")]
    if match
    for value in (
        outside(kind, match.group(1), match.group(2), below=True),
        outside(kind, match.group(4), match.group(3), below=False),
    )
    if value is not None
]


@pytest.mark.parametrize("command, flag, value", CASES, ids=[" ".join(c) for c in CASES])
def test_a_value_outside_the_range_is_refused_before_any_work(
    command, flag, value, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    code, _, err = ssae_in_process(capsys, *BASE[command], f"{flag}={value}")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and flag in lines[0], err
    assert "nosuch" not in lines[0] and list(tmp_path.iterdir()) == []


def test_range_text_writes_intervals():
    assert range_text(1) == "[1, inf)"
    assert range_text(0, open_low=True) == "(0, inf)"
    assert range_text(-1e5, 1e5) == "[-100000, 100000]"
