"""File formats shared by every stage: pair tables, embedding tables, atomic writes.

Pair table (Parquet): ``pair_id`` int64, ``x`` string, ``x_tilde`` string, ``split`` string,
``shift`` list<float32>; concept names in the schema metadata.

Embedding table (one Parquet file, or a folder of ``shard-00000.parquet`` ...): ``pair_id`` int64,
``split`` string, ``z`` and ``z_tilde`` fixed_size_list<float32>[d], optional ``shift``
list<float32>. Schema metadata: ``concepts`` (JSON list) and free-form provenance strings
(model, revision, layer, token position, dtype, template, ...).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import math
import os
import re
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssae_core import __version__
from ssae_core.errors import InputError

CONCEPTS_KEY = "concepts"
SHARD_GLOB = "shard-*.parquet"
SHARD_NAME = "shard-{:05d}.parquet"
SHARD_COUNT_KEYS = ("num_pairs", "shard_rows")
"""Shard metadata from which the number of shards of a complete folder follows."""
SHARD_CONTENT_KEYS = (
    "model",
    "revision",
    "layer",
    "token_position",
    "dtype",
    "template",
    "pairs_sha256",
    "shard_rows",
)
"""Shard metadata that changes a shard's content: every shard of one folder must agree on it."""
PAIR_COLUMNS = ("pair_id", "x", "x_tilde", "split", "shift")
EMBEDDING_COLUMNS = ("pair_id", "split", "z", "z_tilde")


# --------------------------------------------------------------------------- atomic writes
#
# Every write goes through a staging folder beside its target, named
# ``.{target}.ssae-tmp-{pid}-{token}`` and holding STAGING_MARKER (target, pid, host). The new file
# or folder is built inside it and renamed onto the target only once complete; the staging folder is
# removed on exit, whatever happens. A run killed outright (SIGKILL, power loss) leaves it behind:
# the next write of the same target removes the staging folders of processes that are no longer
# alive (same host, name and marker agree), and never anything else.

STAGING_TAG = ".ssae-tmp-"
STAGING_MARKER = ".ssae-staging.json"
_STAGING_SUFFIX = re.compile(r"(?P<pid>\d+)-[0-9a-f]{8}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _is_stale_staging(folder: Path, target: Path) -> bool:
    """``folder`` is a staging folder of ``target`` whose process has died (on this host)."""
    prefix = f".{target.name}{STAGING_TAG}"
    match = _STAGING_SUFFIX.fullmatch(folder.name[len(prefix) :])
    if not folder.name.startswith(prefix) or match is None or folder.is_symlink():
        return False
    try:
        marker = json.loads((folder / STAGING_MARKER).read_text())
    except (OSError, ValueError):
        return False
    pid = int(match.group("pid"))
    return (
        isinstance(marker, dict)
        and marker.get("target") == target.name
        and marker.get("pid") == pid
        and marker.get("host") == socket.gethostname()
        and pid != os.getpid()
        and not _pid_alive(pid)
    )


def remove_stale_staging(target: str | os.PathLike) -> list[Path]:
    """Remove the staging folders that dead runs left beside ``target``; returns them."""
    target = Path(target)
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return []
    stale = [p for p in siblings if _is_stale_staging(p, target)]
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
    return stale


def _make_parents(folder: Path, target: Path) -> list[Path]:
    """Create ``folder`` and its missing ancestors; returns those created (deepest last)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    for parent in missing:
        try:
            parent.mkdir()
        except FileExistsError:
            if not parent.is_dir():
                raise InputError(
                    f"{target}: {parent} is a file, not a folder; choose another path"
                ) from None
        except NotADirectoryError:
            blocker = next(p for p in parent.parents if p.exists())
            raise InputError(
                f"{target}: {blocker} is a file, not a folder; choose another path"
            ) from None
        except OSError as exc:
            raise InputError(
                f"{target}: cannot create folder {parent} ({exc.strerror}); choose another path"
            ) from None
    if not folder.is_dir():
        raise InputError(f"{target}: {folder} is a file, not a folder; choose another path")
    return missing


RESOURCE_ADVICE = {
    errno.ENOSPC: "the disk is full: free space or write to another disk; ",
    errno.EDQUOT: "the disk quota is used up: free space or write to another disk; ",
    errno.EFBIG: "the file size limit (ulimit -f) is reached: raise it or write less; ",
    errno.EROFS: "the file system is read-only: write to another folder; ",
    errno.EACCES: "permission denied: write to a folder you own; ",
}
_ERRNO_IN_TEXT = re.compile(r"(?:errno |code: |os error )(\d+)")


def resource_errno(exc: BaseException) -> int | None:
    """The errno of a resource failure (full disk, file size limit, read-only or forbidden
    folder) behind ``exc``, whether Python, pyarrow ("[errno 28]") or safetensors ("os error 28")
    raised it; None for any other error."""
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        match = _ERRNO_IN_TEXT.search(str(exc))
        code = int(match.group(1)) if match else None
    return code if code in RESOURCE_ADVICE else None


@contextlib.contextmanager
def staging(target: str | os.PathLike, *, tidy_parents: bool = False) -> Iterator[Path]:
    """A new, empty staging folder beside ``target`` (created with its missing parents), removed
    on exit; stale staging folders of ``target`` are removed first. ``tidy_parents``: on failure,
    remove the parents it created again (when still empty)."""
    target = Path(target)
    created = _make_parents(target.parent, target)
    remove_stale_staging(target)
    folder = target.parent / f".{target.name}{STAGING_TAG}{os.getpid()}-{secrets.token_hex(4)}"
    done = False
    try:
        try:
            folder.mkdir()
            marker = {"target": target.name, "pid": os.getpid(), "host": socket.gethostname()}
            (folder / STAGING_MARKER).write_text(json.dumps(marker) + "\n")
        except OSError as exc:
            raise InputError(
                f"{target}: cannot write in {target.parent} ({exc.strerror}); "
                "choose a folder you can write to"
            ) from None
        try:
            yield folder
        except Exception as exc:
            code = resource_errno(exc)
            if code is None:
                raise
            raise InputError(
                f"{target}: cannot write it ({os.strerror(code)}); {RESOURCE_ADVICE[code]}"
                "nothing partial was left"
            ) from None
        done = True
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if not done and tidy_parents:
            for parent in reversed(created):
                with contextlib.suppress(OSError):
                    parent.rmdir()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, tidy_parents: bool = False) -> Iterator[Path]:
    """Yield a temporary path (an empty file named like ``path``, in a staging folder beside it);
    it is renamed onto ``path`` only if the block succeeds (``tidy_parents``: see staging)."""
    target = Path(path)
    with staging(target, tidy_parents=tidy_parents) as folder:
        tmp = folder / target.name
        tmp.touch()
        yield tmp
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_dir(
    path: str | os.PathLike, *, overwrite: bool = True, tidy_parents: bool = False
) -> Iterator[Path]:
    """Yield a temporary folder (in a staging folder beside ``path``); it replaces ``path`` only if
    the block succeeds. On any exception ``path`` is left as it was (``tidy_parents``: see
    staging)."""
    target = Path(path)
    if target.exists() and not overwrite:
        raise InputError(f"{target} already exists; remove it or choose another --out")
    with staging(target, tidy_parents=tidy_parents) as folder:
        tmp = folder / target.name
        tmp.mkdir()
        yield tmp
        _swap_in(tmp, target, folder)


def _swap_in(new: Path, target: Path, folder: Path) -> None:
    """Rename folder ``new`` onto ``target``; an old ``target`` is moved into the staging
    ``folder`` first (removed with it), so the target is never a half-written mix."""
    try:
        os.replace(new, target)  # no target, or an empty folder
        return
    except OSError:
        if not os.path.lexists(target):
            raise
    os.replace(target, folder / ".previous")
    os.replace(new, target)


# --------------------------------------------------------------------------- safe outputs
#
# What a command writes at a user's --out: a folder carries OUTPUT_MARKER (naming the command and
# listing the files it wrote), a single file carries OUTPUT_KEY in its metadata (Parquet schema,
# safetensors header, GGUF). A later run of the same command may replace it, unless the folder
# holds a file the marker does not list; nothing else is ever replaced or deleted.

OUTPUT_MARKER = ".ssae-output.json"
OUTPUT_KEY = "ssae.output"
OUTPUT_KINDS = ("folder", "file")


def output_stamp(command: str) -> dict[str, str]:
    """The metadata entry that marks a single-file output of ``command`` as ours."""
    return {OUTPUT_KEY: command}


def stamped(table: pa.Table, command: str) -> pa.Table:
    """``table`` with the stamp of ``command`` added to its schema metadata."""
    meta = dict(table.schema.metadata or {})
    meta.update({k.encode(): v.encode() for k, v in output_stamp(command).items()})
    return table.replace_schema_metadata(meta)


def written_by(path: str | os.PathLike) -> str | None:
    """The ``ssae`` command that wrote the output at ``path`` (None: not an output of ours)."""
    path = Path(path)
    try:
        if path.is_dir():
            marker = json.loads((path / OUTPUT_MARKER).read_text())
            command = marker.get("command") if isinstance(marker, dict) else None
        else:
            command = _file_stamp(path)
    except Exception:  # unreadable or not in a format we write: not ours
        return None
    return command if isinstance(command, str) else None


def _file_stamp(path: Path) -> object:
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic == b"PAR1":
        meta = pq.read_schema(path).metadata or {}
        value = meta.get(OUTPUT_KEY.encode())
        return None if value is None else value.decode()
    if magic == b"GGUF":
        import gguf

        field = gguf.GGUFReader(str(path)).fields.get(OUTPUT_KEY)
        return None if field is None else field.contents()
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as handle:
        return (handle.metadata() or {}).get(OUTPUT_KEY)


def foreign_files(folder: Path) -> list[str]:
    """The files in ``folder`` (an output folder of ours) that its marker does not list as
    written by the command, relative to it; empty when the marker lists none (an output folder
    filled piece by piece, or written before markers listed their files)."""
    try:
        listed = json.loads((folder / OUTPUT_MARKER).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return []
    if not isinstance(listed, list):
        return []
    ours = {*listed, OUTPUT_MARKER}
    found = (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
    return sorted(name for name in found if name not in ours)


def _is_empty(path: Path) -> bool:
    if path.is_dir():
        return not any(path.iterdir())
    return path.stat().st_size == 0


def check_output(
    path: str | os.PathLike,
    command: str,
    *,
    kind: str,
    inputs: Sequence[str | os.PathLike] = (),
    option: str = "--out",
    accept: Callable[[Path], bool] | None = None,
) -> Path:
    """Refuse an output path that could lose data; returns it as a Path.

    Refused: an empty path, the current folder or one above it, the home folder, a symbolic link,
    an input or a folder that holds one, a file where a folder goes (and the reverse), and any
    existing, non-empty file or folder that is not an earlier output of the same ``command``
    (carrying its marker or stamp, or, without one, recognised by ``accept``: for outputs that
    versions before the marker wrote).
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind={kind!r}: use one of {OUTPUT_KINDS}")
    if not str(path).strip():
        raise InputError(f"{option} '': give a path for the {kind} to write")
    target = Path(path)
    where = f"{option} {path}"
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise InputError(f"{where}: is the current folder or one above it; give a new {kind}")
    if resolved == Path.home().resolve():
        raise InputError(f"{where}: is the home folder; give a new {kind}")
    for source in inputs:
        source_path = Path(source).resolve()
        if resolved == source_path:
            raise InputError(f"{where}: is the input {source}; give another path")
        if resolved in source_path.parents:
            raise InputError(f"{where}: holds the input {source}; give another path")
    if target.is_symlink():
        raise InputError(f"{where}: is a symbolic link; give the path it points to, or a new one")
    if not target.exists():
        return target
    if kind == "folder" and not target.is_dir():
        raise InputError(f"{where}: is a file; give a folder path")
    if kind == "file" and target.is_dir():
        raise InputError(f"{where}: is a folder; give a file path")
    owner = written_by(target)
    if owner == command and kind == "folder":
        foreign = foreign_files(target)
        if foreign:
            more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
            raise InputError(
                f"{where}: holds {foreign[0]}{more}, which {_shown(command)} did not write; "
                "move it out of the folder, or give another path"
            )
    if owner == command or _is_empty(target) or (owner is None and accept and accept(target)):
        return target
    if owner is not None:
        raise InputError(
            f"{where}: holds the output of {_shown(owner)}, not of {_shown(command)}; "
            f"give another path"
        )
    raise InputError(
        f"{where}: exists and was not written by {_shown(command)}; "
        f"give a new path (or remove it yourself)"
    )


SHOWN_COMMANDS = {"steering-vector": "`ssae vector md` or `ssae steer --export`"}
"""How a stamp that is not a subcommand's name is shown in messages."""


def _shown(command: str) -> str:
    return SHOWN_COMMANDS.get(command, f"`ssae {command}`")


@contextlib.contextmanager
def safe_output(
    path: str | os.PathLike,
    command: str,
    *,
    kind: str,
    inputs: Sequence[str | os.PathLike] = (),
    option: str = "--out",
    accept: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Write an output of ``command`` at a user-given path without ever losing data.

    Checks ``path`` (:func:`check_output`), yields a temporary folder (``kind='folder'``; once
    the block has succeeded it gets OUTPUT_MARKER, listing the files written) or file path
    (``kind='file'``; what is written there must carry :func:`output_stamp`), and renames it onto
    ``path`` once the block has succeeded.
    """
    target = check_output(path, command, kind=kind, inputs=inputs, option=option, accept=accept)
    writer = atomic_dir if kind == "folder" else atomic_file
    with writer(target, tidy_parents=True) as tmp:
        yield tmp
        if kind == "folder":  # the record of what the command wrote: nothing else is replaced
            files = sorted(
                p.relative_to(tmp).as_posix()
                for p in tmp.rglob("*")
                if not p.is_dir() and p.name != OUTPUT_MARKER
            )
            (tmp / OUTPUT_MARKER).write_text(_marker_text(command, files))
        if written_by(tmp) != command:
            raise RuntimeError(f"{target}: written without the stamp of `ssae {command}`")
        # still ours (or absent) just before the swap: it may have changed while the block ran
        check_output(target, command, kind=kind, inputs=inputs, option=option, accept=accept)


@contextlib.contextmanager
def resumable_output(
    path: str | os.PathLike,
    command: str,
    *,
    inputs: Sequence[str | os.PathLike] = (),
    option: str = "--out",
    accept: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """An output folder that a command fills piece by piece, so that an interrupted run resumes
    (``ssae embed``: one shard per piece, each written with :func:`atomic_file`).

    Checks ``path`` like :func:`check_output`. A new (or empty) folder is created with its marker
    and, if the block fails before a piece was added, removed again with the parents it needed;
    an earlier output that ``accept`` recognises (no marker yet) keeps its pieces and gains the
    marker. Yields the folder itself.
    """
    target = check_output(path, command, kind="folder", inputs=inputs, option=option, accept=accept)
    fresh = not target.exists() or _is_empty(target)
    new_parents = [p for p in target.parents if not p.exists()]
    if fresh:
        with atomic_dir(target) as tmp:
            (tmp / OUTPUT_MARKER).write_text(_marker_text(command))
    elif written_by(target) != command:
        with atomic_file(target / OUTPUT_MARKER) as tmp:
            tmp.write_text(_marker_text(command))
    try:
        yield target
    except BaseException:
        if fresh and {p.name for p in target.iterdir()} <= {OUTPUT_MARKER}:
            shutil.rmtree(target, ignore_errors=True)
            for parent in new_parents:
                with contextlib.suppress(OSError):
                    parent.rmdir()
        raise


def _marker_text(command: str, files: Sequence[str] | None = None) -> str:
    record: dict[str, object] = {"command": command, "version": __version__}
    if files is not None:
        record["files"] = list(files)
    return json.dumps(record) + "\n"


def write_json(obj: object, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> object:
    """Parse a JSON file; a missing, empty or corrupt file is an :class:`InputError`."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or "not text"
        raise InputError(f"{path}: cannot read it ({reason})") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InputError(
            f"{path}: not valid JSON ({str(exc).splitlines()[0]}); restore it or re-create it"
        ) from None


CHECKSUMS = {"write_page_checksum": True}
"""How every Parquet file of the tool is written: each data page carries a CRC32 of its bytes."""
VERIFY = {"page_checksum_verification": True}
"""How every Parquet file is read: a page whose bytes no longer match its CRC is an error (pages
of files written without checksums are read as they are)."""
DAMAGED = "CRC checksum verification failed"


def write_table_file(table: pa.Table, path: str | os.PathLike) -> None:
    """``pq.write_table`` with page checksums (to a path the caller made atomic)."""
    pq.write_table(table, path, **CHECKSUMS)


def table_writer(path: str | os.PathLike, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of a table part by part (one row group per part), with page checksums, to a path
    the caller made atomic."""
    return pq.ParquetWriter(path, schema, **CHECKSUMS)


def write_parquet(table: pa.Table, path: str | os.PathLike) -> None:
    """Write one Parquet file atomically, with page checksums."""
    with atomic_file(path) as tmp:
        write_table_file(table, tmp)


def parquet_error(path: object, exc: BaseException) -> InputError:
    """The one-line error for a Parquet file that cannot be read: damaged (a page fails its
    checksum: delete it and re-create it) or not readable at all."""
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if DAMAGED in str(exc):
        return InputError(
            f"{path}: damaged (a data page fails its checksum); delete it and re-run the command "
            "that wrote it (`ssae embed` and `dvc repro` redo only missing shards)"
        )
    return InputError(f"{path}: not a readable Parquet file ({first_line})")


# --------------------------------------------------------------------------- metadata


def encode_metadata(concepts: list[str] | None, extra: Mapping[str, object] | None) -> dict:
    """Schema metadata: concept names as a JSON list, other values as strings (JSON if not str)."""
    meta: dict[bytes, bytes] = {}
    if concepts is not None:
        meta[CONCEPTS_KEY.encode()] = json.dumps(list(concepts)).encode()
    for key, value in (extra or {}).items():
        text = value if isinstance(value, str) else json.dumps(value)
        meta[str(key).encode()] = text.encode()
    return meta


def decode_metadata(schema: pa.Schema) -> tuple[list[str] | None, dict[str, str]]:
    """Concept names and the other metadata strings (without pandas' and our output stamp)."""
    raw = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    raw.pop("pandas", None)
    raw.pop(OUTPUT_KEY, None)
    concepts = parse_concepts(raw.pop(CONCEPTS_KEY)) if CONCEPTS_KEY in raw else None
    return concepts, raw


def parse_concepts(text: str) -> list[str]:
    """Concept names from metadata: a JSON list of names, else comma-separated names."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, list):
        return [str(name) for name in value]
    if isinstance(value, str):  # a JSON string: its text
        text = value
    return [name.strip() for name in text.split(",") if name.strip()]


# --------------------------------------------------------------------------- reading tables


def _no_shards_message(p: Path) -> str:
    """Why folder ``p`` is no table, with the fix: a multi-layer extraction folder (``layer-*``
    subfolders, as ``ssae embed --layers`` writes) names its layer tables to pick from."""
    layers = [d.name for d in sorted(p.iterdir()) if d.is_dir() and d.name.startswith("layer-")]
    if layers:
        return (
            f"{p} holds one table per layer ({', '.join(layers)}); give one of them, "
            f"e.g. {p / layers[0]}"
        )
    inner = [d.name for d in sorted(p.iterdir()) if d.is_dir() and any(d.glob(SHARD_GLOB))]
    if inner:
        hint = f"it holds folders of shards ({', '.join(inner[:4])}): give one, e.g. {p / inner[0]}"
    else:
        hint = "check the path"
    return f"{p}: folder holds no Parquet shards ({SHARD_GLOB}); {hint}"


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files behind ``path``: the file itself, or a folder's shards in order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(p.glob(SHARD_GLOB)) or sorted(p.glob("*.parquet"))
        if not files:
            raise InputError(_no_shards_message(p))
        return files
    if not p.exists():
        raise InputError(f"{p}: no such file or folder; check the path")
    return [p]


def read_parquet(
    path: Path, shown: object = None, columns: Sequence[str] | None = None
) -> pa.Table:
    """One Parquet file (``columns`` of it, or all), its pages checked against their checksums;
    an unreadable or damaged file is an :class:`InputError` naming ``shown`` (default: the file;
    a damaged file is always named itself). Reads whole row groups: for z and z_tilde of tables
    of any size, read :func:`read_slices` of :func:`row_group_blocks`."""
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns), **VERIFY)
    except (pa.ArrowException, OSError) as exc:
        raise parquet_error(path if shown is None or DAMAGED in str(exc) else shown, exc) from None


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """Read a Parquet file or a folder of shards as one table (schema metadata of the first),
    ``columns`` of it or all.

    A folder written by an extractor (shards that record SHARD_COUNT_KEYS) must be complete and
    written with one set of settings (SHARD_CONTENT_KEYS).
    """
    files = parquet_files(path)
    tables = [read_parquet(f, path if len(files) == 1 else f, columns) for f in files]
    if Path(path).is_dir():
        check_shards(path, files, [t.schema for t in tables])
    if len(tables) == 1:
        return tables[0]
    schema = tables[0].schema
    cast = []
    for f, table in zip(files, tables, strict=True):
        try:
            cast.append(table.cast(schema))
        except (pa.ArrowException, ValueError, TypeError):
            raise InputError(
                f"{path}: shards differ: {_difference(table.schema, f.name, schema, files[0].name)}"
                "; re-create the folder"
            ) from None
    return pa.concat_tables(cast)


# --------------------------------------------------------------------------- reading in slices


MIB = 2**20
SLICE_BYTES = 8 * MIB
"""Most bytes of z and z_tilde (uncompressed) decoded at once from a row group, whatever the
file's row-group size (``benchmarks/bench_streaming.py`` prints the peak memory this gives)."""
READ_BUFFER = MIB
"""Bytes pyarrow reads from a column chunk at a time (a buffered stream: without it, pyarrow
reads a row group's whole column chunks before decoding the first slice)."""
SLICE_COLUMNS = ("z", "z_tilde")
"""The columns whose bytes set a slice's rows: the wide ones."""


class Block(NamedTuple):
    """One row group of one Parquet file, read ``slice_rows`` rows at a time."""

    file: Path
    row_group: int
    rows: int
    slice_rows: int


def row_group_blocks(file: Path, names: Sequence[str] = SLICE_COLUMNS) -> tuple[list[Block], int]:
    """The blocks of ``file`` (each read in slices of at most ``SLICE_BYTES`` of the columns
    ``names``) and the uncompressed bytes of those columns."""
    try:
        meta = pq.ParquetFile(file).metadata
    except (pa.ArrowException, OSError) as exc:
        raise parquet_error(file, exc) from None
    blocks, size = [], 0
    for k in range(meta.num_row_groups):
        group = meta.row_group(k)
        group_bytes = sum(
            group.column(c).total_uncompressed_size
            for c in range(group.num_columns)
            if group.column(c).path_in_schema.split(".")[0] in names
        )
        per_row = group_bytes / max(group.num_rows, 1)
        slice_rows = max(1, min(group.num_rows, int(SLICE_BYTES // max(per_row, 1))))
        blocks.append(Block(file, k, group.num_rows, slice_rows))
        size += group_bytes
    return blocks, size


def read_slices(block: Block, columns: Sequence[str]) -> Iterator[pa.Table]:
    """The rows of ``block``, ``block.slice_rows`` at a time (never the whole row group: pyarrow's
    batch iteration over a buffered stream), pages checked against their checksums."""
    try:
        with pq.ParquetFile(
            block.file, buffer_size=READ_BUFFER, pre_buffer=False, **VERIFY
        ) as file:
            for batch in file.iter_batches(
                batch_size=block.slice_rows,
                row_groups=[block.row_group],
                columns=list(columns),
                use_threads=False,
            ):
                yield pa.Table.from_batches([batch])
    except (pa.ArrowException, OSError) as exc:
        raise parquet_error(block.file, exc) from None


def embedding_schemas(files: Sequence[Path], path: object) -> list[pa.Schema]:
    """The schemas of an embedding table's files, read from their footers alone: each must be
    readable and hold EMBEDDING_COLUMNS, and a folder of extractor shards must be complete."""
    schemas = []
    for file in files:
        try:
            schemas.append(pq.read_schema(file))
        except (pa.ArrowException, OSError) as exc:
            raise parquet_error(file, exc) from None
        missing = [c for c in EMBEDDING_COLUMNS if c not in schemas[-1].names]
        if missing:
            raise InputError(
                f"{file}: not an embedding table: missing column(s) {', '.join(missing)} "
                f"(has {', '.join(schemas[-1].names) or 'none'})"
            )
    if Path(str(path)).is_dir():
        check_shards(path, files, schemas)
    return schemas


class EmbeddingFiles(NamedTuple):
    """An embedding table on disk, from its files' footers: the files, their schemas, their
    blocks in order and the uncompressed bytes of z and z_tilde (what loading them takes)."""

    files: list[Path]
    schemas: list[pa.Schema]
    blocks: list[Block]
    embedding_bytes: int


def open_embeddings(path: str | os.PathLike) -> EmbeddingFiles:
    """The files of the embedding table at ``path``, checked from their footers alone (see
    :func:`embedding_schemas`); a table without rows is an :class:`InputError`."""
    files = parquet_files(path)
    schemas = embedding_schemas(files, path)
    blocks, size = [], 0
    for file in files:
        file_blocks, file_bytes = row_group_blocks(file)
        blocks += file_blocks
        size += file_bytes
    if not any(b.rows for b in blocks):
        raise InputError(f"{path}: embedding table has no rows; re-run the step that wrote it")
    return EmbeddingFiles(files, schemas, blocks, size)


def block_rows(block: Block) -> Iterator[EmbeddingRows]:
    """The rows of one block, slice by slice, checked as :func:`embedding_rows` checks them."""
    for part in read_slices(block, EMBEDDING_COLUMNS):
        yield embedding_rows(part, block.file)


def _difference(a: pa.Schema, a_name: str, b: pa.Schema, b_name: str) -> str:
    """The first column in which two schemas differ, in words."""
    for name in dict.fromkeys([*a.names, *b.names]):
        a_type = a.field(name).type if name in a.names else "no such column"
        b_type = b.field(name).type if name in b.names else "no such column"
        if a_type != b_type:
            return f"column {name} is {a_type} in {a_name} but {b_type} in {b_name}"
    return f"{a_name} and {b_name} have their columns in different orders"


def check_shards(path: object, files: Sequence[Path], schemas: Sequence[pa.Schema]) -> None:
    """Refuse a partial or mixed folder of extractor shards: every shard that records
    SHARD_COUNT_KEYS must agree on SHARD_CONTENT_KEYS, and all ceil(num_pairs / shard_rows) shards
    must be present. Shards that record none of this (written by hand) are taken as they are."""
    metas = [schema.metadata or {} for schema in schemas]
    if not all(all(k.encode() in m for k in SHARD_COUNT_KEYS) for m in metas):
        return
    for key in SHARD_CONTENT_KEYS:
        values = {m.get(key.encode()) for m in metas}
        if len(values) > 1:
            shown = sorted("(none)" if v is None else v.decode()[:40] for v in values)
            raise InputError(
                f"{path}: shards were written with different {key} ({', '.join(shown[:3])}): an "
                "extraction was interrupted and restarted with other settings; run it again to "
                "completion"
            )
    try:
        num_pairs, shard_rows = (int(metas[0][k.encode()]) for k in SHARD_COUNT_KEYS)
        expected = math.ceil(num_pairs / shard_rows)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{path}: shard metadata {SHARD_COUNT_KEYS} is not a count") from None
    names = {f.name for f in files}
    missing = [k for k in range(expected) if SHARD_NAME.format(k) not in names]
    if missing or len(files) != expected:
        raise InputError(
            f"{path}: holds {len(files)} of the {expected} shards its extraction writes "
            f"(missing {', '.join(SHARD_NAME.format(k) for k in missing[:3]) or 'none'}); "
            "the extraction was interrupted or is still running: run it again to completion"
        )


def _require_columns(table: pa.Table, columns: tuple[str, ...], path: object, what: str) -> None:
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: not {what}: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(table.column_names) or 'none'})"
        )


def float_matrix(column: pa.ChunkedArray, path: object, name: str) -> np.ndarray:
    """A list or fixed_size_list column as a float32 [N, d] array; ragged rows are an error."""
    arr = column.combine_chunks()
    if len(arr) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    if arr.null_count:
        raise InputError(f"{path}: column {name} has {arr.null_count} null row(s); drop them")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return np.array(flat, dtype=np.float32).reshape(len(arr), width)  # owned, writable
    if pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = np.diff(arr.offsets.to_numpy())
        if len(np.unique(lengths)) != 1:
            raise InputError(f"{path}: rows of column {name} have different lengths; fix the table")
        flat = arr.flatten().to_numpy(zero_copy_only=False)
        return np.array(flat, dtype=np.float32).reshape(len(arr), int(lengths[0]))
    raise InputError(f"{path}: column {name} must be a list of floats, got {arr.type}")


# --------------------------------------------------------------------------- embedding tables


STATE_NAMES_KEY = "state_names"
CONCEPT_STATES_KEY = "concept_states"
LABEL_KEYS = (STATE_NAMES_KEY, CONCEPT_STATES_KEY)
LABEL_COLUMNS = ("group", "x_states", "x_tilde_states")


@dataclass
class PairLabels:
    """What is known about each pair beyond its shift: the entity it belongs to (a word, a
    profession, a question; splits and bootstrap intervals keep entities whole) and the state of
    every labelled variable in each of its two texts (``language`` = ``en`` in x, ``fr`` in x~).

    ``concept_states`` says which variable each concept contrasts and between which values:
    ``{concept: [variable, value at shift -1 side, value at shift +1 side]}``; a pair with shift
    +1 on the concept moves its text from the first value to the second.

    Stored in pair and embedding tables as the columns ``group`` (string), ``x_states`` and
    ``x_tilde_states`` (list<string>, one entry per variable of ``state_names``), with
    ``state_names`` and ``concept_states`` as JSON in the schema metadata.
    """

    group: np.ndarray  # object (str) [N]
    x_states: np.ndarray  # object (str) [N, K]
    x_tilde_states: np.ndarray  # object (str) [N, K]
    state_names: list[str]
    concept_states: dict[str, list[str]] = field(default_factory=dict)

    def select(self, mask: np.ndarray) -> PairLabels:
        return PairLabels(
            self.group[mask],
            self.x_states[mask],
            self.x_tilde_states[mask],
            list(self.state_names),
            dict(self.concept_states),
        )

    def swapped(self, flip: np.ndarray) -> PairLabels:
        """The labels of the pairs read backwards where ``flip`` is true."""
        col = flip[:, None]
        return PairLabels(
            self.group.copy(),
            np.where(col, self.x_tilde_states, self.x_states),
            np.where(col, self.x_states, self.x_tilde_states),
            list(self.state_names),
            dict(self.concept_states),
        )

    def columns(self) -> dict[str, pa.Array]:
        strings = pa.list_(pa.string())
        return {
            "group": pa.array(self.group.astype(str), pa.string()),
            "x_states": pa.array([list(r) for r in self.x_states], strings),
            "x_tilde_states": pa.array([list(r) for r in self.x_tilde_states], strings),
        }

    def metadata(self) -> dict[str, str]:
        return {
            STATE_NAMES_KEY: json.dumps(self.state_names),
            CONCEPT_STATES_KEY: json.dumps(self.concept_states),
        }

    @classmethod
    def from_arrow(cls, table: pa.Table, path: object) -> PairLabels | None:
        """The labels of a pair or embedding table, or None when it has none."""
        present = [c for c in LABEL_COLUMNS if c in table.column_names]
        if not present:
            return None
        raw = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        if len(present) < len(LABEL_COLUMNS) or STATE_NAMES_KEY not in raw:
            raise InputError(
                f"{path}: has {', '.join(present)} but not all of {', '.join(LABEL_COLUMNS)} "
                f"and the {STATE_NAMES_KEY} metadata; write the labels with ssae_core.io"
            )
        try:
            names = json.loads(raw[STATE_NAMES_KEY])
            concept_states = json.loads(raw.get(CONCEPT_STATES_KEY, "{}"))
        except json.JSONDecodeError:
            raise InputError(f"{path}: {STATE_NAMES_KEY} metadata is not JSON; fix it") from None
        states = {}
        for name in ("x_states", "x_tilde_states"):
            rows = table.column(name).to_pylist()
            if any(r is None or len(r) != len(names) for r in rows):
                raise InputError(
                    f"{path}: every {name} row needs {len(names)} values ({', '.join(names)})"
                )
            states[name] = np.array(rows, dtype=object).reshape(len(rows), len(names))
        group = np.asarray(table.column("group").to_pylist(), dtype=object)
        return cls(group, states["x_states"], states["x_tilde_states"], names, concept_states)

    def variable(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The states of variable ``name`` in x and in x~ of every pair: two object arrays [N]."""
        k = self.state_names.index(name)
        return self.x_states[:, k], self.x_tilde_states[:, k]

    def values_of(self, name: str) -> list[str]:
        """The values of variable ``name``: first in the order ``concept_states`` names them
        (the -1 side of its first concept leads), then any other value its texts take, sorted."""
        if name not in self.state_names:
            raise InputError(f"variable {name!r}: not labelled (variables: {self.state_names})")
        named = [v for var, *ends in self.concept_states.values() if var == name for v in ends]
        x, x_tilde = self.variable(name)
        seen = {str(v) for v in np.concatenate([x, x_tilde])}
        ordered = list(dict.fromkeys(named))
        return ordered + sorted(seen - set(ordered))


@dataclass
class EmbeddingTable:
    """Paired embeddings ``z`` (before) and ``z_tilde`` (after), one row per pair."""

    pair_id: np.ndarray  # int64 [N]
    split: np.ndarray  # object (str) [N]
    z: np.ndarray  # float32 [N, d]
    z_tilde: np.ndarray  # float32 [N, d]
    shift: np.ndarray | None = None  # float32 [N, n], the true concept shift where known
    concepts: list[str] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    labels: PairLabels | None = None  # per-text states and the entity of each pair, where known

    @property
    def dim(self) -> int:
        return int(self.z.shape[1])

    @property
    def delta(self) -> np.ndarray:
        """The embedding shifts ``z_tilde - z`` [N, d]."""
        return self.z_tilde - self.z

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def select(self, mask: np.ndarray) -> EmbeddingTable:
        return EmbeddingTable(
            pair_id=self.pair_id[mask],
            split=self.split[mask],
            z=self.z[mask],
            z_tilde=self.z_tilde[mask],
            shift=None if self.shift is None else self.shift[mask],
            concepts=self.concepts,
            metadata=dict(self.metadata),
            labels=None if self.labels is None else self.labels.select(mask),
        )

    def subset(self, split: str) -> EmbeddingTable:
        """Rows of one split (``train``, ``test``...)."""
        return self.select(self.split == split)

    def reoriented(self, fraction: float, seed: int) -> EmbeddingTable:
        """A copy in which a seeded random ``fraction`` of the pairs is read backwards: ``z`` and
        ``z_tilde`` swapped and ``shift`` negated. Which pairs flip depends only on ``pair_id``
        and ``seed``, so a table, its splits and its entangled variant flip the same pairs."""
        if not 0 <= fraction <= 1:
            raise InputError(f"reverse fraction {fraction}: must be in [0, 1]")
        if len(self) and self.pair_id.min() < 0:
            raise InputError(
                f"{pair_ids(self.pair_id, self.pair_id < 0)}: reading pairs backwards needs "
                "pair ids >= 0; renumber the table"
            )
        flip = _flipped(self.pair_id, fraction, seed)
        col = flip[:, None]
        return EmbeddingTable(
            pair_id=self.pair_id.copy(),
            split=self.split.copy(),
            z=np.where(col, self.z_tilde, self.z),
            z_tilde=np.where(col, self.z, self.z_tilde),
            shift=None if self.shift is None else np.where(col, -self.shift, self.shift),
            concepts=self.concepts,
            metadata={
                **self.metadata,
                "reversed_fraction": str(fraction),
                "reverse_seed": str(seed),
            },
            labels=None if self.labels is None else self.labels.swapped(flip),
        )

    def reversed_rows(self) -> np.ndarray:
        """Which rows :meth:`reoriented` read backwards (``z`` is the pair table's ``x_tilde``),
        from the fraction and seed it records in the metadata; none where it records none."""
        if "reversed_fraction" not in self.metadata:
            return np.zeros(len(self), bool)
        fraction = float(self.metadata["reversed_fraction"])
        return _flipped(self.pair_id, fraction, int(self.metadata["reverse_seed"]))

    def to_arrow(self) -> pa.Table:
        d = self.dim
        columns = {
            "pair_id": pa.array(self.pair_id, type=pa.int64()),
            "split": pa.array(self.split.astype(str), type=pa.string()),
            "z": _fixed_list(self.z, d),
            "z_tilde": _fixed_list(self.z_tilde, d),
        }
        if self.shift is not None:
            columns["shift"] = pa.array(list(self.shift.astype(np.float32)), pa.list_(pa.float32()))
        metadata = dict(self.metadata)
        if self.labels is not None:
            columns.update(self.labels.columns())
            metadata.update(self.labels.metadata())
        table = pa.table(columns)
        return table.replace_schema_metadata(encode_metadata(self.concepts, metadata))


def _fixed_list(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1), pa.float32())
    return pa.FixedSizeListArray.from_arrays(flat, width)


def save_embeddings(table: EmbeddingTable, path: str | os.PathLike) -> None:
    """Write an embedding table to one Parquet file, atomically."""
    write_parquet(table.to_arrow(), path)


def load_embeddings(path: str | os.PathLike) -> EmbeddingTable:
    """Read and validate an embedding table (a Parquet file or a folder of shards) into memory.

    z and z_tilde are read in slices (:func:`read_slices`) into arrays of the table's size, so
    reading takes the table's own memory and one slice more, whatever its row groups; the other
    columns (pair ids, splits, shift, labels) are read whole. To use a table larger than memory,
    stream it (:class:`ssae_core.streaming.ShardSource`, ``ssae train --loading stream``)."""
    table_files = open_embeddings(path)
    rows = gather_rows(table_files.blocks, path)
    require_unique_ids(rows.pair_id, path)
    schema = table_files.schemas[0]
    extra = [c for c in ("shift", *LABEL_COLUMNS) if c in schema.names]
    for file, other in zip(table_files.files, table_files.schemas, strict=True):
        if any(c not in other.names for c in extra):
            first = table_files.files[0].name
            raise InputError(
                f"{path}: shards differ: {_difference(other, file.name, schema, first)}; "
                "re-create the folder"
            )
    table = read_table(path, columns=extra) if extra else None
    shift = (
        float_matrix(table.column("shift"), path, "shift")
        if table is not None and "shift" in table.column_names
        else None
    )
    concepts, metadata = decode_metadata(schema)
    return EmbeddingTable(
        pair_id=rows.pair_id,
        split=rows.split,
        z=rows.z,
        z_tilde=rows.z_tilde,
        shift=shift,
        concepts=concepts,
        metadata={k: v for k, v in metadata.items() if k not in LABEL_KEYS},
        labels=None if table is None else PairLabels.from_arrow(table, path),
    )


def width_error(path: object, file: Path, width: int, first: Path, first_width: int) -> InputError:
    """Rows of ``file`` (of the table at ``path``) whose width differs from the first rows'."""
    if file == first:
        return InputError(f"{file}: rows of column z have different lengths; fix the table")
    return InputError(
        f"{path}: shards differ: column z has width {width} in {file.name} but {first_width} in "
        f"{first.name}; re-create the folder"
    )


def gather_rows(blocks: Sequence[Block], path: object) -> EmbeddingRows:
    """The checked rows of every block, in order, in arrays allocated once for all of them."""
    total = sum(b.rows for b in blocks)
    pair_id, split = np.empty(total, np.int64), np.empty(total, object)
    z = z_tilde = None
    at = 0
    for block in blocks:
        for part in block_rows(block):
            n = len(part.pair_id)
            if not n:
                continue
            if z is None:
                z = np.empty((total, part.z.shape[1]), np.float32)
                z_tilde = np.empty_like(z)
                first = block.file
            elif part.z.shape[1] != z.shape[1]:
                raise width_error(path, block.file, part.z.shape[1], first, z.shape[1])
            if at + n > total:
                raise _rewritten(path, at + n, total)
            pair_id[at : at + n], split[at : at + n] = part.pair_id, part.split
            z[at : at + n], z_tilde[at : at + n] = part.z, part.z_tilde
            at += n
    if at != total:
        raise _rewritten(path, at, total)
    return EmbeddingRows(pair_id, split, z, z_tilde)


def _rewritten(path: object, read: int, total: int) -> InputError:
    return InputError(
        f"{path}: {read} rows read but the file footers say {total}; was it rewritten while "
        "being read? read it again once it is finished"
    )


class EmbeddingRows(NamedTuple):
    """The validated columns of embedding-table rows that training reads."""

    pair_id: np.ndarray  # int64 [N]
    split: np.ndarray  # object (str) [N]
    z: np.ndarray  # float32 [N, d]
    z_tilde: np.ndarray  # float32 [N, d]


def embedding_rows(table: pa.Table, path: object) -> EmbeddingRows:
    """``pair_id``, ``split``, ``z`` and ``z_tilde`` of an embedding table (or of one block of its
    rows), checked: integer ids and text splits without nulls, equal widths, finite values and a
    finite ``z_tilde - z``; each problem is an :class:`InputError` naming ``path`` and the pairs."""
    pair_id = _column_values(table, "pair_id", pa.types.is_integer, "integers", path)
    split = _column_values(table, "split", is_text, "strings (train, test, ...)", path)
    z = float_matrix(table.column("z"), path, "z")
    z_tilde = float_matrix(table.column("z_tilde"), path, "z_tilde")
    if z.shape[1] != z_tilde.shape[1]:
        raise InputError(
            f"{path}: z has width {z.shape[1]} but z_tilde has width {z_tilde.shape[1]}; "
            "both must come from the same model and layer"
        )
    with np.errstate(over="ignore", invalid="ignore"):
        overflow = ~np.isfinite(z_tilde - z).all(axis=1)  # also where z or z_tilde is not finite
    if overflow.any():
        for name, values in (("z", z), ("z_tilde", z_tilde)):
            bad = ~np.isfinite(values).all(axis=1)
            if bad.any():
                raise InputError(
                    f"{path}: column {name} has NaN or inf in {int(bad.sum())} row(s) "
                    f"({pair_ids(pair_id, bad)}); drop or re-extract them"
                )
        raise InputError(
            f"{path}: z_tilde - z overflows float32 in {int(overflow.sum())} row(s) "
            f"({pair_ids(pair_id, overflow)}); drop them or rescale the embeddings"
        )
    return EmbeddingRows(pair_id.astype(np.int64), split.astype(object), z, z_tilde)


def is_text(kind: pa.DataType) -> bool:
    """A string column type (of either offset width)."""
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _column_values(table: pa.Table, name: str, check, what: str, path: object) -> np.ndarray:
    """A scalar column as a numpy array: of the type ``check`` accepts, without nulls."""
    column = table.column(name)
    if not check(column.type):
        raise InputError(
            f"{path}: column {name} must hold {what}, not {column.type}; fix the table"
        )
    if column.null_count:
        raise InputError(f"{path}: column {name} has {column.null_count} null row(s); fill them")
    return np.asarray(column.to_numpy(zero_copy_only=False))


def flipped_ids(size: int, fraction: float, seed: int) -> np.ndarray:
    """Which pair ids 0..size-1 are read backwards: a seeded random ``fraction`` of them, one
    draw per id, so that a table, its splits and its shards flip the same pairs."""
    return np.random.default_rng(seed).random(size) < fraction


def _flipped(pair_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The rows :meth:`EmbeddingTable.reoriented` reads backwards (:func:`flipped_ids`)."""
    size = int(pair_id.max()) + 1 if len(pair_id) else 0
    return flipped_ids(size, fraction, seed)[pair_id]


def pair_ids(pair_id: np.ndarray, rows: np.ndarray, shown: int = 3) -> str:
    """The pair ids of the rows selected by a boolean mask, for an error message."""
    ids = [int(i) for i in pair_id[rows]]
    text = ", ".join(str(i) for i in ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return f"pair_id {text}{more}"


# --------------------------------------------------------------------------- pair tables


def pair_table(
    x: list[str],
    x_tilde: list[str],
    split: list[str],
    shift: np.ndarray | None,
    concepts: list[str] | None,
    metadata: Mapping[str, object] | None = None,
    pair_id: np.ndarray | None = None,
    labels: PairLabels | None = None,
) -> pa.Table:
    """Build a pair table in the project's format (with per-text ``labels`` where known).

    ``shift`` None (pairs whose concept shifts are unknown): the table has no ``shift`` column,
    and no concept names unless ``concepts`` are given.
    """
    n = len(x)
    ids = np.arange(n, dtype=np.int64) if pair_id is None else np.asarray(pair_id, np.int64)
    columns = {
        "pair_id": pa.array(ids, pa.int64()),
        "x": pa.array(x, pa.string()),
        "x_tilde": pa.array(x_tilde, pa.string()),
        "split": pa.array(split, pa.string()),
    }
    if shift is not None:
        shift = np.asarray(shift, dtype=np.float32).reshape(n, len(concepts or ()))
        columns["shift"] = pa.array(list(shift), pa.list_(pa.float32()))
    table = pa.table({**columns, **(labels.columns() if labels is not None else {})})
    extra = {**(metadata or {}), **(labels.metadata() if labels is not None else {})}
    return table.replace_schema_metadata(encode_metadata(concepts, extra))


def require_unique_ids(pair_id: np.ndarray, path: object) -> None:
    """Refuse a table in which a ``pair_id`` occurs more than once (each id names one pair)."""
    ids, counts = np.unique(np.asarray(pair_id), return_counts=True)
    repeated = ids[counts > 1]
    if len(repeated):
        shown = ", ".join(str(i) for i in repeated[:3])
        raise InputError(
            f"{path}: {len(repeated)} pair_id(s) occur more than once (e.g. {shown}); every "
            "pair needs its own id: renumber the pairs (ssae pairs does)"
        )


def load_pairs(path: str | os.PathLike) -> pa.Table:
    """Read and validate a pair table; returns the Arrow table (concepts in its metadata)."""
    table = read_table(path)
    _require_columns(table, PAIR_COLUMNS[:4], path, "a pair table")
    if table.num_rows == 0:
        raise InputError(f"{path}: pair table has no rows; re-run the step that wrote it")
    require_unique_ids(table.column("pair_id").to_numpy(), path)
    for name in ("x", "x_tilde"):
        texts = table.column(name).to_pylist()
        empty = [i for i, t in enumerate(texts) if t is None or not str(t).strip()]
        if empty:
            pid = table.column("pair_id")[empty[0]].as_py()
            raise InputError(
                f"{path}: column {name} has {len(empty)} empty text(s) (first pair_id {pid}); "
                "every pair needs two non-empty texts"
            )
    PairLabels.from_arrow(table, path)  # validates the labels where there are some
    return table


# --------------------------------------------------------------------------- CSV


def write_csv(rows: Sequence[Mapping[str, object]], path: str | os.PathLike) -> None:
    """Write ``rows`` (dicts with the same keys, in column order) as CSV with a header line,
    atomically."""
    if not rows:
        raise ValueError(f"{path}: no rows to write")
    with atomic_file(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
