"""A temporary copy of the project for end-to-end DVC tests: the pipeline's code and params on tiny
inputs (a tiny random Llama saved to a folder, small synthetic and pair sets, few training steps),
in a fresh git + DVC repository. Used by tests/test_pipeline.py and tests/test_remote.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import build_tiny_llama, build_tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TRUTHFULQA = ROOT.parent / "shared" / "data" / "truthfulqa"
COPY = ["dvc.yaml", "params.yaml", "stages", "ssae_core", ".dvcignore", ".gitignore"]
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "ssae tests",
    "GIT_AUTHOR_EMAIL": "tests@example.invalid",
    "GIT_COMMITTER_NAME": "ssae tests",
    "GIT_COMMITTER_EMAIL": "tests@example.invalid",
}


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A command in ``cwd`` with this interpreter's tools first on PATH (``dvc``, ``python``)."""
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=3600)


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``dvc ARGS`` in ``cwd``; fails the test with its output when it fails."""
    done = run([sys.executable, "-m", "dvc", *args], cwd)
    assert done.returncode == 0, (
        f"dvc {' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    )
    return done


def git(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = run(["git", *args], cwd)
    assert done.returncode == 0, f"git {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def tiny_params(project: Path, model_dir: Path) -> None:
    """Shrink every section of the project's params.yaml to seconds-long runs."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"].update(dim=12, num_pairs=300)
    params["pairs"]["min_train_pairs"] = 300  # lang in two contexts: the path, not the size
    params["train"].update(
        seeds=[0, 1],
        epochs=2,
        min_steps=0,
        patience=0,
        latent_factors=[1, 2],
        require_active=False,
        batch_size=64,
    )
    params["study"].update(
        seeds=[0, 1],
        grid={"budget_ratio": [0.5, 0.75], "lr": [0.003]},
        # the sets the pipeline's loops need (in and out of distribution, behaviour, entangled,
        # overcomplete, one-concept) and no more: each set adds 3 stages (~15 s)
        sets=["lang", "binary", "truthfulqa"],
        entangled_sets=["binary"],
        overcomplete={"set": "binary", "factors": [1, 2], "seeds": [0, 1]},
        ablation={"sets": ["binary"], "seeds": [0]},
    )
    # normalize global: the tiny tokenizer reads many lang words as the same tokens, and a zero
    # shift has no RMS to divide by (the ablation stage still trains the layer option on binary)
    params["study"]["optim"].update(
        steps=10, max_steps=40, batch_size=32, threads=1, normalize="global"
    )
    params["behaviour"].update(
        seeds=[0, 1],
        questions=4,
        train_questions=4,
        prompts=2,
        test_prompts=2,
        max_new_tokens=3,
        strengths=[2],
        resamples=20,
        layers=None,  # both layers: the stage's loop over layers
    )
    params["inspect"].update(layers=["final"], prompts=1, strengths=[0.6], max_new_tokens=3)
    params["model"]["name_or_path"] = str(model_dir)
    params["embed"].update(batch_size=16, layers=[1, "final"])
    params["truthfulqa"]["source"] = str(TRUTHFULQA)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(folder: Path) -> Path:
    """``folder/project``: the pipeline on tiny inputs (model in ``folder/tiny_lm``), a git and
    DVC repository with everything committed."""
    project = folder / "project"
    project.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, project / name)
    model_dir = folder / "tiny_lm"
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), max_positions=512).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    tiny_params(project, model_dir)
    git(["init", "-q"], project)
    dvc(["init", "-q"], project)
    git(["add", "-A"], project)
    git(["commit", "-q", "-m", "project"], project)
    return project
