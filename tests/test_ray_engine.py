"""Extraction on Ray actors (engine ray) against the local engine, on a tiny random Llama and a
local Ray instance of 2 CPUs (2 actors of 1 thread): the same shards, a killed run resumed, a
failed task retried, one-line errors."""

from __future__ import annotations

import functools
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssae_core.config import load_config
from ssae_core.errors import InputError
from ssae_core.io import load_embeddings, pair_table, write_parquet
from ssae_core.lm import embed, engines
from tests.conftest import TINY_VOCABULARY
from tests.helpers import assert_one_line_error, ssae

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parent.parent
LAYERS, LAYER_DIRS = [1, "final"], ("layer-1", "layer-final")
REAL_EMBEDDER = embed._model_embedder
SHARD_ROWS = 6  # 36 pairs: 6 shards


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance for the module; its GCS address lets other processes join it."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 pairs of seeded word sequences (1-9 words); some texts recur across shards."""
    rng = np.random.default_rng(0)
    words = TINY_VOCABULARY.split()
    texts = [" ".join(rng.choice(words, size=rng.integers(1, 10))) for _ in range(50)]
    x = [texts[i] for i in rng.integers(0, len(texts), 36)]
    x_tilde = [texts[i] for i in rng.integers(0, len(texts), 36)]
    table = pair_table(x, x_tilde, ["train"] * 30 + ["test"] * 6, np.ones((36, 1)), ["c"])
    path = tmp_path_factory.mktemp("ray_pairs") / "pairs.parquet"
    write_parquet(table, path)
    return path


def extract(pairs: Path, out: Path, model: Path, **options) -> Path:
    options = {"shard_rows": SHARD_ROWS, "batch_size": 4, "layers": LAYERS, **options}
    return embed.extract_embeddings(pairs, out, model=str(model), progress=False, **options)


def on_ray(pairs: Path, out: Path, model: Path, **options) -> Path:
    return extract(pairs, out, model, engine="ray", num_actors=2, actor_threads=1, **options)


def files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("layer-*/*.parquet"))}


@pytest.fixture(scope="module")
def reference(pairs_file: Path, tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The local engine's output, with the actors' one torch thread (float32 sums split over more
    threads round differently: ~1e-6 apart, not bit-identical)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return extract(pairs_file, tmp_path_factory.mktemp("local") / "emb", tiny_lm_dir)
    finally:
        torch.set_num_threads(threads)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.slow
def test_ray_gives_the_local_engines_vectors(cluster, reference, pairs_file, tiny_lm_dir, tmp_path):
    out = on_ray(pairs_file, tmp_path / "emb", tiny_lm_dir)
    for layer in LAYER_DIRS:
        local, distributed = load_embeddings(reference / layer), load_embeddings(out / layer)
        assert distributed.pair_id.tolist() == local.pair_id.tolist()
        assert distributed.metadata == local.metadata
        for column in ("z", "z_tilde"):
            a, b = getattr(local, column), getattr(distributed, column)
            assert cosines(a, b).min() >= 0.99999
            print(f"{layer} {column}: max |ray - local| = {np.abs(a - b).max():.3g}")
    # same batches, same float32 model, same threads on CPU: the very same files
    assert files(out) == files(reference) and len(files(out)) == 12


CRASH_AFTER_TWO_SHARDS = """
import os, signal, sys
from ssae_core.lm import embed
write, written = embed._ShardPlan.write, []
def write_then_die(plan, k, states):
    write(plan, k, states)
    written.append(k)
    if len(written) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
embed._ShardPlan.write = write_then_die
pairs, out, model, address = sys.argv[1:]
embed.extract_embeddings(pairs, out, model=model, layers=[1, "final"], shard_rows=6,
    batch_size=4, engine="ray", num_actors=2, address=address, progress=False)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_keeping_its_completed_shards(
    cluster, reference, pairs_file, tiny_lm_dir, tmp_path
):
    out = tmp_path / "emb"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    args = [str(pairs_file), str(out), str(tiny_lm_dir), cluster]
    done = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_TWO_SHARDS, *args],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    kept = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("layer-*/*.parquet")}
    names = sorted(p.name for p in kept)  # two shards completed, in both layer folders
    assert len(set(names)) == 2 and names[0::2] == names[1::2], names

    on_ray(pairs_file, out, tiny_lm_dir)
    for path, (mtime, content) in kept.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content), path
    assert files(out) == files(reference)


def flaky_embedder(marker: Path, *args):
    """The real batch embedder, except that the first batch that claims ``marker`` (renames it:
    one actor wins) kills its actor or raises, as the marker says: a failure planted once."""
    real = REAL_EMBEDDER(*args)

    def embed_once(token_ids):
        claimed = marker.with_name("claimed")
        try:
            marker.rename(claimed)
        except FileNotFoundError:
            return real(token_ids)
        if claimed.read_text() == "die":
            os._exit(1)
        raise RuntimeError("planted failure")

    return embed_once


@pytest.mark.slow
@pytest.mark.parametrize("how", ["die", "raise"])
def test_a_failed_task_is_retried(
    how, cluster, reference, pairs_file, tiny_lm_dir, tmp_path, monkeypatch
):
    marker = tmp_path / "fail-once"
    marker.write_text(how)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors run this code
    monkeypatch.setattr(embed, "_model_embedder", functools.partial(flaky_embedder, marker))
    out = on_ray(pairs_file, tmp_path / "emb", tiny_lm_dir)
    assert (tmp_path / "claimed").exists() and not marker.exists()  # it failed once ...
    assert files(out) == files(reference)  # ... and the run finished with the same shards


def test_an_unreachable_address_fails_fast_in_one_line(pairs_file, tiny_lm_dir, tmp_path):
    started = time.monotonic()
    done = ssae(
        f"embed {pairs_file} --out {tmp_path / 'emb'} --model {tiny_lm_dir} --engine ray "
        "--address 203.0.113.1:6379 --quiet",
        cwd=tmp_path,
    )
    assert_one_line_error(done.returncode, done.stderr, "address: no Ray cluster")
    assert time.monotonic() - started < 30  # the probe gives up after 3 s (+ Python start-up)
    assert not (tmp_path / "emb").exists()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"engine": "spark"}, "params.yaml:embed.engine: 'spark' is not local or ray"),
        ({"engine": "ray", "num_actors": 0}, "params.yaml:embed.num_actors: 0 is not an integer"),
        ({"engine": "ray", "actor_threads": 0}, "params.yaml:embed.actor_threads: 0 is not an"),
        (
            {"engine": "ray", "address": "head"},
            "params.yaml:embed.address: 'head' is not HOST:PORT",
        ),
        ({"address": "head:6379"}, "params.yaml:embed.address: only engine ray uses it"),
    ],
)
def test_engine_settings_are_checked(values, message):
    with pytest.raises(InputError, match="^" + message.replace(".", r"\.")) as caught:
        load_config(embed.EmbedConfig, values, "params.yaml:embed")
    assert "\n" not in str(caught.value)


def test_missing_ray_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    session = engines.engine_session("ray", None)
    with pytest.raises(InputError, match=r"pip install 'ssae\[ray\]'"), session:
        pass


def test_actors_follow_the_cluster():
    cpus_only, gpus = engines.Cluster(cpus=4, gpus=0), engines.Cluster(cpus=16, gpus=2)
    cpu = engines.ray_device("auto", cpus_only)
    assert cpu.type == "cpu" and engines.actor_count(cpus_only, cpu, None, 2) == 2
    cuda = engines.ray_device("auto", gpus)
    assert cuda.type == "cuda" and engines.actor_count(gpus, cuda, None, 1) == 2  # one per GPU
    with pytest.raises(InputError, match="num_actors: 3 actor"):
        engines.actor_count(gpus, cuda, 3, 1)
    with pytest.raises(InputError, match="the Ray cluster has no GPU"):
        engines.ray_device("cuda", cpus_only)
