"""Sharing a study: outputs pushed to a DVC remote (a local folder) from one clone and pulled into
a fresh clone are complete: `dvc repro` there runs nothing and `dvc metrics diff` is empty. And
where the data sources resolve from (TruthfulQA, caches) when a clone sits on another machine.

The pipeline is reduced to the stages the `select` metric needs (one study set), on the tiny
inputs of tests/project.py, so that the test stays within a few minutes.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from ssae_core.datasets import truthfulqa as tqa
from ssae_core.errors import InputError
from ssae_core.lm import loading
from tests.project import TRUTHFULQA, dvc, git, make_project
from tests.test_truthfulqa import fake_hub, hub_parquet_bytes, no_network, write_json

TARGET = "select"  # metrics/udr.json: needs prepare_model, every pair set and embedding, a study


@pytest.mark.slow
@pytest.mark.skipif(not TRUTHFULQA.exists(), reason="needs ../shared/data/truthfulqa")
def test_pushed_study_pulls_into_a_fresh_clone_as_up_to_date(tmp_path):
    project = make_project(tmp_path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["study"]["sets"] = params["study"]["entangled_sets"] = ["lang"]
    params["study"]["overcomplete"]["set"] = "lang"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    remote = tmp_path / "remote"
    dvc(["remote", "add", "-d", "shared", str(remote)], project)
    dvc(["repro", TARGET], project)
    git(["add", "-A"], project)
    git(["commit", "-q", "-m", "study"], project)
    dvc(["push", "-r", "shared", "--with-deps", TARGET], project)
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    git(["clone", "-q", str(project), str(clone)], tmp_path)
    assert not (clone / "data").exists() or not any((clone / "data").rglob("*.parquet"))
    dvc(["pull", "--with-deps", TARGET], clone)
    assert (clone / "metrics" / "udr.json").read_text() == (
        project / "metrics" / "udr.json"
    ).read_text()
    assert list((clone / "data" / "embeddings" / "lang").rglob("shard-*.parquet"))  # study.sets

    status = dvc(["status", "--with-deps", TARGET], clone).stdout
    assert "up to date" in status, status
    again = dvc(["repro", TARGET], clone)
    assert "Running stage" not in again.stdout, again.stdout
    diff = dvc(["metrics", "diff", "--json"], clone).stdout
    assert json.loads(diff or "{}") == {}, diff
    assert git(["status", "--porcelain"], clone).stdout == ""  # repro changed no tracked file


# --------------------------------------------------------------------------- where sources resolve


def test_truthfulqa_sources_resolve_in_order_and_the_error_lists_all_three(tmp_path):
    configured = tqa.TruthfulQAConfig(source=str(tmp_path / "copy"))
    env_copy = write_json(tmp_path / "env.json")
    assert tqa.resolve_source(configured, {tqa.ENV_VAR: str(env_copy)}) == (env_copy, tqa.ENV_VAR)
    write_json(tmp_path / "copy")  # the configured copy appears: it comes first again
    assert tqa.resolve_source(configured, {tqa.ENV_VAR: str(env_copy)})[1] == "truthfulqa.source"

    missing = tqa.TruthfulQAConfig(source=str(tmp_path / "nowhere"))
    for env, env_state in (({}, "$SSAE_TRUTHFULQA not set"),
                           ({tqa.ENV_VAR: str(tmp_path / "gone")}, "gone not found")):  # fmt: skip
        with pytest.raises(InputError) as caught:
            tqa.load(missing, env=env, cache_dir=tmp_path / "cache", opener=no_network)
        message = str(caught.value)
        assert "\n" not in message
        assert f"truthfulqa.source {tmp_path / 'nowhere'} not found" in message
        assert env_state in message
        assert "pinned download failed" in message and "Network is unreachable" in message


def test_truthfulqa_download_cache_follows_ssae_cache(tmp_path, monkeypatch):
    data = hub_parquet_bytes()
    config = tqa.TruthfulQAConfig(
        endpoint=fake_hub(tmp_path / "hub", data), sha256=hashlib.sha256(data).hexdigest()
    )
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    assert tqa.default_cache_dir() == loading.cache_root() / "truthfulqa"
    file = tqa.fetch(config)
    assert file.parent == tmp_path / "cache" / "truthfulqa" and file.read_bytes() == data
    again = tqa.load(config, env={}, opener=no_network)  # from the cache, no network
    assert again.provenance["source_named_by"] == "download"
