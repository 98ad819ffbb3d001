"""Where extraction runs: in this process (``local``) or on a pool of Ray actors (``ray``).

:mod:`.embed` decides what is computed: forward-pass batches of tokenised texts (each a shard's
new texts, longest first), and which shard files they fill. An engine only runs the batches:

- ``local``: in this process, one shard after another.
- ``ray``: a pool of Ray actors, each fed the token ids of one batch at a time (two queued per
  actor, so none waits for this process). Each actor loads the model once and keeps it: one
  actor per GPU (``num_gpus=1``) when the cluster has GPUs, else ``num_actors`` (default: the
  cluster's CPUs // ``actor_threads``) CPU actors of ``actor_threads`` torch threads each. Plain
  actors, not Ray Data: on 2 CPUs Ray Data's streaming executor and its per-batch tasks cost
  more than the extraction gained from the second actor (benchmarks/bench_ray.py).
  States come back to this process as batches complete, and :mod:`.embed` writes each shard
  with the local engine's writer (atomically) as soon as all its texts are in, so an interrupted
  run keeps every completed shard. An actor that dies is restarted and its batch run again, and
  a batch whose task raised is run again, up to ``MAX_RETRIES`` times each.

The batches, the model and the dtype are the local engine's, so on CPU the shards are the same
bit for bit. Ray is imported only when engine ``ray`` runs. A process already connected to Ray
(``ray.init``) uses that connection; otherwise ``address`` names a running cluster (``HOST:PORT``
of its head, ``ray://HOST:PORT`` or ``auto``; a host that does not answer within
``CONNECT_TIMEOUT_S`` is a one-line error), or, when it is null, a local Ray instance is started
for the run and shut down after it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ssae_core.errors import InputError
from ssae_core.lm.loading import _first_line, reachable

ENGINES = ("local", "ray")
MAX_RETRIES = 3
IN_FLIGHT = 2
CONNECT_TIMEOUT_S = 3.0
ADDRESS = re.compile(r"(ray://)?[^\s:/]+:\d+")
RAY_LOG_LINE = re.compile(r"^\[[^]]*\] \S+:\d+: (.*)$")
RAY_CONNECT_TRIES_ENV = "RAY_gcs_server_port_wait_time_s"
RAY_INSTALL = "pip install 'ssae[ray]'"

BatchEmbedder = Callable[[list[list[int]]], np.ndarray]
"""Token ids of one batch -> float32 states [L, B, d]."""


@dataclass(frozen=True)
class Cluster:
    """The Ray cluster a run uses: what it offers actors."""

    cpus: int
    gpus: int


def check_engine(
    engine: object, num_actors: object, actor_threads: object, address: object
) -> None:
    """One-line errors for the engine settings (``engine``, ``num_actors``, ``actor_threads``,
    ``address``), before anything runs."""
    if engine not in ENGINES:
        raise InputError(f"engine: {engine!r} is not local or ray; use local or ray")
    for name, value in (("num_actors", num_actors), ("actor_threads", actor_threads)):
        if value is None and name == "num_actors":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name}: {value!r} is not an integer >= 1; give one (or null)")
    if address is not None and not (
        address == "auto" or (isinstance(address, str) and ADDRESS.fullmatch(address))
    ):
        raise InputError(
            f"address: {address!r} is not HOST:PORT of a Ray head (its port is 6379 unless "
            "`ray start --head --port` said otherwise), ray://HOST:PORT or auto"
        )
    if engine == "local":
        for name, value in (("num_actors", num_actors), ("address", address)):
            if value is not None:
                raise InputError(f"{name}: only engine ray uses it; set engine ray or {name} null")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise InputError(f"engine ray: the ray package is not installed; {RAY_INSTALL}") from None
    return ray


@contextlib.contextmanager
def engine_session(engine: str, address: str | None) -> Iterator[Cluster | None]:
    """The Ray cluster of an engine ``ray`` run (connected or started here, and let go after);
    None for ``local``."""
    if engine == "local":
        yield None
        return
    ray = _import_ray()
    if ray.is_initialized():
        yield _cluster(ray)
        return
    _connect(ray, address)
    try:
        yield _cluster(ray)
    finally:
        ray.shutdown()


def _connect(ray: Any, address: str | None) -> None:
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}
    if address is None:
        ray.init(include_dashboard=False, **quiet)
        return
    host = address.removeprefix("ray://")
    if host != "auto" and not reachable(f"tcp://{host}", timeout=CONNECT_TIMEOUT_S):
        raise InputError(
            f"address: no Ray cluster answers at {address} within {CONNECT_TIMEOUT_S:g} s; "
            "start one with `ray start --head` or fix the address"
        )
    held: list[str] = []
    try:
        with _bounded_connect(), _held_stderr(held):
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        reasons = [m.group(1) for m in map(RAY_LOG_LINE.search, held) if m]
        reason = (reasons[-1] if reasons else _first_line(exc))[:160]
        raise InputError(
            f"address: no Ray cluster at {address} ({reason}); start one with "
            "`ray start --head` or fix the address"
        ) from None


@contextlib.contextmanager
def _bounded_connect() -> Iterator[None]:
    """Ray tries a head that answers but is not Ray's (another service on that port) for about
    20 s; one try a second for ``CONNECT_TIMEOUT_S`` seconds is enough for a running cluster."""
    before = os.environ.get(RAY_CONNECT_TRIES_ENV)
    if before is None:
        os.environ[RAY_CONNECT_TRIES_ENV] = str(math.ceil(CONNECT_TIMEOUT_S))
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RAY_CONNECT_TRIES_ENV, None)


@contextlib.contextmanager
def _held_stderr(held: list[str]) -> Iterator[None]:
    """Hold what the block writes to file descriptor 2 (Ray's C++ core logs there, one line per
    failed try): written out after the block if it succeeds, else put in ``held``, so that a
    failure is one line."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        succeeded = False
        try:
            yield
            succeeded = True
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            text = buffer.read().decode(errors="replace")
            if succeeded:
                sys.stderr.write(text)
            else:
                held.extend(text.splitlines())


def _cluster(ray: Any) -> Cluster:
    resources = ray.cluster_resources()
    return Cluster(cpus=int(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)))


def ray_device(device: str, cluster: Cluster) -> torch.device:
    """Where the actors run the model: ``auto`` -> CUDA when the cluster has GPUs, else CPU (the
    driver's own devices do not matter); each actor sees its one GPU as ``cuda``."""
    if device == "auto":
        return torch.device("cuda" if cluster.gpus else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InputError(f"device {device!r}: unknown; use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not cluster.gpus:
        raise InputError(f"device {device!r}: the Ray cluster has no GPU; use auto or cpu")
    return torch.device(resolved.type)


def actor_count(
    cluster: Cluster, device: torch.device, num_actors: int | None, threads: int
) -> int:
    """How many actors a run starts: one per GPU (or ``num_actors``), else ``num_actors`` or
    the cluster's CPUs // ``threads``; more than the cluster can place is an error (they would
    wait forever)."""
    if device.type == "cuda":
        room, each, offered = cluster.gpus, "1 GPU", f"{cluster.gpus} GPU(s)"
    else:
        room, each, offered = cluster.cpus // threads, f"{threads} CPU(s)", f"{cluster.cpus} CPUs"
    count = room if num_actors is None else num_actors
    if count < 1 or count > room:
        raise InputError(
            f"num_actors: {count} actor(s) of {each} each do not fit the Ray cluster's "
            f"{offered}; lower num_actors or actor_threads"
        )
    return count


class _ActorEmbedder:
    """What each actor runs: the model is loaded once, in ``__init__``."""

    def __init__(self, make_embedder: Callable[[], BatchEmbedder], threads: int) -> None:
        torch.set_num_threads(threads)
        self.embed = make_embedder()

    def states(self, ids: list[list[int]]) -> np.ndarray:
        return np.ascontiguousarray(self.embed(ids), np.float32)


def run_on_actors(
    jobs: Sequence[Sequence[Sequence[int]]],
    make_embedder: Callable[[], BatchEmbedder],
    *,
    actors: int,
    threads: int,
    gpu: bool,
    num_layers: int,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(job index, states [L, B, d])`` of every batch of token ids in ``jobs``, in the order
    they complete, computed by ``actors`` Ray actors (no more than there are batches) that each
    call ``make_embedder()`` once. Each actor has ``IN_FLIGHT`` batches queued, so it never waits
    for this process; a batch whose task raised or whose actor died (it is restarted) is run
    again, up to ``MAX_RETRIES`` times."""
    if not jobs:
        return
    ray = _import_ray()
    remote = ray.remote(_ActorEmbedder).options(
        num_cpus=threads,
        num_gpus=1 if gpu else 0,
        max_restarts=MAX_RETRIES,
        max_task_retries=MAX_RETRIES,
    )
    pool = [remote.remote(make_embedder, threads) for _ in range(min(actors, len(jobs)))]
    todo, tries = deque(range(len(jobs))), dict.fromkeys(range(len(jobs)), 0)
    running: dict[Any, tuple[int, int]] = {}

    def submit(actor: int) -> None:
        if todo:
            job = todo.popleft()
            ids = [[int(t) for t in row] for row in jobs[job]]
            running[pool[actor].states.remote(ids)] = (job, actor)

    try:
        for _ in range(IN_FLIGHT):  # round robin: the first shards complete first
            for actor in range(len(pool)):
                submit(actor)
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            job, actor = running.pop(ref)
            try:
                states = ray.get(ref)
            except ray.exceptions.RayError:
                tries[job] += 1
                if tries[job] > MAX_RETRIES:
                    raise
                todo.appendleft(job)
            else:
                yield job, states.reshape(num_layers, len(jobs[job]), -1)
            submit(actor)
    finally:
        for actor in pool:
            ray.kill(actor)
