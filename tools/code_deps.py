"""Keeps the code deps of every stage in dvc.yaml equal to the project files its
``python -m stages.X`` module imports, transitively, function-level imports included.

    python tools/code_deps.py           rewrite dvc.yaml's code deps from the imports
    python tools/code_deps.py --check   exit 1, naming each stage and file, if dvc.yaml differs

A code dep is a ``.py`` file (or a folder of them) under ``stages/`` or ``ssae_core/``; every other
dep (data, models, package data such as ``ssae_core/datasets/wordlists``) is kept as written, after
the generated code deps. The closure counts the ``__init__.py`` of every package on the way (its
code runs on import) and the lazy public names of ``ssae_core/__init__.py``.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ssae_core", "stages")
STAGE_MODULE = re.compile(r"python -m (stages\.\w+)")
CODE_DEP = re.compile(r"(?:stages|ssae_core)(?:/[\w.]+)*")


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """The file that defines ``module`` in the project (a module or a package), or None."""
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _lazy_names(root: Path) -> dict[str, str]:
    """``ssae_core``'s public names loaded on first use (its ``_API`` table)."""
    init = module_file("ssae_core", root)
    if init is None:
        return {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "_API" for t in node.targets
        ):
            return ast.literal_eval(node.value)
    return {}


def _imported(module: str, path: Path, lazy: dict[str, str], root: Path) -> set[str]:
    """Project modules named by the imports anywhere in ``path`` (the file of ``module``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            for alias in node.names:
                if module_file(f"{base}.{alias.name}", root) is not None:
                    found.add(f"{base}.{alias.name}")
                elif base == "ssae_core" and alias.name in lazy:
                    found.add(lazy[alias.name])
    return {name for name in found if name.split(".")[0] in PACKAGES}


def import_closure(module: str, root: Path = ROOT) -> list[str]:
    """Every project file that running ``python -m MODULE`` may execute, relative to ``root``."""
    lazy = _lazy_names(root)
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way, then the module itself
            prefix = ".".join(parts[:i])
            if prefix in seen:
                continue
            path = module_file(prefix, root)
            if path is None:
                continue
            seen.add(prefix)
            todo.extend(_imported(prefix, path, lazy, root) - seen)
    files = {module_file(name, root) for name in seen}
    return sorted(str(p.relative_to(root)) for p in files if p is not None)


def _is_code_dep(item: str, root: Path) -> bool:
    if not CODE_DEP.fullmatch(item):
        return False
    path = root / item
    return item.endswith(".py") or (path.is_dir() and any(path.glob("*.py")))


def _list_item(line: str) -> str | None:
    match = re.fullmatch(r"\s*- ([^#\s]+)\s*(#.*)?", line)
    return match.group(1) if match else None


def rewrite(text: str, root: Path = ROOT) -> tuple[str, dict[str, tuple[list[str], list[str]]]]:
    """``text`` (dvc.yaml) with each stage's code deps replaced by its import closure, and per
    stage the (missing, extra) code deps the old text had."""
    lines = text.splitlines()
    out: list[str] = []
    changes: dict[str, tuple[list[str], list[str]]] = {}
    stage, module, in_stages, i = None, None, False, 0
    while i < len(lines):
        line = lines[i]
        if re.fullmatch(r"stages:\s*", line):
            in_stages = True
        elif in_stages and (match := re.fullmatch(r"  (\w+):\s*", line)):
            stage, module = match.group(1), _stage_module(lines, i)
        deps = re.fullmatch(r"(\s*)deps:\s*", line)
        if not (in_stages and deps and module):
            out.append(line)
            i += 1
            continue
        out.append(line)
        indent = deps.group(1) + "  "
        i += 1
        old: list[str] = []
        kept: list[str] = []
        while i < len(lines) and lines[i].startswith(indent) and lines[i].strip():
            item = _list_item(lines[i])
            if item is not None and _is_code_dep(item, root):
                old.append(item)
            else:
                kept.append(lines[i])
            i += 1
        new = import_closure(module, root)
        out.extend(f"{indent}- {path}" for path in new)
        out.extend(kept)
        missing = [p for p in new if p not in old]
        extra = [p for p in old if p not in new]
        if missing or extra:
            changes[str(stage)] = (missing, extra)
    return "\n".join(out) + "\n", changes


def _stage_module(lines: list[str], start: int) -> str | None:
    """The ``stages.X`` module that the stage beginning at ``lines[start]`` runs."""
    for line in lines[start + 1 :]:
        if re.match(r"  \S", line):  # the next stage
            return None
        if match := STAGE_MODULE.search(line):
            return match.group(1)
    return None


def _describe(changes: dict[str, tuple[list[str], list[str]]]) -> Iterable[str]:
    for stage, (missing, extra) in changes.items():
        if missing:
            yield f"{stage}: missing {', '.join(missing)}"
        if extra:
            yield f"{stage}: not imported {', '.join(extra)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/code_deps.py", description=__doc__)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 on a difference")
    parser.add_argument("--dvc-yaml", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args(argv)
    text = args.dvc_yaml.read_text()
    new_text, changes = rewrite(text, args.dvc_yaml.resolve().parent)
    for line in _describe(changes):
        print(line)
    if args.check:
        if new_text != text:
            print(f"{args.dvc_yaml}: code deps differ from the imports; run tools/code_deps.py")
            return 1
        print(f"{args.dvc_yaml}: every stage's code deps match its imports")
        return 0
    if new_text != text:
        args.dvc_yaml.write_text(new_text)
        print(f"rewrote the code deps of {len(changes)} stage(s) in {args.dvc_yaml}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
