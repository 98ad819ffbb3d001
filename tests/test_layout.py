"""The shape of the code: modules import only modules below them, stages and functions stay small,
and the public API resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ssae_core

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ssae_core"

# Bottom to top: a module may import only modules listed before it (the package root
# ``ssae_core`` itself, which loads its API lazily, only for ``__version__``).
ORDER = [
    "ssae_core.errors",
    "ssae_core.devices",
    "ssae_core.cache",
    "ssae_core.progress",
    "ssae_core.workers",
    "ssae_core.metrics",
    "ssae_core.outliers",
    "ssae_core.record",
    "ssae_core.config",
    "ssae_core.io",
    "ssae_core.tensor_files",
    "ssae_core.figures",
    "ssae_core.model",
    "ssae_core.streaming",
    "ssae_core.synthetic",
    "ssae_core.datasets.semisynthetic",
    "ssae_core.datasets.truthfulqa",
    "ssae_core.datasets.custom",
    "ssae_core.datasets",
    "ssae_core.train",
    "ssae_core.runs",
    "ssae_core.lm.layers",
    "ssae_core.lm.loading",
    "ssae_core.lm.tokens",
    "ssae_core.lm.engines",
    "ssae_core.lm.embed",
    "ssae_core.lm.steer",
    "ssae_core.lm.vector_files",
    "ssae_core.lm",
    "ssae_core.evaluation.identifiability",
    "ssae_core.evaluation.steering_accuracy",
    "ssae_core.evaluation.probes",
    "ssae_core.evaluation.mean_difference",
    "ssae_core.evaluation.behaviour.vectors",
    "ssae_core.evaluation.behaviour.fluency",
    "ssae_core.evaluation.behaviour.protocol",
    "ssae_core.evaluation.behaviour.logprobs",
    "ssae_core.evaluation.behaviour.language",
    "ssae_core.evaluation.behaviour.mc1",
    "ssae_core.evaluation.behaviour.config",
    "ssae_core.evaluation.behaviour.evaluate",
    "ssae_core.evaluation.behaviour",
    "ssae_core.evaluation.inspection_page",
    "ssae_core.evaluation.inspection",
    "ssae_core.evaluation.vector_evidence",
    "ssae_core.evaluation",
    "ssae_core.study.claims",
    "ssae_core.study.layout",
    "ssae_core.study.config",
    "ssae_core.study.budgets",
    "ssae_core.study.usability",
    "ssae_core.study.sets",
    "ssae_core.study.synthetic_training",
    "ssae_core.study.training",
    "ssae_core.study.selection",
    "ssae_core.study.scores",
    "ssae_core.study.ablation",
    "ssae_core.study.behaviour",
    "ssae_core.study.inspection",
    "ssae_core.study.summary",
    "ssae_core.study.report",
    "ssae_core.study.plots",
    "ssae_core.study",
    "ssae_core.cli",
]
MAX_FUNCTION_LINES = 80
MAX_STAGE_LINES = 40


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The ssae_core modules ``path`` imports (at the top or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "ssae_core":
                for alias in node.names:
                    name = f"{node.module}.{alias.name}"
                    found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "ssae_core"}
    return found


def test_every_module_is_placed_in_the_order():
    assert set(modules()) - {"ssae_core"} == set(ORDER)


@pytest.mark.parametrize("name", ORDER)
def test_modules_import_only_from_below(name):
    known = set(modules())
    below = set(ORDER[: ORDER.index(name)]) | {"ssae_core"}
    upward = imported(modules()[name], known) - below - {name}
    assert not upward, f"{name} imports {sorted(upward)}, which sit above it in ORDER"


def test_the_package_root_imports_nothing_eagerly():
    assert imported(PACKAGE / "__init__.py", set(modules())) == set()


def test_functions_are_short():
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {lines} lines")
    assert not long, long


def test_stage_scripts_are_thin():
    for path in sorted((ROOT / "stages").glob("*.py")):
        assert len(path.read_text().splitlines()) <= MAX_STAGE_LINES, path.name


def test_public_api_resolves():
    for name in ssae_core.__all__:
        assert getattr(ssae_core, name) is not None, name
    with pytest.raises(AttributeError):
        _ = ssae_core.no_such_name
