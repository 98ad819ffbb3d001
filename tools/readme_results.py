"""Keeps the README's "What the study found" paragraphs equal to the conclusion and the behaviour
findings that the report stage generated (metrics/REPORT.md), and its timing line equal to what
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
BEHAVIOUR = "**Behaviour.**"


def report_paragraph(start: str = CONCLUSION, report: Path = REPORT) -> str:
    """The report's paragraph that begins with ``start``, as the report stage wrote it."""
    for line in report.read_text().splitlines():
        if line.startswith(start):
            return line[len(start) :].strip()
    raise SystemExit(f"{report}: no line starts with {start}; run `dvc repro report`")


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min"


def timing(times: Path = TIMES) -> str:
    """One line: how long each README command took on a fresh clone, and where that is from."""
    found = json.loads(times.read_text()) if times.exists() else {}
    parts = [
        f"{label} {_minutes(found[key]['seconds'])} (commit {found[key]['commit'][:7]})"
        for key, label in (("repro", "`dvc repro`"), ("tests", "the tests"))
        if key in found
    ]
    if not parts:
        return "(not measured yet: `python benchmarks/fresh_clone.py repro|tests`)"
    cores = next(iter(found.values()))["cpu_cores"]
    setup = next((v["setup_seconds"] for v in found.values() if v.get("setup_seconds")), None)
    return (
        f"On {cores} CPU cores, measured on a fresh clone by `python benchmarks/fresh_clone.py "
        f"repro|tests` (benchmarks/fresh_clone.json): {', '.join(parts)}"
        + (
            f"; `bash setup.sh` {_minutes(setup)} with the package registry at hand."
            if setup
            else "."
        )
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
    readme = generated(readme, "conclusion", report_paragraph(CONCLUSION))
    readme = generated(readme, "behaviour", report_paragraph(BEHAVIOUR))
    return generated(readme, "timing", timing())


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
