"""How long the README's two commands take on this machine, measured on a fresh clone.

    python benchmarks/fresh_clone.py repro [--keep DIR] [--venv PATH]
    python benchmarks/fresh_clone.py tests [--keep DIR] [--venv PATH]

Clones the committed HEAD into DIR (default: a temporary folder, removed afterwards), runs
``bash setup.sh`` there (or links ``--venv`` instead, and then records no setup time), then
either ``dvc repro`` followed by ``dvc status`` (``repro``: the first README command) or the
README's test command (``tests``), and merges the wall times, the commit, the number of CPU
cores and the load average before the run into benchmarks/fresh_clone.json under the command's
key (for ``repro`` also each stage's seconds, from when its outputs were last written: the gap
since the stage before, DVC's own work included). The README quotes its times from that file.
Exit status: the command's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "fresh_clone.json"
COMMANDS = {
    "repro": [". .venv/bin/activate && dvc repro", ". .venv/bin/activate && dvc status"],
    "tests": [".venv/bin/python -m pytest -q"],
}


def timed(command: str, cwd: Path) -> tuple[int, float]:
    """Run ``command`` in bash in ``cwd`` (output passes through); exit status and seconds."""
    print(f"$ {command}", flush=True)
    started = time.perf_counter()
    status = subprocess.run(["bash", "-c", command], cwd=cwd, check=False).returncode
    return status, time.perf_counter() - started


def prepare(clone: Path, venv: Path | None) -> float | None:
    """Clone HEAD into ``clone`` and set it up; seconds of ``bash setup.sh`` (None: linked)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    if venv is not None:
        (clone / ".venv").symlink_to(venv.resolve())
        return None
    status, seconds = timed("bash setup.sh", clone)
    if status:
        sys.exit(status)
    return seconds


def _written(path: Path) -> float:
    """When ``path`` (a file or a folder of files) was last written; 0 if it is missing."""
    if path.is_dir():
        return max((p.stat().st_mtime for p in path.rglob("*") if p.is_file()), default=0.0)
    return path.stat().st_mtime if path.exists() else 0.0


def stage_seconds(clone: Path, started: float) -> dict[str, float]:
    """Each stage of the clone's dvc.lock by the seconds between the last write of its outputs
    and that of the stage before (the first from ``started``), longest first."""
    import yaml

    stages = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    ends = sorted(
        (max((_written(clone / out["path"]) for out in stage.get("outs", [])), default=0.0), name)
        for name, stage in stages.items()
    )
    seconds, previous = {}, started
    for end, name in ends:
        if end >= started:
            seconds[name] = round(end - previous, 1)
            previous = end
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def measure(what: str, clone: Path, venv: Path | None) -> dict:
    """Set up a fresh clone, run the command(s) of ``what`` there, and what they took."""
    load = os.getloadavg()[0]
    setup = prepare(clone, venv)
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.strip()
    started = time.time()
    status, seconds = timed(COMMANDS[what][0], clone)
    result = {
        "commit": commit,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cpu_cores": os.cpu_count(),
        "load_before": round(load, 2),
        "setup_seconds": None if setup is None else round(setup, 1),
        "seconds": round(seconds, 1),
        "exit_status": status,
    }
    if what == "repro" and status == 0:
        check = subprocess.run(
            ["bash", "-c", COMMANDS[what][1]], cwd=clone, capture_output=True, text=True
        )
        result["dvc_status_clean"] = "up to date" in check.stdout
        result["stage_seconds"] = stage_seconds(clone, started)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(COMMANDS))
    parser.add_argument("--keep", type=Path, default=None, help="clone here and keep it")
    parser.add_argument("--venv", type=Path, default=None, help="link this venv, no setup")
    args = parser.parse_args()
    if args.keep is not None and args.keep.exists():
        parser.error(f"--keep {args.keep}: exists; give a new folder")
    scratch = None if args.keep else Path(tempfile.mkdtemp(prefix="fresh-clone-"))
    clone = args.keep or scratch / "clone"
    try:
        result = measure(args.what, clone, args.venv)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.what] = result
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    sys.exit(result["exit_status"])


if __name__ == "__main__":
    main()
