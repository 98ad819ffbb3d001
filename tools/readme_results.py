"""Keeps the README's "What the study found" paragraph equal to the conclusion that the report
stage generated from the verdicts (metrics/REPORT.md), and its timing line equal to what
benchmarks/fresh_clone.py measured (benchmarks/fresh_clone.json).

    python tools/readme_results.py           rewrite the README's generated lines
    python tools/readme_results.py --check   exit 1 if they differ from the files

The generated lines sit between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``
markers; nothing outside them is touched.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REPORT = ROOT / "metrics" / "REPORT.md"
TIMES = ROOT / "benchmarks" / "fresh_clone.json"
CONCLUSION = "**Conclusion.**"


def conclusion(report: Path = REPORT) -> str:
    """The conclusion paragraph of the report, as the report stage wrote it."""
    for line in report.read_text().splitlines():
        if line.startswith(CONCLUSION):
            return line[len(CONCLUSION) :].strip()
    raise SystemExit(f"{report}: no line starts with {CONCLUSION}; run `dvc repro report`")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def timing(times: Path = TIMES) -> str:
    """One line: how long each README command took on a fresh clone, and where that is from."""
    found = json.loads(times.read_text())
    repro, tests = found["repro"], found["tests"]
    setup = repro.get("setup_seconds") or tests.get("setup_seconds")
    return (
        f"On {repro['cpu_cores']} CPU cores, measured on a fresh clone by "
        "`python benchmarks/fresh_clone.py repro|tests` (benchmarks/fresh_clone.json): "
        f"`dvc repro` {_minutes(repro['seconds'])} (commit {repro['commit'][:7]}), the tests "
        f"{_minutes(tests['seconds'])} (commit {tests['commit'][:7]})"
        + (f", setup {_minutes(setup)} with the package registry at hand." if setup else ".")
    )


def generated(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the markers of ``name`` replaced by ``body``."""
    pattern = re.compile(
        rf"(<!-- generated:{name} -->\n).*?(\n<!-- /generated:{name} -->)", re.DOTALL
    )
    if not pattern.search(text):
        raise SystemExit(f"{README}: no <!-- generated:{name} --> ... markers")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def expected(readme: str) -> str:
    """The README with every generated part as the files say."""
    return generated(generated(readme, "conclusion", conclusion()), "timing", timing())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a change")
    args = parser.parse_args()
    current = README.read_text()
    wanted = expected(current)
    if current == wanted:
        print(f"{README.name}: generated parts up to date")
        return
    if args.check:
        print(f"{README.name}: generated parts differ; run python tools/readme_results.py")
        sys.exit(1)
    README.write_text(wanted)
    print(f"rewrote the generated parts of {README.name}")


if __name__ == "__main__":
    main()
