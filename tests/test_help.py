"""The help texts of ``ssae`` and every subcommand: one word for an unset value, and examples that
point somewhere (every ``ssae ...`` line parses, and every path it reads is one the pipeline
writes or an earlier example of the same help writes)."""

from __future__ import annotations

import argparse
import re

from ssae_core.cli import NOT_SET, build_parser


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
