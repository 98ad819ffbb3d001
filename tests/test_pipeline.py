"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the project, on tiny inputs
(a tiny random Llama saved to a folder, small synthetic and pair sets, few training steps)."""

from __future__ import annotations

import json
import sys

import pytest

from tests.project import TRUTHFULQA, make_project, run


@pytest.mark.slow
@pytest.mark.skipif(not TRUTHFULQA.exists(), reason="needs ../shared/data/truthfulqa")
def test_dvc_repro_end_to_end(tmp_path):
    project = make_project(tmp_path)

    first = run([sys.executable, "-m", "dvc", "repro"], project)
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

    second = run([sys.executable, "-m", "dvc", "repro"], project)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout
