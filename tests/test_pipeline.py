"""End to end: `dvc repro` of the whole pipeline in a temporary copy of the project, on tiny inputs
(a tiny random Llama saved to a folder, small synthetic and pair sets, few training steps); then a
second `dvc repro` that runs nothing, and an edit of one module that marks exactly the stages that
import it and those downstream of them."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.project import TRUTHFULQA, dvc, make_project, run


def add_custom_set(project) -> None:
    """A pair set of one's own, configured only in params.yaml: unlabelled CSV pairs."""
    rows = ["post,reply,thread"] + [
        f"the {w} {i} is here,the {w} {i} was there,t{i % 7}"
        for i, w in enumerate(["cat", "dog", "house", "tree", "car", "boat", "king", "door"] * 5)
    ]
    (project / "mine.csv").write_text("\n".join(rows) + "\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pairs"]["custom"] = {
        "mine": {"path": "mine.csv", "x": "post", "x_tilde": "reply", "group": "thread"}
    }
    params["study"]["sets"] = [*params["study"]["sets"], "mine"]
    params["study"]["latent_dims"] = {"mine": 2}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """The tiny project after one `dvc repro` (its wall time printed for the closing figures)."""
    if not TRUTHFULQA.exists():
        pytest.skip("needs ../shared/data/truthfulqa")
    project = make_project(tmp_path_factory.mktemp("pipeline"))
    add_custom_set(project)
    started = time.perf_counter()
    first = run([sys.executable, "-m", "dvc", "repro"], project)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    print(f"tiny dvc repro: {time.perf_counter() - started:.0f} s")
    return project


@pytest.mark.slow
def test_dvc_repro_end_to_end(reproduced):
    project = reproduced

    metrics = project / "metrics"
    results = json.loads((metrics / "identifiability.json").read_text())["synthetic"]
    assert set(results) == {
        f"synth_{n}_{k}{v}" for n, k in ((3, 2), (4, 3), (10, 7)) for v in ("", "_ent")
    }
    assert set(results["synth_4_3"]) == {"ssae", "aff"}
    assert set(results["synth_4_3"]["ssae"]) == {"m4", "m8"}
    assert len(results["synth_4_3"]["ssae"]["m4"]["mcc"]["values"]) == 2
    sets = {"lang", "binary", "truthfulqa", "mine"}  # tests/project.py's study.sets
    layers = {"1", "final"}
    llm = json.loads((metrics / "identifiability.json").read_text())["layers"]
    assert set(llm) == layers
    for key in layers:
        assert set(llm[key]["sets"]) == sets
        assert set(llm[key]["entangled"]) == {"binary"}  # study.entangled_sets
        assert set(llm[key]["overcomplete"]["binary"]) == {"m2", "m4"}
        assert set(llm[key]["overcomplete"]["binary"]["m2"]) == {"ssae", "aff"}
    udr = json.loads((metrics / "udr.json").read_text())["layers"]
    controls = {"lang", "truthfulqa"}  # one concept per pair: study.control_budget_ratio's 3
    cells = {name: {len(udr[key]["sets"][name]["cells"]) for key in layers} for name in sets}
    assert cells == {name: {3 if name in controls else 2} for name in sets}
    for key in layers:
        for name in sets:
            assert llm[key]["outliers"][name]["shifts"]["train"] >= 0  # counted for every set
            assert llm[key]["sets"][name]["control"] == (name in controls)
    steering = json.loads((metrics / "steering.json").read_text())["layers"]
    for key in layers:
        assert set(steering[key]["in_distribution"]) == sets - {"mine"}  # no labels, no steering
        assert "mcc" not in llm[key]["sets"]["mine"]["aff"]
        assert len(llm[key]["sets"]["mine"]["aff"]["decoder_mcc"]["values"]) == 1  # 2 seeds
        ood = set(steering[key]["out_of_distribution"])
        assert ood == {"binary->lang"}  # gender and corr are not study sets here
    assert set(json.loads((metrics / "behaviour.json").read_text())["layers"]) == layers
    assert sorted(p.name for p in (metrics / "plots" / "behaviour").iterdir()) == [
        "language_1.csv",
        "language_final.csv",
        "truthfulqa_1.csv",
        "truthfulqa_final.csv",
    ]
    usable = udr["final"]["sets"]["binary"]["selected"] is not None
    page = metrics / "inspect" / "binary_layer-final" / "index.html"
    assert page.is_file() == usable
    assert (metrics / "inspect" / "README.md").is_file()  # written even when no cell is usable
    report = (metrics / "REPORT.md").read_text()
    assert "## The paper's claims, as measured here" in report and "## Figures" in report
    assert list((metrics / "figures").glob("*.png"))
    summary = json.loads((metrics / "summary.json").read_text())
    assert summary["layer"] == "final" and set(summary) >= sets
    assert report.startswith("# SSAE study report\n\n**Conclusion.**")
    for heading in (
        "synthetic data", "LLM embeddings", "Model selection", "Steering accuracy", "## Controls",
        "## How every SSAE member ended", "## Outliers", "## The layer, chosen without labels",
        "**Sensitivity.**",
    ):  # fmt: skip
        assert heading in report
    assert "# Layer 1" in report and "# Layer final" in report
    assert "| synth_3_2 | 3 |" in report
    for name in sets:
        for key in layers:
            folder = project / "data" / "embeddings" / name / f"layer-{key}"
            assert list(folder.glob("shard-*.parquet"))
            entangled = project / "data" / "entangled" / f"layer-{key}" / f"{name}.parquet"
            assert entangled.exists() == (name == "binary")

    second = run([sys.executable, "-m", "dvc", "repro"], project)
    assert second.returncode == 0
    assert "Running stage" not in second.stdout, second.stdout


# The stages that run ssae_core/study/usability.py (the usable rule), and those downstream of them;
# no training, extraction or synthetic stage imports it.
USABILITY_STAGES = {
    "select",
    "identifiability",
    "steering",
    "behaviour",
    "inspect",
    "ablation",
    "report",
}
DOWNSTREAM = {"report"}


def stages_named(output: str) -> set[str]:
    """The stage names of ``Running stage 'NAME'`` lines (``@item`` suffixes dropped)."""
    return {m.split("@")[0] for m in re.findall(r"Running stage '([^']+)'", output)}


@pytest.mark.slow
def test_an_edit_reruns_exactly_the_stages_that_import_it_and_their_downstream(reproduced):
    project = reproduced
    module = project / "ssae_core" / "study" / "usability.py"
    original = module.read_text()
    try:
        assert "(USABLE, SLACK)" in original
        module.write_text(original.replace("(USABLE, SLACK)", "(SLACK, USABLE)"))
        status = json.loads(dvc(["status", "--json"], project).stdout)
        changed = {name.split("@")[0] for name in status}
        assert changed == USABILITY_STAGES, status
        for name in USABILITY_STAGES:
            assert {"changed deps": {"ssae_core/study/usability.py": "modified"}} in status[name]
        dry = dvc(["repro", "--dry", "--force-downstream"], project).stdout
        assert stages_named(dry) == USABILITY_STAGES | DOWNSTREAM, dry
    finally:
        module.write_text(original)
    assert json.loads(dvc(["status", "--json"], project).stdout) == {}
