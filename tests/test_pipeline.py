"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the project, on tiny inputs
(a tiny random Llama saved to a folder, small synthetic and pair sets, few training steps)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import build_tiny_llama, build_tiny_tokenizer

ROOT = Path(__file__).resolve().parent.parent
TRUTHFULQA = ROOT.parent / "shared" / "data" / "truthfulqa"
COPY = ["dvc.yaml", "params.yaml", "stages", "ssae_core", ".dvcignore"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def _tiny_params(project: Path, model_dir: Path) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["synthetic"].update(dim=12, num_pairs=300)
    params["train"].update(
        seeds=[0, 1],
        epochs=2,
        min_steps=0,
        patience=0,
        latent_factors=[1, 2],
        require_active=False,
        batch_size=64,
    )
    params["pairs"]["cat"]["num_pairs"] = 2000
    params["study"].update(
        seeds=[0, 1],
        grid={"sparsity": [0.5, 1.0], "lr": [0.003]},
        overcomplete={"set": "cat", "factors": [1, 2], "seeds": [0, 1]},
    )
    params["study"]["optim"].update(steps=10, batch_size=32, threads=1)
    params["behaviour"].update(
        seeds=[0, 1], questions=4, prompts=2, max_new_tokens=3, alpha_multipliers=[0, 2]
    )
    params["model"]["name_or_path"] = str(model_dir)
    params["embed"]["batch_size"] = 16
    params["truthfulqa"]["source"] = str(TRUTHFULQA)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
@pytest.mark.skipif(not TRUTHFULQA.exists(), reason="needs ../shared/data/truthfulqa")
def test_dvc_repro_end_to_end(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in COPY:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, project / name)
    model_dir = tmp_path / "tiny_lm"
    tokenizer = build_tiny_tokenizer()
    build_tiny_llama(len(tokenizer), max_positions=512).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    _tiny_params(project, model_dir)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        assert _run(cmd, project).returncode == 0

    first = _run([sys.executable, "-m", "dvc", "repro"], project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    metrics = project / "metrics"
    results = json.loads((metrics / "identifiability.json").read_text())["synthetic"]
    assert set(results) == {
        f"synth_{n}_{k}{v}" for n, k in ((3, 2), (4, 3), (10, 7)) for v in ("", "_ent")
    }
    assert set(results["synth_4_3"]) == {"ssae", "aff"}
    assert set(results["synth_4_3"]["ssae"]) == {"m4", "m8"}
    assert len(results["synth_4_3"]["ssae"]["m4"]["mcc"]["values"]) == 2
    sets = {"lang", "gender", "binary", "corr", "cat", "truthfulqa"}
    llm = json.loads((metrics / "identifiability.json").read_text())["llm"]
    assert set(llm["sets"]) == set(llm["entangled"]) == sets
    assert set(llm["overcomplete"]["cat"]) == {"m135", "m270"}
    udr = json.loads((metrics / "udr.json").read_text())["sets"]
    assert {len(udr[name]["cells"]) for name in sets} == {2}
    steering = json.loads((metrics / "steering.json").read_text())
    assert set(steering["in_distribution"]) == sets
    assert set(steering["out_of_distribution"]) == {"binary->gender", "binary->lang", "corr->lang"}
    assert json.loads((metrics / "behaviour.json").read_text())
    report = (metrics / "REPORT.md").read_text()
    for heading in ("synthetic data", "LLM embeddings", "Model selection", "Steering accuracy"):
        assert heading in report
    assert "| synth_3_2 | 3 |" in report
    for name in ("lang", "gender", "binary", "corr", "cat", "truthfulqa"):
        assert list((project / "data" / "embeddings" / name).glob("shard-*.parquet"))
        assert (project / "data" / "entangled" / f"{name}.parquet").exists()

    second = _run([sys.executable, "-m", "dvc", "repro"], project)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
