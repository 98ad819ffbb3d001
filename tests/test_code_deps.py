"""The code deps of every DVC stage are the project files its module imports (transitively,
function-level imports included): tools/code_deps.py derives them, and dvc.yaml must hold exactly
its output, so that `dvc repro` re-runs a stage whenever code it runs changes."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import code_deps  # noqa: E402


def test_dvc_yaml_code_deps_are_the_import_closures():
    text = (ROOT / "dvc.yaml").read_text()
    regenerated, changes = code_deps.rewrite(text)
    assert not changes, "\n".join(code_deps._describe(changes))
    assert regenerated == text


def test_every_stage_lists_every_project_file_its_module_imports():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        module = code_deps.STAGE_MODULE.search(body["cmd"]).group(1)
        missing = set(code_deps.import_closure(module)) - set(body["deps"])
        assert not missing, f"{name}: {sorted(missing)}"
    assert "ssae_core/cli.py" not in code_deps.import_closure("stages.select")  # kept narrow


def test_the_closure_follows_function_level_imports_packages_and_lazy_names(tmp_path):
    for folder in ("stages", "ssae_core", "ssae_core/sub"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "ssae_core" / "__init__.py").write_text('_API = {"thing": "ssae_core.lazy"}\n')
    (tmp_path / "ssae_core" / "lazy.py").write_text("")
    (tmp_path / "ssae_core" / "sub" / "inner.py").write_text("from . import sibling\n")
    (tmp_path / "ssae_core" / "sub" / "sibling.py").write_text("import json\n")
    (tmp_path / "ssae_core" / "unused.py").write_text("")
    (tmp_path / "stages" / "job.py").write_text(
        "from ssae_core import thing\n\ndef main():\n    from ssae_core.sub import inner\n"
    )
    assert code_deps.import_closure("stages.job", tmp_path) == [
        "ssae_core/__init__.py",
        "ssae_core/lazy.py",
        "ssae_core/sub/__init__.py",
        "ssae_core/sub/inner.py",
        "ssae_core/sub/sibling.py",
        "stages/__init__.py",
        "stages/job.py",
    ]


def test_rewrite_keeps_data_deps_and_replaces_code_deps(tmp_path):
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "__init__.py").write_text("")
    (tmp_path / "stages" / "job.py").write_text("")
    text = (
        "stages:\n  job:\n    cmd: python -m stages.job\n    deps:\n"
        "      - stages/old.py\n      - data/input.parquet\n    outs:\n      - out\n"
    )
    new, changes = code_deps.rewrite(text, tmp_path)
    assert changes == {"job": (["stages/__init__.py", "stages/job.py"], ["stages/old.py"])}
    assert new == (
        "stages:\n  job:\n    cmd: python -m stages.job\n    deps:\n"
        "      - stages/__init__.py\n      - stages/job.py\n      - data/input.parquet\n"
        "    outs:\n      - out\n"
    )


def _study_keys_read_by(path: Path, function: str) -> set[str]:
    """The ``study.X`` attributes one function of a module reads."""
    import ast

    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == function)
    return {
        f"study.{a.attr}"
        for a in ast.walk(node)
        if isinstance(a, ast.Attribute) and isinstance(a.value, ast.Name) and a.value.id == "study"
    }


def test_every_stage_that_loads_a_study_set_declares_the_params_load_set_reads():
    # a stage that reads the pair sets through load_set must re-run when any of its params
    # changes (study.drop_outliers once was missing from eight stages: -S left them stale)
    keys = _study_keys_read_by(ROOT / "ssae_core" / "study" / "sets.py", "load_set")
    assert {"study.drop_outliers", "study.reverse_fraction"} <= keys
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        body = stage.get("do", stage)
        if "ssae_core/study/sets.py" not in body["deps"]:
            continue
        declared = {p if isinstance(p, str) else next(iter(p)) for p in body.get("params", [])}
        if "study" in declared:
            continue
        assert keys <= declared, f"{name}: params lack {sorted(keys - declared)}"
