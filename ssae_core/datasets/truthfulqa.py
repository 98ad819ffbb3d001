"""TruthfulQA multiple-choice data: fetch (pinned and checksummed) or read locally, build pairs.

Sources, in order (:func:`resolve_source`); the first that exists is read:

1. ``TruthfulQAConfig.source`` (``truthfulqa.source`` in params.yaml), when it is set and exists.
   A tracked parameter comes before the environment, so DVC's record of the params says what was
   used wherever the copy is present (the pair table's metadata ``source_named_by`` records which
   source was read).
2. The environment variable ``SSAE_TRUTHFULQA``, when it names a file or folder that exists: the
   usual way to run offline or in CI on a machine whose copy sits elsewhere.
3. Otherwise the Hugging Face dataset ``truthfulqa/truthful_qa`` (config ``multiple_choice``, split
   ``validation``) is downloaded with :mod:`urllib` at a pinned revision, its sha256 verified, and
   kept in the user cache (``ssae_core.cache.cache_root()/truthfulqa``: ``$SSAE_CACHE``, else
   ``$XDG_CACHE_HOME/ssae``, else ``~/.cache/ssae``). If that fails too, the one-line error says
   what each of the three was.

A local source may be the original ``mc_task.json``, the ``TruthfulQA.csv`` (UTF-8 with BOM), the
hub's Parquet file, or a folder holding one of them. In a folder, ``v0/mc_task.json`` is preferred
over ``mc_task.json``: v0 is the release the Hugging Face dataset was built from, so an offline run
on the shared copy sees exactly the questions and answers of an online run at the pinned revision
(the v1 ``mc_task.json`` has a few more reference answers: 3,369 mc1 pairs instead of 3,297). Point
at ``mc_task.json`` itself to use v1. Local data is read in place, never copied into the project.

Pairs (one concept, ``truthfulness``, shift ``[+1]``): ``x`` is the question with an incorrect
answer, ``x_tilde`` the same question with a correct answer, both rendered with ``template``
(default ``"Q: {question}\\nA: {answer}"``, the QA format of the TruthfulQA paper). ``answers``:

- ``mc1`` (default): the single correct mc1 answer (the "best answer") paired with every incorrect
  mc1 answer. 3,297 pairs at the pinned revision.
- ``mc2``: every correct mc2 answer paired with every incorrect mc2 answer. 10,869 pairs.

``max_pairs_per_question`` (optional) keeps a seeded random subset of each question's pairs.
Questions, not pairs, are split into train/test (seeded), so no test question is seen in training.

Alongside the pair table, :func:`mc_table` keeps the normalised multiple-choice data (question,
choices, labels) for the behavioural evaluation. Upstream lists the correct mc1 answer first, so the
choices there are shuffled per question (seeded); ``*_order`` gives each choice's original index.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssae_core.cache import cache_root
from ssae_core.errors import InputError
from ssae_core.io import PairLabels, atomic_file, encode_metadata, pair_table, read_table

REPO_ID = "truthfulqa/truthful_qa"
HF_FILE = "multiple_choice/validation-00000-of-00001.parquet"
DEFAULT_ENDPOINT = "https://huggingface.co"
ENV_VAR = "SSAE_TRUTHFULQA"
CONCEPTS = ["truthfulness"]
DEFAULT_TEMPLATE = "Q: {question}\nA: {answer}"

# The pin. Neither value could be checked against the hub from the machine this was written on (no
# access to huggingface.co). Both were taken from public code that pins this same file: the revision
# 741b8276f2d1982aa3d5b832d3ee81ed3b896490 appears in many independent projects, and the sha256
# (with size 271,033 bytes) in two of them. If the hub disagrees, download() stops with an error
# that says how to update the pin (truthfulqa.revision / truthfulqa.sha256) or use a local copy.
PINNED_REVISION = "741b8276f2d1982aa3d5b832d3ee81ed3b896490"
PINNED_SHA256 = "23f08e230ca4ed66babf3a72419af7cbde1f3d734dd396ac4cf6d088bd162afd"
PINNED_SIZE = 271_033
MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024

ANSWER_SETS = ("mc1", "mc2")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 16

Opener = Callable[..., IO[bytes]]


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TruthfulQAConfig:
    """The ``truthfulqa`` section of params.yaml."""

    source: str | None = None  # local file or folder, read if it exists; else $SSAE_TRUTHFULQA...
    revision: str = PINNED_REVISION
    sha256: str = PINNED_SHA256
    endpoint: str = DEFAULT_ENDPOINT  # a hub mirror may be named here
    timeout: float = 60.0  # seconds, per network operation
    answers: str = "mc1"  # mc1 | mc2 (see the module docstring)
    max_pairs_per_question: int | None = None  # null: keep every pair
    template: str = DEFAULT_TEMPLATE
    seed: int = 0
    test_fraction: float = 0.2

    def __post_init__(self) -> None:
        if self.answers not in ANSWER_SETS:
            raise InputError(
                f"answers: expected one of {', '.join(ANSWER_SETS)}, got {self.answers!r}"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise InputError(
                f"test_fraction: must be between 0 and 1 (exclusive), got {self.test_fraction}"
            )
        if self.max_pairs_per_question is not None and self.max_pairs_per_question < 1:
            raise InputError(
                f"max_pairs_per_question: must be null or >= 1, got {self.max_pairs_per_question}"
            )
        if not _SHA256_RE.match(self.sha256):
            raise InputError(f"sha256: expected 64 lower-case hex digits, got {self.sha256!r}")
        if not self.revision.strip() or "/" in self.revision:
            raise InputError(
                f"revision: expected a commit hash of {REPO_ID}, got {self.revision!r}"
            )
        if self.timeout <= 0:
            raise InputError(f"timeout: must be > 0 seconds, got {self.timeout}")
        try:
            self.template.format(question="q", answer="a")
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(
                f"template: only {{question}} and {{answer}} may appear in braces ({exc!r})"
            ) from None
        if "{question}" not in self.template or "{answer}" not in self.template:
            raise InputError(
                f"template: must contain {{question}} and {{answer}}, got {self.template!r}"
            )


# --------------------------------------------------------------------------- normalised MC data


@dataclass
class MCQuestion:
    """One question with its mc1 (one correct) and mc2 (one or more correct) answer lists."""

    question: str
    mc1_choices: list[str]
    mc1_labels: list[int]
    mc2_choices: list[str]
    mc2_labels: list[int]

    def correct(self, answers: str = "mc1") -> list[str]:
        choices, labels = self._targets(answers)
        return [c for c, lab in zip(choices, labels, strict=True) if lab == 1]

    def incorrect(self, answers: str = "mc1") -> list[str]:
        choices, labels = self._targets(answers)
        return [c for c, lab in zip(choices, labels, strict=True) if lab == 0]

    def _targets(self, answers: str) -> tuple[list[str], list[int]]:
        if answers == "mc1":
            return self.mc1_choices, self.mc1_labels
        if answers == "mc2":
            return self.mc2_choices, self.mc2_labels
        raise InputError(f"answers: expected one of {', '.join(ANSWER_SETS)}, got {answers!r}")


@dataclass
class LoadedMC:
    """Parsed questions plus where they came from (recorded in the outputs' metadata)."""

    questions: list[MCQuestion]
    provenance: dict[str, str] = field(default_factory=dict)


def _clean(text: object) -> str:
    return "" if text is None else str(text).strip()


def _dedup(choices: list[str], labels: list[int]) -> tuple[list[str], list[int]]:
    """Drop repeated choices (first occurrence wins, as a JSON object's keys would)."""
    seen: dict[str, int] = {}
    for c, lab in zip(choices, labels, strict=True):
        if c and c not in seen:
            seen[c] = lab
    return list(seen), list(seen.values())


def _check(questions: list[MCQuestion], path: object) -> list[MCQuestion]:
    if not questions:
        raise InputError(f"{path}: holds no TruthfulQA questions; check the file")
    seen: set[str] = set()
    for i, q in enumerate(questions):
        where = f"{path}: question {i} ({q.question[:40]!r})"
        if not q.question:
            raise InputError(f"{path}: question {i} has empty text; fix or re-download the file")
        if q.question in seen:
            raise InputError(f"{where} appears twice; questions must be unique")
        seen.add(q.question)
        if sum(q.mc1_labels) != 1 or len(q.mc1_labels) < 2:
            raise InputError(
                f"{where}: mc1 needs exactly one correct and at least one incorrect answer"
            )
        if not q.correct("mc2") or not q.incorrect("mc2"):
            raise InputError(f"{where}: mc2 needs at least one correct and one incorrect answer")
    return questions


def _targets_from_json(value: object, path: object, i: int, name: str) -> tuple[list, list]:
    """``{answer: 0/1}`` (mc_task.json) or ``{"choices": [...], "labels": [...]}`` (hub form)."""
    if isinstance(value, Mapping) and set(value) == {"choices", "labels"}:
        choices, labels = list(value["choices"]), list(value["labels"])
    elif isinstance(value, Mapping):
        choices, labels = list(value), list(value.values())
    else:
        raise InputError(f"{path}: question {i}: {name} must be an object of answer: 0/1")
    if len(choices) != len(labels) or any(lab not in (0, 1) for lab in labels):
        raise InputError(f"{path}: question {i}: {name} labels must be 0 or 1, one per answer")
    return _dedup([_clean(c) for c in choices], [int(lab) for lab in labels])


def _question_from_record(record: object, path: object, i: int) -> MCQuestion:
    if not isinstance(record, Mapping):
        raise InputError(f"{path}: entry {i} is not an object; expected mc_task.json's format")
    missing = [k for k in ("question", "mc1_targets", "mc2_targets") if k not in record]
    if missing:
        raise InputError(
            f"{path}: entry {i} lacks {', '.join(missing)}; expected question, mc1_targets, "
            "mc2_targets (mc_task.json or the hub's multiple_choice data)"
        )
    mc1 = _targets_from_json(record["mc1_targets"], path, i, "mc1_targets")
    mc2 = _targets_from_json(record["mc2_targets"], path, i, "mc2_targets")
    return MCQuestion(_clean(record["question"]), mc1[0], mc1[1], mc2[0], mc2[1])


def parse_mc_records(records: object, path: object = "<records>") -> list[MCQuestion]:
    """Questions from mc_task.json's list of ``{question, mc1_targets, mc2_targets}`` objects."""
    if not isinstance(records, list):
        raise InputError(f"{path}: expected a JSON list of questions (mc_task.json)")
    return _check([_question_from_record(r, path, i) for i, r in enumerate(records)], path)


def read_mc_json(path: str | os.PathLike) -> list[MCQuestion]:
    """Read the original ``mc_task.json``."""
    try:
        records = json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})"
        ) from None
    return parse_mc_records(records, path)


def read_hf_parquet(path: str | os.PathLike) -> list[MCQuestion]:
    """Read the hub's Parquet file (question, mc1_targets/mc2_targets as {choices, labels})."""
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a readable Parquet file ({first})") from None
    need = ("question", "mc1_targets", "mc2_targets")
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: not TruthfulQA multiple_choice data: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(table.column_names)})"
        )
    return parse_mc_records(table.select(list(need)).to_pylist(), path)


def _csv_answer(text: str) -> str:
    # mc_task.json writes every answer with final punctuation; the CSV often omits the period.
    text = _clean(text)
    return text if not text or text[-1] in ".?!" else text + "."


def _csv_answers(cell: str | None) -> list[str]:
    return [a for a in (_csv_answer(p) for p in (cell or "").split(";")) if a]


def read_csv(path: str | os.PathLike) -> list[MCQuestion]:
    """Read ``TruthfulQA.csv`` and rebuild the multiple-choice targets from its columns.

    mc1 = [Best Answer] + Incorrect Answers; mc2 = Correct Answers + Incorrect Answers (repeats
    dropped). Answers get a final period when they lack one, as in mc_task.json. On the shared
    copies this reproduces mc_task.json's mc1 lists for all 817 questions and its mc2 lists for 815
    (upstream labels the answer "Unknown." incorrect in two mc2 lists although the CSV lists it as
    correct; the CSV's label is kept here).
    """
    try:
        # utf-8-sig strips the byte-order mark the upstream CSV starts with.
        with open(path, encoding="utf-8-sig", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file ({type(exc).__name__}: {exc})") from None
    need = ("Question", "Best Answer", "Correct Answers", "Incorrect Answers")
    header = list(rows[0]) if rows else []
    missing = [c for c in need if c not in header]
    if missing:
        raise InputError(
            f"{path}: not TruthfulQA.csv: missing column(s) {', '.join(missing)} "
            f"(has {', '.join(h for h in header if h) or 'none'})"
        )
    questions = []
    for row in rows:
        best = _csv_answer(row["Best Answer"])
        correct = _csv_answers(row["Correct Answers"])
        incorrect = [a for a in _csv_answers(row["Incorrect Answers"]) if a != best]
        mc1 = _dedup([best, *incorrect], [1] + [0] * len(incorrect))
        if best not in correct:
            correct = [best, *correct]
        mc2 = _dedup(correct + incorrect, [1] * len(correct) + [0] * len(incorrect))
        # The CSV has one question with a trailing space that the JSON lacks: _clean strips it.
        questions.append(MCQuestion(_clean(row["Question"]), mc1[0], mc1[1], mc2[0], mc2[1]))
    return _check(questions, path)


# --------------------------------------------------------------------------- locating a source

# Searched in this order when a source names a folder (see the module docstring for why v0 first).
FOLDER_CANDIDATES = (
    "v0/mc_task.json",
    "mc_task.json",
    HF_FILE,
    "validation-00000-of-00001.parquet",
    "TruthfulQA.csv",
    "v0/TruthfulQA.csv",
)


def _detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".json", ".csv", ".parquet"):
        return suffix[1:]
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == b"PAR1":
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return "json" if stripped[:1] in (b"[", b"{") else "csv"


def find_in_folder(folder: str | os.PathLike) -> Path:
    """The file a folder source stands for (first of :data:`FOLDER_CANDIDATES` present)."""
    folder = Path(folder)
    for name in FOLDER_CANDIDATES:
        if (folder / name).is_file():
            return folder / name
    raise InputError(
        f"{folder}: holds no TruthfulQA file (looked for {', '.join(FOLDER_CANDIDATES)}); "
        "point at mc_task.json, TruthfulQA.csv or the hub's Parquet file"
    )


def read_local(path: str | os.PathLike) -> tuple[list[MCQuestion], Path, str]:
    """Parse a local copy (file or folder); returns the questions, the file read and its format."""
    p = Path(path).expanduser().resolve()
    if p.is_dir():
        p = find_in_folder(p)
    if not p.is_file():
        raise InputError(
            f"{p}: no such TruthfulQA file or folder; fix truthfulqa.source or ${ENV_VAR}"
        )
    fmt = _detect_format(p)
    reader = {"json": read_mc_json, "csv": read_csv, "parquet": read_hf_parquet}[fmt]
    return reader(p), p, fmt


def source_candidates(
    config: TruthfulQAConfig,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> list[tuple[str, Path | None]]:
    """The local copies to try, in order: ``truthfulqa.source`` (relative paths taken from
    ``base_dir``, by default the working directory), then ``$SSAE_TRUTHFULQA``; None where unset."""
    env = os.environ if env is None else env
    configured = None
    if config.source:
        configured = Path(config.source).expanduser()
        if not configured.is_absolute() and base_dir is not None:
            configured = Path(base_dir) / configured
    value = env.get(ENV_VAR, "").strip()
    return [
        ("truthfulqa.source", configured),
        (ENV_VAR, Path(value).expanduser() if value else None),
    ]


def resolve_source(
    config: TruthfulQAConfig,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
) -> tuple[Path | None, str]:
    """The local source to read and what named it: the first of :func:`source_candidates` that
    exists, else ``(None, "download")``."""
    for named_by, path in source_candidates(config, env, base_dir):
        if path is not None and path.exists():
            return path, named_by
    return None, "download"


def _tried(config: TruthfulQAConfig, env: Mapping[str, str] | None, base_dir: object) -> str:
    """What each local source was, for the error when the download fails as well."""
    states = []
    for named_by, path in source_candidates(config, env, base_dir):  # type: ignore[arg-type]
        label = f"${named_by}" if named_by == ENV_VAR else named_by
        states.append(f"{label} {'not set' if path is None else f'{path} not found'}")
    return ", then ".join(states)


# --------------------------------------------------------------------------- downloading


def hub_url(revision: str = PINNED_REVISION, endpoint: str = DEFAULT_ENDPOINT) -> str:
    """The hub's resolve URL of the multiple_choice Parquet file at ``revision``."""
    return f"{endpoint.rstrip('/')}/datasets/{REPO_ID}/resolve/{revision}/{HF_FILE}"


def default_cache_dir() -> Path:
    """Where the download is kept: ``truthfulqa`` in the user cache (:func:`cache_root`)."""
    return cache_root() / "truthfulqa"


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


_OFFLINE_HINT = (
    f"to work offline point at a local copy: {ENV_VAR}=/path/to/truthfulqa "
    "(mc_task.json, TruthfulQA.csv, the hub's Parquet file or their folder) "
    "or truthfulqa.source in params.yaml"
)


def download(
    dest: str | os.PathLike,
    *,
    revision: str = PINNED_REVISION,
    sha256: str = PINNED_SHA256,
    endpoint: str = DEFAULT_ENDPOINT,
    timeout: float = 60.0,
    opener: Opener | None = None,
) -> Path:
    """Fetch the multiple_choice Parquet file to ``dest``, verify its sha256, write atomically.

    ``dest`` is only replaced once the checksum matches; on any failure nothing is left behind.
    ``opener(request, timeout=...)`` defaults to :func:`urllib.request.urlopen` (tests pass a fake).
    """
    url = hub_url(revision, endpoint)
    opener = urllib.request.urlopen if opener is None else opener
    request = urllib.request.Request(url, headers={"User-Agent": "ssae-truthfulqa/1"})
    digest = hashlib.sha256()
    size = 0
    with atomic_file(dest) as tmp:
        try:
            with opener(request, timeout=timeout) as response, open(tmp, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise InputError(
                            f"{url}: response exceeds {MAX_DOWNLOAD_BYTES} bytes, which is not the "
                            f"TruthfulQA file; check truthfulqa.endpoint or {_OFFLINE_HINT}"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise InputError(
                f"{url}: HTTP {exc.code} {exc.reason}; check truthfulqa.revision "
                f"(pinned {PINNED_REVISION[:12]}) and truthfulqa.endpoint, or {_OFFLINE_HINT}"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise InputError(
                f"cannot download TruthfulQA from {url} ({type(exc).__name__}: {reason}); "
                f"no network? {_OFFLINE_HINT}"
            ) from None
        got = digest.hexdigest()
        if got != sha256:
            raise InputError(
                f"{url}: sha256 {got} ({size} bytes) does not match truthfulqa.sha256 {sha256}; "
                "if the hub file changed on purpose, set truthfulqa.revision and truthfulqa.sha256 "
                f"to the new pair, else {_OFFLINE_HINT}"
            )
    return Path(dest)


def fetch(
    config: TruthfulQAConfig,
    cache_dir: str | os.PathLike | None = None,
    opener: Opener | None = None,
) -> Path:
    """The pinned hub file, from the cache when its checksum still matches, else downloaded."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = cache / f"{config.revision}-{HF_FILE.replace('/', '-')}"
    if dest.is_file() and sha256_file(dest) == config.sha256:
        return dest
    return download(
        dest,
        revision=config.revision,
        sha256=config.sha256,
        endpoint=config.endpoint,
        timeout=config.timeout,
        opener=opener,
    )


def load(
    config: TruthfulQAConfig,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    opener: Opener | None = None,
) -> LoadedMC:
    """Questions from the configured source (local copy, else the pinned download)."""
    path, named_by = resolve_source(config, env, base_dir)
    if path is not None:
        questions, file, fmt = read_local(path)
        provenance = {
            "source": str(file),
            "source_named_by": named_by,
            "source_format": fmt,
            "source_sha256": sha256_file(file),
        }
        return LoadedMC(questions, provenance)
    try:
        file = fetch(config, cache_dir, opener)
    except InputError as exc:
        raise InputError(
            f"TruthfulQA: no source could be read: {_tried(config, env, base_dir)}, then the "
            f"pinned download failed: {exc}"
        ) from None
    provenance = {
        "source": hub_url(config.revision, config.endpoint),
        "source_named_by": named_by,
        "source_format": "parquet",
        "source_sha256": config.sha256,
        "hub_repo": REPO_ID,
        "hub_revision": config.revision,
    }
    return LoadedMC(read_hf_parquet(file), provenance)


# --------------------------------------------------------------------------- splits and tables


def split_questions(questions: Sequence[str], test_fraction: float, seed: int) -> list[str]:
    """``train``/``test`` per question text; exactly round(f * n) questions go to test.

    The texts are sorted before a seeded permutation picks the test questions, so the split
    depends only on the set of questions and the seed, not on the file's order: mc_task.json, the
    CSV (a different order) and the hub's Parquet file of one release give the same split. At least
    one question lands in each split.
    """
    n = len(questions)
    if n < 2:
        raise InputError(f"truthfulqa: need at least 2 questions to split, got {n}")
    n_test = min(max(round(test_fraction * n), 1), n - 1)
    canonical = sorted(range(n), key=lambda i: questions[i])
    chosen = np.random.default_rng(seed).permutation(n)[:n_test]
    split = ["train"] * n
    for k in chosen:
        split[canonical[k]] = "test"
    return split


def render(template: str, question: str, answer: str) -> str:
    return template.format(question=question, answer=answer)


def build_pairs(
    questions: Sequence[MCQuestion],
    split: Sequence[str],
    *,
    answers: str = "mc1",
    template: str = DEFAULT_TEMPLATE,
    max_pairs_per_question: int | None = None,
    seed: int = 0,
    metadata: Mapping[str, object] | None = None,
) -> pa.Table:
    """The pair table: (question + incorrect, question + correct), shift [+1] on truthfulness.

    Rows are ordered by question, then correct answer, then incorrect answer (source order);
    ``question_id`` (index in the source) is an extra int64 column that joins with the MC table.
    """
    if answers not in ANSWER_SETS:
        raise InputError(f"answers: expected one of {', '.join(ANSWER_SETS)}, got {answers!r}")
    xs: list[str] = []
    x_tildes: list[str] = []
    splits: list[str] = []
    qids: list[int] = []
    for qid, (q, s) in enumerate(zip(questions, split, strict=True)):
        combos = [(c, w) for c in q.correct(answers) for w in q.incorrect(answers)]
        if max_pairs_per_question is not None and len(combos) > max_pairs_per_question:
            rng = np.random.default_rng([seed, qid])
            keep = np.sort(rng.choice(len(combos), max_pairs_per_question, replace=False))
            combos = [combos[i] for i in keep]
        for correct, wrong in combos:
            xs.append(render(template, q.question, wrong))
            x_tildes.append(render(template, q.question, correct))
            splits.append(s)
            qids.append(qid)
    meta = {
        "dataset": "truthfulqa",
        "answers": answers,
        "template": template,
        "max_pairs_per_question": max_pairs_per_question,
        "seed": seed,
        **(metadata or {}),
    }
    shift = np.ones((len(xs), 1), dtype=np.float32)
    labels = PairLabels(
        group=np.array([str(q) for q in qids], dtype=object),
        x_states=np.full((len(xs), 1), "false", dtype=object),
        x_tilde_states=np.full((len(xs), 1), "true", dtype=object),
        state_names=["truthfulness"],
        concept_states={"truthfulness": ["truthfulness", "false", "true"]},
    )
    table = pair_table(xs, x_tildes, splits, shift, CONCEPTS, meta, labels=labels)
    return table.append_column("question_id", pa.array(qids, pa.int64()))


def mc_table(
    questions: Sequence[MCQuestion],
    split: Sequence[str],
    *,
    seed: int = 0,
    metadata: Mapping[str, object] | None = None,
) -> pa.Table:
    """Normalised MC data, one row per question, choices shuffled per question (seeded).

    Columns: ``question_id`` int64, ``question``, ``split``, ``mc1_choices``/``mc2_choices``
    list<string>, ``mc1_labels``/``mc2_labels`` list<int8> (1 = correct), and
    ``mc1_order``/``mc2_order`` list<int32>: the original position of each listed choice.
    """
    cols: dict[str, list] = {
        k: []
        for k in (
            "mc1_choices",
            "mc1_labels",
            "mc1_order",
            "mc2_choices",
            "mc2_labels",
            "mc2_order",
        )
    }
    for qid, q in enumerate(questions):
        rng = np.random.default_rng([seed, qid])
        for name, choices, labels in (
            ("mc1", q.mc1_choices, q.mc1_labels),
            ("mc2", q.mc2_choices, q.mc2_labels),
        ):
            order = [int(i) for i in rng.permutation(len(choices))]
            cols[f"{name}_choices"].append([choices[i] for i in order])
            cols[f"{name}_labels"].append([labels[i] for i in order])
            cols[f"{name}_order"].append(order)
    table = pa.table(
        {
            "question_id": pa.array(range(len(questions)), pa.int64()),
            "question": pa.array([q.question for q in questions], pa.string()),
            "split": pa.array(list(split), pa.string()),
            **{
                f"{n}_choices": pa.array(cols[f"{n}_choices"], pa.list_(pa.string()))
                for n in ("mc1", "mc2")
            },
            **{
                f"{n}_labels": pa.array(cols[f"{n}_labels"], pa.list_(pa.int8()))
                for n in ("mc1", "mc2")
            },
            **{
                f"{n}_order": pa.array(cols[f"{n}_order"], pa.list_(pa.int32()))
                for n in ("mc1", "mc2")
            },
        }
    )
    meta = {"dataset": "truthfulqa", "seed": seed, **(metadata or {})}
    return table.replace_schema_metadata(encode_metadata(CONCEPTS, meta))


class MC1Question(NamedTuple):
    """One question's MC1 choices as the MC table stores them (shuffled), for scoring."""

    question_id: int
    question: str
    choices: list[str]
    correct: int
    """Index of the one correct choice."""


@dataclass(frozen=True)
class StoredQuestion:
    """One row of the MC table written by :func:`mc_table`: choices as stored (shuffled)."""

    question_id: int
    question: str
    split: str
    choices: dict[str, list[str]]
    """Per answer set (``mc1``, ``mc2``): the choices in stored order."""
    labels: dict[str, list[int]]
    """Per answer set: 1 for a correct choice, 0 otherwise."""
    order: dict[str, list[int]]
    """Per answer set: each stored choice's position in the source."""

    def source(self) -> MCQuestion:
        """The question with its choices back in source order."""
        lists = []
        for name in ANSWER_SETS:
            choices = [""] * len(self.order[name])
            labels = [0] * len(self.order[name])
            for c, lab, i in zip(
                self.choices[name], self.labels[name], self.order[name], strict=True
            ):
                choices[i], labels[i] = c, lab
            lists += [choices, labels]
        return MCQuestion(self.question, *lists)

    def mc1(self) -> MC1Question:
        return MC1Question(
            self.question_id, self.question, self.choices["mc1"], self.labels["mc1"].index(1)
        )


def read_mc_table(path: str | os.PathLike, *, split: str | None = None) -> list[StoredQuestion]:
    """The rows of :func:`mc_table`'s Parquet output (those of ``split`` if given), validated."""
    table = read_table(path)
    columns = ["question_id", "question", "split"] + [
        f"{n}_{part}" for n in ANSWER_SETS for part in ("choices", "labels", "order")
    ]
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise InputError(
            f"{path}: lacks column(s) {', '.join(missing)}; re-run the download_truthfulqa stage"
        )
    out = []
    for row in table.select(columns).to_pylist():
        if split is not None and row["split"] != split:
            continue
        labels = {n: [int(v) for v in row[f"{n}_labels"]] for n in ANSWER_SETS}
        choices = {n: list(row[f"{n}_choices"]) for n in ANSWER_SETS}
        mc1 = labels["mc1"]
        if len(choices["mc1"]) < 2 or len(mc1) != len(choices["mc1"]) or sorted(mc1)[-2:] != [0, 1]:
            raise InputError(
                f"{path}: question_id {row['question_id']} needs >= 2 mc1_choices and exactly one "
                "mc1_label 1; re-run the download_truthfulqa stage"
            )
        out.append(
            StoredQuestion(
                question_id=int(row["question_id"]),
                question=row["question"],
                split=row["split"],
                choices=choices,
                labels=labels,
                order={n: [int(v) for v in row[f"{n}_order"]] for n in ANSWER_SETS},
            )
        )
    if split is not None and not out:
        raise InputError(f"{path}: no questions with split '{split}'; check the MC table")
    return out


def build(
    config: TruthfulQAConfig,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    opener: Opener | None = None,
) -> tuple[pa.Table, pa.Table]:
    """Load the configured source and return (pair table, MC table); writes nothing."""
    loaded = load(config, env=env, base_dir=base_dir, cache_dir=cache_dir, opener=opener)
    texts = [q.question for q in loaded.questions]
    split = split_questions(texts, config.test_fraction, config.seed)
    meta = {**loaded.provenance, "test_fraction": config.test_fraction}
    pairs = build_pairs(
        loaded.questions,
        split,
        answers=config.answers,
        template=config.template,
        max_pairs_per_question=config.max_pairs_per_question,
        seed=config.seed,
        metadata=meta,
    )
    return pairs, mc_table(loaded.questions, split, seed=config.seed, metadata=meta)
