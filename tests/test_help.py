"""The help texts of ``ssae`` and every subcommand: one word for an unset value, and examples that
point somewhere (every ``ssae ...`` line parses, and every path it reads is one the pipeline
writes or an earlier example of the same help writes)."""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import io
import re
import shlex
from pathlib import Path, PurePosixPath

import yaml

from ssae_core.cli import NOT_SET, build_parser
from ssae_core.lm.layers import parse_layers
from ssae_core.study.layout import StudyLayout

ROOT = Path(__file__).resolve().parent.parent


def help_texts() -> dict[str, str]:
    """``{"ssae": top-level help, "ssae train": ..., "ssae vector md": ...}``."""
    texts = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        texts[name] = parser.format_help()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    walk(sub, f"{name} {sub_name}")

    walk(build_parser(), "ssae")
    return texts


HELP = help_texts()


def test_every_help_text_names_an_unset_value_one_way():
    """params.yaml says null; the command line says none, in defaults and descriptions alike."""
    assert len(HELP) == 11  # ssae, its 8 commands, vector md and vector show
    said = {name: re.findall(r"\bnull\b", text) for name, text in HELP.items()}
    assert {name: found for name, found in said.items() if found} == {}
    assert "null: final normed state" not in HELP["ssae embed"]
    assert f"{NOT_SET}: final normed state" in " ".join(HELP["ssae embed"].split())


def test_an_unset_option_takes_none_on_the_command_line():
    args = build_parser().parse_args(
        ["embed", "p.parquet", "--out", "o", "--layer", NOT_SET, "--template", "None"]
    )
    assert args.layer is None and args.template is None
    args = build_parser().parse_args(["inspect", "r", "--pairs", "p", "--out", "o"])
    assert args.steered_latents is None
    args = build_parser().parse_args(
        ["inspect", "r", "--pairs", "p", "--out", "o", "--steered-latents", "none"]
    )
    assert args.steered_latents is None


# --------------------------------------------------------------------------- examples

OUTPUTS = ("out", "export", "export_gguf")
"""Options (dests) whose path an example writes: later examples of the same help may read it."""
NOT_PATHS = {"prompt", "template", "labels", "address", "concept", "x", "x_tilde", "split"}
YOUR_OWN = {("pairs", "path")}
"""Inputs that are the user's own file by definition (the help says so): `ssae pairs FILE`."""
PATH_LIKE = re.compile(r"/|\.(parquet|safetensors|gguf|csv|tsv|jsonl|json)$")


def example_lines(text: str) -> list[list[str]]:
    """The ``ssae ...`` example lines of a help text (indented by two spaces; a trailing
    backslash continues a line; ``# ...`` comments dropped), as argument lists."""
    lines, found, i = text.splitlines(), [], 0
    while i < len(lines):
        if lines[i].startswith("  ssae "):
            command = lines[i].strip()
            while command.endswith("\\"):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            found.append(shlex.split(command, comments=True))
        i += 1
    return found


def pipeline_paths() -> list[str]:
    """What `dvc repro` writes, as paths and glob patterns relative to the repository root, from
    the :class:`StudyLayout` methods and the sets, layers, seeds and rates of params.yaml."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    study, at = params["study"], StudyLayout(Path("."))
    layers, seeds = parse_layers(params["embed"]["layers"]), study["seeds"]
    paths = [at.lm, at.mc_table, at.report, at.metrics("*"), at.plot("*"), at.figure("*")]
    for name in params["synthetic"]["settings"]:
        for variant in (name, f"{name}_ent"):
            paths += [at.synthetic(variant), at.synthetic_models / variant / "*" / "m*"]
    for name in study["sets"]:
        paths += [at.pairs(name), at.extraction(name)]
        for layer in layers:
            models = at.study_models(name, layer)
            paths += [at.embeddings(name, layer), models, models / "budgets.json"]
            paths += [
                at.aff_run(name, layer),
                *(at.aff_run(name, layer) / f"seed-{s}" for s in seeds),
            ]
            for lr in study["grid"]["lr"]:
                grid = at.grid_run(name, layer, lr)
                paths += [grid, *(grid / f"eps-*_seed-{s}" for s in seeds)]
    for name in study["entangled_sets"]:
        for layer in layers:
            paths += [at.entangled(name, layer), at.entangled_models(name, layer) / "*"]
    for layer in layers:
        paths.append(at.overcomplete_models(study["overcomplete"]["set"], layer) / "m*" / "*")
    return [PurePosixPath(p).as_posix() for p in paths]


PIPELINE = pipeline_paths()


def parse_example(argv: list[str]) -> argparse.Namespace | str:
    """The parsed arguments of one example, or argparse's complaint."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser().parse_args(argv[1:])
    except SystemExit:
        return f"{shlex.join(argv)}: does not parse ({err.getvalue().strip()})"


def path_arguments(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(paths the example reads, paths it writes) among its parsed arguments."""
    command = " ".join(v for v in (args.command, getattr(args, "kind", None)) if v)
    reads, writes = [], []
    for dest, value in vars(args).items():
        if dest in OUTPUTS or (command == "synth" and dest == "out"):
            writes += [value] if value else []
        elif dest not in NOT_PATHS and (command, dest) not in YOUR_OWN:
            values = value if isinstance(value, list) else [value]
            reads += [v for v in values if isinstance(v, str) and PATH_LIKE.search(v)]
    return reads, writes


def made(path: str, written: list[str]) -> bool:
    """Whether the pipeline or an earlier example writes ``path`` (or a folder holding it)."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in PIPELINE):
        return True
    return any(path == w or path.startswith(w.rstrip("/") + "/") for w in written)


def example_problems(text: str) -> list[str]:
    """What is wrong with the examples of one help text: lines that do not parse, and paths read
    that neither the pipeline nor an earlier example of the same text writes."""
    problems, written = [], []
    for argv in example_lines(text):
        args = parse_example(argv)
        if isinstance(args, str):
            problems.append(args)
            continue
        reads, writes = path_arguments(args)
        problems += [
            f"{shlex.join(argv)}: nothing writes {p}" for p in reads if not made(p, written)
        ]
        written += writes
    return problems


def test_every_command_has_examples_in_the_top_level_help_and_its_own():
    top = {argv[1] for argv in example_lines(HELP["ssae"])}
    commands = {name.split()[1] for name in HELP if name.count(" ") == 1}
    assert len(commands) == 8 and top == commands
    for name, text in HELP.items():
        if name not in ("ssae", "ssae vector"):
            assert "examples" in text and example_lines(text), f"{name} --help: no examples"


def test_every_example_parses_and_reads_what_the_pipeline_or_an_earlier_example_writes():
    assert sum(len(example_lines(text)) for text in HELP.values()) >= 40
    problems = {name: example_problems(text) for name, text in HELP.items()}
    assert {name: found for name, found in problems.items() if found} == {}


def test_a_stale_example_is_caught():
    """The check fails on the kinds of staleness it guards against."""
    stale = (
        "examples:\n"
        "  ssae steer models/study/layer-15/lang/ssae/seed-0 --latent 0 --prompt hi\n"
        "  ssae inspect runs/demo --pairs data/embeddings/lang/layer-15 --out inspect/x\n"
        "  ssae train data/embeddings/lang --out runs/demo --no-such-option\n"
        "  ssae train data/embeddings/lang/layer-7 --out runs/demo \\\n"
        "      --seeds 0\n"
        "  ssae encode runs/demo/seed-0 data/pairs/nosuchset.parquet --out codes.parquet\n"
    )
    problems = example_problems(stale)
    assert len(problems) == 5, problems
    assert "nothing writes models/study/layer-15/lang/ssae/seed-0" in problems[0]
    assert "nothing writes runs/demo" in problems[1]
    assert "does not parse" in problems[2] and "--no-such-option" in problems[2]
    assert "nothing writes data/embeddings/lang/layer-7" in problems[3]
    assert "nothing writes data/pairs/nosuchset.parquet" in problems[4]  # runs/demo was written
    fine = (
        "examples:\n  ssae steer models/study/layer-final/cat/aff/seed-4 --latent 2 --prompt hi\n"
    )
    assert example_problems(fine) == []
