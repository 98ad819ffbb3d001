"""The ``ssae`` command-line tool: pairs, embed, train, encode, steer, vector, inspect, synth.

Every subcommand reports bad input as one line ``error: ...`` and exits with status 2, leaving no
partial output behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ssae_core import __version__
from ssae_core.config import field_docs
from ssae_core.errors import InputError, OneLineParser

EXAMPLES = """\
examples (after `dvc repro`, from the repository root; a line may use what the lines before it
write, e.g. runs/lang; replies.csv stands for your own file of text pairs):
  ssae pairs replies.csv --x post --x-tilde reply --group thread --out pairs/replies.parquet
  ssae embed data/pairs/lang.parquet --out emb/lang --layers 15,final   # the embedded SmolLM2
  ssae synth synth.parquet --concepts 5 --max-changes 3
  ssae train emb/lang/layer-15 --out runs/lang --seeds 0,1,2
  ssae train synth.parquet --out runs/synth --latent-dim 5 --seeds 0,1,2
  ssae encode runs/lang/seed-0 emb/lang/layer-15 --out codes.parquet
  ssae vector md data/embeddings/lang/layer-15 --out lang-md.safetensors
  ssae vector show lang-md.safetensors
  ssae steer lang-md.safetensors --lm models/lm --prompt "My favourite food is"
  ssae steer models/study/layer-15/lang/aff/seed-0 --latent 0 --prompt "My favourite food is"
  ssae inspect models/study/layer-15/lang/aff --pairs data/embeddings/lang/layer-15 \\
      --texts data/pairs/lang.parquet --out inspect/lang
  ssae inspect runs/synth --pairs synth.parquet --out inspect/synth

The pipeline's files: pair tables data/pairs/SET.parquet, embeddings data/embeddings/SET/layer-L
(L: 15 and final), the study's runs models/study/layer-L/SET/aff (one folder per seed, seed-N)
and models/study/layer-L/SET/grid/lr-LR (SSAE, one folder per budget and seed), the language
model models/lm. `ssae COMMAND --help` shows more examples of each command.
"""


NOT_SET = "none"
"""How help texts and the command line name a value that is not set (params.yaml: null)."""


def cli_words(text: str) -> str:
    """A config field's docstring in the words of the command line: YAML's ``null`` (unset)
    becomes :data:`NOT_SET`, as defaults are shown and as such options accept it."""
    return re.sub(r"\bnull\b", NOT_SET, text)


def _or_not_set(kind: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type that also takes :data:`NOT_SET` (any case) for None: the default of an
    option whose field is unset unless given."""

    def parse(text: str) -> object:
        return None if text.strip().lower() == NOT_SET else kind(text)

    parse.__name__ = getattr(kind, "__name__", "str")
    return parse


def _default_text(value: object) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return "none" if value is None else str(value)


def add_config_options(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Sequence[str] | None = None,
    flags: Mapping[str, str] | None = None,
    types: Mapping[str, Callable[[str], object]] | None = None,
    choices: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, object] | None = None,
    repeated: Sequence[str] = (),
    metavars: Mapping[str, str] | None = None,
) -> None:
    """One ``--option`` per field of config dataclass ``cls`` (all of them, or ``only``): the flag
    is the field name with dashes (``flags`` renames), the help text the field's docstring and the
    default the dataclass's, so the command line and the config share one definition. A field in
    ``repeated`` (a tuple) is an option given once per value (``--label A --label B``)."""
    docs = field_docs(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in only or list(fields):
        field = fields[name]
        if defaults and name in defaults:
            default = defaults[name]
        elif field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = None
        kind = (types or {}).get(name) or next(
            (t for t in (int, float, str) if t.__name__ in str(field.type)), str
        )
        help_text = cli_words(docs.get(name, "")).rstrip(".")
        required = default is None and field.default is dataclasses.MISSING
        if default is None and not required:
            kind = _or_not_set(kind)
        if not required:
            help_text += f" (default: {_default_text(default)})"
        flag = (flags or {}).get(name, f"--{name.replace('_', '-')}")
        parser.set_defaults(
            _option_flags={**(parser.get_default("_option_flags") or {}), name: flag}
        )
        parser.add_argument(
            flag,
            dest=name,
            type=kind,
            default=list(default) if name in repeated else default,
            required=required,
            choices=(choices or {}).get(name),
            help=help_text.replace("%", "%%"),
            metavar=(metavars or {}).get(name),
            **({"action": "append"} if name in repeated else {}),
        )


def config_from_args(cls: type, args: argparse.Namespace, **extra: object) -> object:
    """The config dataclass ``cls`` from the parsed options :func:`add_config_options` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    try:
        return cls(**{**values, **extra})
    except InputError as exc:
        flags = getattr(args, "_option_flags", None) or {}
        flags = {k: v for k, v in flags.items() if k in values}
        raise InputError(_as_options(str(exc), flags)) from None


def _as_options(message: str, flags: Mapping[str, str]) -> str:
    """A config message in the words of the command line: a leading ``field=value`` becomes
    ``--flag value`` and every other field name its flag (``num_pairs`` -> ``--pairs``)."""
    head = re.match(r"([a-z_]+)=", message)
    if head is not None and head.group(1) in flags:
        message = f"{flags[head.group(1)]} {message[head.end() :]}"
    for name, flag in flags.items():
        message = re.sub(rf"(?<![\w-]){name}\b", flag, message)
    return message


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --dtype, shared by the commands that run a language model."""
    from ssae_core.lm.embed import EmbedConfig
    from ssae_core.lm.loading import DTYPES

    add_config_options(
        p, EmbedConfig, only=("device", "dtype"), choices={"dtype": ("auto", *DTYPES)}
    )


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: give integers like 0,1,2") from None
    if not seeds:
        raise argparse.ArgumentTypeError("--seeds: give at least one seed, e.g. 0,1,2")
    return seeds


def _sparsities(text: str) -> float | tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sparsity {text!r}: give numbers like 1.0") from None
    if not values:
        raise argparse.ArgumentTypeError("--sparsity: give at least one budget, e.g. 0.75")
    return values[0] if len(values) == 1 else values


TRAIN_EXAMPLE = """\
examples (after `dvc repro`, from the repository root):
  ssae train data/embeddings/lang/layer-15 --out runs/lang --seeds 0,1,2 --reverse-fraction 0.5
  ssae train data/embeddings/binary/layer-final --out runs/binary-aff --method aff --seeds 0,1
  ssae train data/embeddings/binary/layer-15 --out runs/binary --strict --quiet
  ssae train data/synthetic/synth_3_2.parquet --out runs/synth --latent-dim 3
  ssae encode runs/lang/seed-0 data/embeddings/lang/layer-15 --out codes/lang.parquet

A member that ends off its budget (slack, infeasible, not converged) gets one `warning:` line,
also with --quiet; its status ends its summary line. --strict then fails the run (exit status 2,
after writing it), e.g. for scripts and CI.
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ssae_core.model import NORMALIZATIONS
    from ssae_core.train import LOADINGS, METHODS, TrainConfig

    p = sub.add_parser(
        "train",
        help="train SSAE (or the aff baseline) on an embedding table, all seeds stacked",
        description="Train a sparse shift autoencoder on the shifts z_tilde - z of an embedding "
        "table. All seeds train together as one stacked model; one folder per seed "
        "(model.safetensors + config.json) is written under --out, with history.csv and run.json. "
        "A table that would take more than --memory-budget GiB to train in memory is streamed "
        "from its files instead of loaded (memory then does not grow with the number of pairs; "
        "--loading forces either way).",
        epilog=TRAIN_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("embeddings", help="embedding table: a Parquet file or a folder of shards")
    p.add_argument(
        "--out",
        required=True,
        help="run folder to write: a new folder, or an earlier `ssae train` run (replaced once "
        "the new one is complete); nothing else is ever replaced",
    )
    add_config_options(
        p,
        TrainConfig,
        only=[f.name for f in dataclasses.fields(TrainConfig) if f.name != "budget_ratios"],
        types={"seeds": _seeds, "sparsity": _sparsities},
        choices={"method": METHODS, "normalize": NORMALIZATIONS, "loading": LOADINGS},
    )
    p.add_argument(
        "--split",
        default="train",
        help="rows to train on: a split name, or 'all' (default: %(default)s)",
    )
    p.add_argument(
        "--reverse-fraction",
        type=in_range(float, 0, 1),
        default=0.0,
        help="read this seeded fraction of the pairs backwards (z <-> z_tilde), as the study "
        "reads 0.5: where every pair moves the same way (post -> reply, English -> French), "
        "the concept is the mean shift, which normalisation removes; range: "
        f"{range_text(0, 1)} (default: %(default)s)",
    )
    p.add_argument(
        "--reverse-seed",
        type=in_range(int, 0),
        default=0,
        help=f"seed of the choice of reversed pairs; range: {range_text(0, math.inf)} "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--allow-inactive",
        action="store_true",
        help="keep SSAE runs whose multiplier ended at 0 (else that is an error)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="exit with an error (status 2, after writing the run) when a member ends off its "
        "budget: slack, infeasible or not converged (the warning lines say which and why)",
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (warnings are still printed)"
    )
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from ssae_core.runs import train_run
    from ssae_core.streaming import Reversal
    from ssae_core.train import TrainConfig

    reverse = Reversal(args.reverse_fraction, args.reverse_seed) if args.reverse_fraction else None
    result = train_run(
        args.embeddings,
        args.out,
        config_from_args(TrainConfig, args),
        split=args.split,
        reverse=reverse,
        require_active=not args.allow_inactive,
        progress=not args.quiet,
        warn=True,
    )
    for model in result.models:
        record = model.record
        budget = "" if record.budget is None else f" (budget {record.budget:g})"
        print(
            f"seed {record.seed}: loss {record.train_loss:.4f}  L1 {record.l1:.3f}{budget}  "
            f"held-out loss {record.val_loss:.4f}, L1 {record.val_l1:.3f}  multiplier "
            f"{record.multiplier:.3f}  {record.steps} steps  {record.status}"
        )
    print(f"wrote {len(result.models)} model(s) to {args.out}")
    if args.strict:
        _check_strict(result, args.out)


def _check_strict(result, out: str) -> None:
    """``ssae train --strict``: a one-line error when some member is not usable."""
    from ssae_core.record import INFEASIBLE, NOT_CONVERGED, SLACK

    off = [m.record for m in result.models if m.record.status in (SLACK, INFEASIBLE, NOT_CONVERGED)]
    if off:
        which = ", ".join(f"seed {r.seed} {r.status}" for r in off)
        raise InputError(
            f"--strict: {len(off)} member(s) of {out} ended off their budget ({which}); the run "
            "is written: change the budget or steps as the warnings above say, or drop --strict"
        )


ENCODE_EXAMPLE = """\
examples (after `dvc repro`, from the repository root):
  ssae encode models/study/layer-15/lang/aff/seed-0 data/embeddings/lang/layer-15 \\
      --out codes/lang.parquet
  ssae train data/embeddings/binary/layer-15 --out runs/binary --seeds 0,1
  ssae encode runs/binary/seed-1 data/embeddings/binary/layer-15 --out codes/binary.parquet
"""


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="write the codes h of every pair of an embedding table",
        description="Encode the shifts of an embedding table with one trained model; writes "
        "Parquet with pair_id, split, h (fixed-size list of m floats) and outlier (the shift's "
        "norm exceeds the outlier threshold recorded in training: see ssae train "
        "--drop-outliers).",
        epilog=ENCODE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", help="a model folder (e.g. models/study/layer-15/lang/aff/seed-0)")
    p.add_argument("embeddings", help="embedding table: a Parquet file or a folder of shards")
    p.add_argument(
        "--out",
        required=True,
        help="Parquet file to write: a new file, or an earlier `ssae encode` output",
    )
    p.add_argument(
        "--rescale",
        action="store_true",
        help="multiply codes by each sample's normalisation scale (for --normalize layer)",
    )
    p.set_defaults(func=_run_encode)


def _run_encode(args: argparse.Namespace) -> None:
    from ssae_core.runs import encode_table

    count, flagged = encode_table(args.model_dir, args.embeddings, args.out, rescale=args.rescale)
    print(f"wrote codes of {count} pairs to {args.out}")
    if flagged:
        print(
            f"{flagged} pair(s) have a shift norm above the outlier threshold the model was "
            "trained with (column outlier): their codes are extrapolations"
        )


PAIRS_EXAMPLE = """\
examples (replies.csv, europarl.jsonl and hf_folder stand for your own files):
  ssae pairs replies.csv --x post --x-tilde reply --group thread --out pairs/replies.parquet
  ssae pairs europarl.jsonl --x source --x-tilde target --split split \\
      --label language=source_lang:target_lang --label topic --out pairs/europarl.parquet
  ssae pairs hf_folder --x before --x-tilde after --split split --out pairs/edits.parquet
  ssae embed pairs/replies.parquet --out emb/replies --layers 15,final
  ssae train emb/replies/layer-15 --out runs/replies --latent-dim 8

--label forms (repeat the option for several labels):
  NAME=COL_X:COL_X_TILDE  the state of each text: column COL_X for x, COL_X_TILDE for x_tilde
                          (e.g. language=lang_x:lang_x_tilde). Every pair of values that some
                          pair changes between becomes a concept NAME:a->b (a sorts first), with
                          shift +1 for a pair from a to b and -1 back; the table then has the
                          'shift' column that identifiability and steering scores need.
  NAME=COL, or COL        one value per pair, the same state for both texts (a topic, a
                          source): kept with the pair, never a concept.
Without per-text labels the pairs are unlabelled (no 'shift'): SSAE trains on them all the same.

pair_id is the row's position in FILE (0 = the first data row). Rows with an empty text are an
error; pairs whose texts are identical and repeats of an earlier (x, x_tilde) are dropped and
counted. Without --split, a seeded --test-fraction of the groups of --group (or of the pairs,
without --group) is the test split; every group stays on one side.
"""


def _add_pairs(sub: argparse._SubParsersAction) -> None:
    from ssae_core.datasets.custom import FORMATS, CustomPairsConfig

    p = sub.add_parser(
        "pairs",
        help="turn your own file of text pairs into a pair table",
        description="Read pairs of texts (CSV, TSV, JSON Lines, Parquet, or a Hugging Face "
        "datasets folder written by save_to_disk) and write a pair table for `ssae embed`: "
        "pair_id, x, x_tilde, split, the labels as per-text states and, where labels give each "
        "text's state, the concept shifts.",
        epilog=PAIRS_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("path", metavar="FILE", help=field_docs(CustomPairsConfig)["path"])
    add_config_options(
        p,
        CustomPairsConfig,
        only=("x", "x_tilde", "split", "group", "test_fraction", "labels", "seed", "format"),
        flags={"labels": "--label"},
        choices={"format": FORMATS},
        repeated=("labels",),
        metavars={"labels": "SPEC", "x": "COL", "x_tilde": "COL", "split": "COL", "group": "COL"},
    )
    p.add_argument(
        "--out",
        required=True,
        help="pair table to write (.parquet): a new file, or an earlier `ssae pairs` output",
    )
    p.set_defaults(func=_run_pairs)


def _run_pairs(args: argparse.Namespace) -> None:
    from ssae_core.datasets.custom import CustomPairsConfig, write_custom_pairs

    pairs = write_custom_pairs(config_from_args(CustomPairsConfig, args), args.out)
    print(pairs.summary(args.out))


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from ssae_core.synthetic import VALUE_DISTRIBUTIONS, SynthConfig

    p = sub.add_parser(
        "synth",
        help="write a synthetic embedding table with known concept shifts",
        description="Synthetic data synth(n, k): z ~ N(0, I), z_tilde = z + A d_c with a dense "
        "Gaussian A and sparse d_c (1..k non-zero of n). The true d_c is stored in 'shift'.",
        epilog="examples:\n"
        "  ssae synth synth.parquet --concepts 5 --max-changes 3\n"
        "  ssae synth synth-ent.parquet --concepts 5 --max-changes 3 --entangle\n"
        "  ssae train synth.parquet --out runs/synth --latent-dim 5 --seeds 0,1,2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "out", help="Parquet file to write: a new file, or an earlier `ssae synth` output"
    )
    add_config_options(
        p,
        SynthConfig,
        flags={"num_concepts": "--concepts", "num_pairs": "--pairs"},
        choices={"values": VALUE_DISTRIBUTIONS},
    )
    p.add_argument(
        "--entangle",
        action="store_true",
        help="apply a dense invertible D x D map to z and z_tilde",
    )
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> None:
    from ssae_core.synthetic import SynthConfig, write_synthetic

    cfg = config_from_args(SynthConfig, args)
    table = write_synthetic(cfg, args.out, entangled=args.entangle, option="OUT")
    print(f"wrote {len(table)} pairs (d={table.dim}, n={cfg.num_concepts}) to {args.out}")


def _layer_list(text: str) -> list[int | str]:
    """``--layers 15,final`` -> [15, "final"]."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("--layers: give block indices and/or final, e.g. 15,final")
    return [int(item) if item.isdigit() else item for item in items]


def _add_embed(sub: argparse._SubParsersAction) -> None:
    from ssae_core.lm.embed import EmbedConfig
    from ssae_core.lm.engines import ENGINES
    from ssae_core.lm.loading import DTYPES
    from ssae_core.lm.tokens import BOS_SETTINGS

    p = sub.add_parser(
        "embed",
        help="extract last-token LM embeddings of a pair table into Parquet shards",
        description="Embed every distinct text of a pair table with a causal LM (last real "
        "token, a chosen layer) and write embedding shards; an interrupted run resumes. With "
        "--layers, several layers come from one forward pass, one table per layer in "
        "OUT/layer-L/.",
        epilog="examples (after `dvc repro`, from the repository root):\n"
        "  ssae embed data/pairs/lang.parquet --out emb/lang-final      # the final normed state\n"
        "  ssae embed data/pairs/lang.parquet --out emb/lang --layers 15,final --model models/lm\n"
        "  ssae train emb/lang/layer-15 --out runs/lang --seeds 0,1,2\n"
        "  ssae embed data/pairs/gender.parquet --out emb/gender --layer 15 --bos true\n"
        "  ssae embed data/pairs/lang.parquet --out emb/lang --engine ray --address HEAD:6379",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pairs", help="pair table (Parquet with pair_id, x, x_tilde, split, shift)")
    p.add_argument("--out", required=True, help="output folder of shard-NNNNN.parquet files")
    p.add_argument(
        "--model",
        default=None,
        help="Hugging Face model id or local folder (default: the embedded "
        "SmolLM2-135M-Instruct, converted once to a user-level cache)",
    )
    p.add_argument(
        "--revision",
        default=None,
        help="hub revision (branch, tag or commit) of --model; recorded as the commit it "
        "resolves to (default: the hub's main branch; ignored for local models)",
    )
    add_config_options(
        p,
        EmbedConfig,
        types={"layer": int, "layers": _layer_list, "bos": str},
        choices={"dtype": ("auto", *DTYPES), "bos": BOS_SETTINGS, "engine": ENGINES},
        only=(
            "layer", "layers", "batch_size", "device", "dtype", "template", "bos", "shard_rows",
            "engine", "num_actors", "actor_threads", "address",
        ),
    )  # fmt: skip
    p.add_argument(
        "--num-shards",
        type=in_range(int, 1),
        default=1,
        help="split the work into this many parts (processes or machines); range: [1, inf) "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--shard-index",
        type=in_range(int, 0),
        default=0,
        help="which part this process does; range: [0, num-shards - 1] (default: %(default)s)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> None:
    from ssae_core.lm.embed import EmbedConfig, extract_embeddings

    config = config_from_args(EmbedConfig, args)
    if args.shard_index >= args.num_shards:
        raise InputError(
            f"--shard-index {args.shard_index}: must be in [0, {args.num_shards - 1}] "
            f"(--num-shards {args.num_shards})"
        )
    out = extract_embeddings(
        args.pairs,
        args.out,
        model=args.model,
        revision=args.revision,
        **dataclasses.asdict(config),
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        progress=not args.quiet,
    )
    print(f"wrote embeddings to {out}")


STEER_EXAMPLE = """\
examples (after `dvc repro`, from the repository root; models/study/layer-15/lang/aff is the
aff run of the lang set at block 15, English -> French nouns: one concept, so one latent, 0):
  ssae steer models/study/layer-15/lang/aff/seed-0 --lm models/lm --latent 0 \\
      --prompt "My favourite food is" --max-new-tokens 16          # default strength
  ssae steer models/study/layer-15/lang/aff/seed-0 --latent 0 --strength 1.4 \\
      --prompt "The weather today is" --prompt "My house has a" --max-new-tokens 30
  ssae steer models/study/layer-15/lang/aff/seed-0 --latent 0 --operator project_out \\
      --prompt "Le chat est"                           # ablate the direction instead
  ssae steer models/study/layer-15/lang/aff/seed-0 --latent 0 --alpha 200 --export lang.safetensors
  ssae steer lang.safetensors --lm models/lm --prompt "My favourite food is"
  ssae vector md data/embeddings/lang/layer-15 --out lang-md.safetensors
  ssae steer lang-md.safetensors --lm models/lm --prompt "My favourite food is"
The aff runs of the other sets and layers are models/study/layer-L/SET/aff/seed-N (SET: lang,
gender, binary, corr, cat, truthfulqa; L: 15 or final); the SSAE grid of a set is
models/study/layer-L/SET/grid/lr-LR/, one folder per budget and seed (eps-BUDGET_seed-N, the
budgets in models/study/layer-L/SET/budgets.json; the selected cell in metrics/udr.json).
`ssae train` trains your own; `ssae vector md` writes the supervised mean-difference vector of
a pair or embedding table.

Strength (the default unit): the vector is rescaled to strength x the typical residual norm at
its layer (the median norm of the unsteered hidden states of 16 neutral English prompts, BOS
left out): strength 1 adds a vector as long as a typical hidden state there (~178 at block 15,
~44 at the final norm of SmolLM2-135M), whatever the vector's own length. The default moves
the embedded model's language visibly while it stays readable (README "Behavioural steering");
metrics/behaviour.json lists each method's operating point. --alpha instead gives the size in
raw embedding units (for a vector file: a multiplier of its own length; --alpha 1 keeps it).
Decoder columns have an arbitrary sign: if the text moves away from the concept, negate it.
The vector acts where the training embeddings were read (the final-norm output, or the output
of block L; --layer -1 is the last block). --operator: add (h + v), project_out (h minus its
component along v: directional ablation, size ignored), add_keep_norm (h + v rescaled to the
norm of h). Exported files hold the vector itself (llama.cpp always adds it). --export-gguf
needs a block layer >= 1 (llama.cpp control vectors add to block outputs); use it with
`llama-cli -m MODEL.gguf --control-vector FILE.gguf`.
"""


def _layer_text(text: str) -> str:
    """A ``--layer`` value: ``final`` or a block index (negative: from the end), kept as text."""
    from ssae_core.lm.layers import parse_layer

    try:
        parse_layer(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


MAX_ALPHA = 1e5
"""Largest |--alpha|: residual norms of the models steered here are at most ~3e4, so a larger
scale only overflows the forward pass (float32 inf, then empty text)."""


def range_text(low: float, high: float = math.inf, *, open_low: bool = False) -> str:
    """An interval as the help texts write it: ``[1, inf)``, ``(0, inf)``, ``[-100000, 100000]``."""
    high_text = "inf)" if high == math.inf else f"{high:g}]"
    return f"{'(' if open_low else '['}{low:g}, {high_text}"


def in_range(
    kind: type, low: float, high: float = math.inf, *, open_low: bool = False
) -> Callable[[str], float]:
    """An argparse type: a finite ``kind`` (int or float) in :func:`range_text` (low, high)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        above = value > low if open_low else value >= low
        if not (above and value <= high and math.isfinite(value)):  # NaN fails too
            raise argparse.ArgumentTypeError(
                f"{text}: must be in {range_text(low, high, open_low=open_low)}"
            )
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    """--export-gguf and --model-hint, shared by the commands that write steering vectors."""
    p.add_argument(
        "--export-gguf",
        metavar="FILE",
        help="also save it as a llama.cpp control vector (block layers >= 1 only)",
    )
    p.add_argument(
        "--model-hint",
        help="architecture written as controlvector.model_hint (default: the model config's "
        "model_type, e.g. llama)",
    )


DEFAULT_STRENGTH = 1.2
"""``ssae steer``'s default strength (x the typical residual norm): measured on the embedded
SmolLM2-135M with the MD lang vector at block 15 (README "Behavioural steering")."""
MAX_STRENGTH = 100.0


def _add_size_arguments(p: argparse.ArgumentParser) -> None:
    """--strength / --alpha of ``ssae steer``: how long the added vector is."""
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--strength",
        type=in_range(float, -MAX_STRENGTH, MAX_STRENGTH),
        default=None,
        help="length of the added vector in units of the typical residual norm at its layer "
        f"(see below; the sign picks the direction; default {DEFAULT_STRENGTH:g}); range: "
        f"{range_text(-MAX_STRENGTH, MAX_STRENGTH)}",
    )
    size.add_argument(
        "--alpha",
        type=in_range(float, -MAX_ALPHA, MAX_ALPHA),
        default=None,
        help="instead of --strength: scale of the unit vector of a model folder, in raw "
        "embedding units; for a vector file, a multiplier of its own length; range: "
        f"{range_text(-MAX_ALPHA, MAX_ALPHA)}",
    )


def _add_steer(sub: argparse._SubParsersAction) -> None:
    from ssae_core.lm.steer import OPERATORS, POSITIONS
    from ssae_core.lm.tokens import MAX_NEW_TOKENS

    p = sub.add_parser(
        "steer",
        help="generate text with and without a steering vector; export the vector",
        description="Steer the LM's residual stream at the layer the embeddings were read from "
        "with alpha x (unit steering vector of one latent of a trained model), or with a saved "
        "vector file, and print greedy continuations of each prompt without and with steering. "
        "The vector can be saved as safetensors (loadable by "
        "ssae_core.lm.vector_files.load_steering_vectors) or as a llama.cpp control vector.",
        epilog=STEER_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model_dir",
        help="a trained model folder (e.g. models/study/layer-15/lang/aff/seed-0), or a "
        "steering-vector file "
        "(.safetensors or .gguf, e.g. from `ssae vector md`)",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--latent",
        type=in_range(int, 0),
        help="index of the latent whose vector is used; range: [0, latents - 1]",
    )
    which.add_argument(
        "--concept",
        help="concept name, for models with one latent per concept and a recorded matching",
    )
    _add_size_arguments(p)
    p.add_argument(
        "--operator",
        choices=OPERATORS,
        default="add",
        help="add alpha v; project_out: remove the component along v; add_keep_norm: add, "
        "then rescale each position to its unsteered norm (default: %(default)s)",
    )
    p.add_argument(
        "--layer",
        type=_layer_text,
        default=None,
        help="steer this layer instead of the one the model's embeddings were read at: "
        "'final' or a block index, -1 = the last block (model folders only)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        default=[],
        help="text to continue (repeat for several prompts); optional with --export",
    )
    p.add_argument(
        "--lm",
        default=None,
        help="the language model: hub id, local folder, or 'embedded' (default: the model "
        "recorded with the vector); without --prompt, only its config is read (layer count, "
        "architecture)",
    )
    p.add_argument(
        "--positions",
        choices=POSITIONS,
        default="all",
        help="steer every token, only the prompt's, or only generated tokens "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=in_range(int, 1, MAX_NEW_TOKENS),
        default=20,
        help=f"tokens to generate; range: {range_text(1, MAX_NEW_TOKENS)} (default: %(default)s)",
    )
    _add_prompt_form_arguments(p)
    add_device_arguments(p)
    p.add_argument("--export", metavar="FILE", help="also save the vector as safetensors")
    _add_export_arguments(p)
    p.set_defaults(func=_run_steer)


def _is_vector_file(path: str) -> bool:
    from pathlib import Path

    return Path(path).is_file()


def _steering_vector(args: argparse.Namespace):
    """The vector ``ssae steer`` uses: from a model folder or a vector file (see its --help)."""
    from ssae_core.lm.vector_files import load_steering_vectors, vector_from_model

    if _is_vector_file(args.model_dir):
        for flag in ("latent", "concept", "layer"):
            if getattr(args, flag) is not None:
                raise InputError(f"--{flag}: for a model folder; {args.model_dir} is a vector file")
        vector = load_steering_vectors(args.model_dir)
        return vector if args.alpha is None else args.alpha * vector
    if args.latent is None and args.concept is None:
        raise InputError(
            f"{args.model_dir}: a model folder; pick its vector with --latent or --concept"
        )
    options = {} if args.layer is None else {"layer": args.layer}
    alpha = 1.0 if args.alpha is None else args.alpha
    vector = vector_from_model(
        args.model_dir, latent=args.latent, concept=args.concept, alpha=alpha, **options
    )
    if not (args.export or args.export_gguf):
        return vector
    from ssae_core.evaluation.vector_evidence import with_evidence

    return with_evidence(vector, args.model_dir)  # stability, concept match, fitted alpha


def _load_lm(args: argparse.Namespace, recorded: str):
    """The LM to steer (--lm, else the one the vector records) and its tokenizer."""
    from ssae_core.lm import loading as lm
    from ssae_core.lm.vector_files import recorded_lm

    name = args.lm if args.lm is not None else recorded_lm(recorded)
    if name is None:
        raise InputError(f"{args.model_dir}: records no language model; give --lm")
    source = lm.resolve_model(name)
    if recorded and source.name != recorded:
        print(
            f"warning: the vector comes from embeddings of {recorded}; steering {source.name}",
            file=sys.stderr,
        )
    net = lm.load_model(source, device=args.device, dtype=args.dtype)
    return net, lm.load_tokenizer(source)


def _needs_model_config(vector, args: argparse.Namespace, safetensors: str | None) -> bool:
    """Whether writing ``vector`` needs its model: negative layers, or a GGUF file whose
    architecture is not known yet."""
    negative = any(k is not None and k < 0 for k in vector.layer_activations)
    unknown_hint = bool(args.export_gguf) and not (
        args.model_hint or vector.metadata.get("model_type")
    )
    return (bool(safetensors) or bool(args.export_gguf)) and (negative or unknown_hint)


def _lm_config(name: str):
    """The config of the model named by --lm (cheap: no weights)."""
    from ssae_core.lm import loading

    return loading.load_config(loading.resolve_model(name, verbose=False))


def _export_targets(args: argparse.Namespace) -> tuple[str | None, str]:
    """The safetensors path (--out / --export, or None) and its option, after checking every
    export path (two different files, each new or an earlier vector file of ours): called before
    any work, and again just before writing."""
    from ssae_core.io import check_output
    from ssae_core.lm.vector_files import VECTOR_COMMAND

    safetensors = getattr(args, "out", None) or getattr(args, "export", None)
    option = "--out" if getattr(args, "out", None) else "--export"
    targets = [(safetensors, option), (args.export_gguf, "--export-gguf")]
    targets = [(path, flag) for path, flag in targets if path]
    if len(targets) == 2 and Path(targets[0][0]).resolve() == Path(targets[1][0]).resolve():
        raise InputError(f"{option} and --export-gguf: name the same file; give two paths")
    for path, flag in targets:
        check_output(path, VECTOR_COMMAND, kind="file", option=flag)
    return safetensors, option


def _write_vector_files(args: argparse.Namespace, vector, config) -> None:
    """The exports asked for (--out / --export, --export-gguf), all or nothing; with a known
    model config, negative layers are resolved and its type recorded."""
    from ssae_core.lm.vector_files import recorded_model_config, save_vector_files, with_model

    safetensors, option = _export_targets(args)
    if config is None and _needs_model_config(vector, args, safetensors):
        config = _lm_config(args.lm) if args.lm else recorded_model_config(vector)
    if config is not None:
        vector = with_model(vector, config)
    save_vector_files(
        vector,
        safetensors=safetensors,
        option=option,
        gguf=args.export_gguf,
        model_hint=args.model_hint,
    )
    for path in (safetensors, args.export_gguf):
        if path:
            print(f"wrote {path}")
    if args.export_gguf and getattr(args, "operator", "add") != "add":
        print(f"note: llama.cpp adds control vectors; it cannot {args.operator}", file=sys.stderr)


def _add_prompt_form_arguments(p: argparse.ArgumentParser) -> None:
    """--template / --chat and --bos of ``ssae steer``: how prompts are tokenised."""
    from ssae_core.lm.tokens import BOS_SETTINGS

    prompt_form = p.add_mutually_exclusive_group()
    prompt_form.add_argument(
        "--template",
        default=None,
        help="prompt template with {text}, or 'chat' (default: the template recorded with the "
        "training embeddings, usually none; '{text}' forces the raw prompt)",
    )
    prompt_form.add_argument(
        "--chat",
        action="store_true",
        help="wrap each prompt in the tokenizer's chat template (the same as --template chat)",
    )
    p.add_argument(
        "--bos",
        choices=BOS_SETTINGS,
        default=None,
        help="put the tokenizer's BOS token before each prompt: auto, true or false (default: "
        "the setting recorded with the training embeddings; false for embeddings that record "
        "none)",
    )


def _prompt_form(args: argparse.Namespace, recorded: Mapping[str, str]) -> dict[str, object]:
    """How ``ssae steer`` tokenises prompts: template and BOS setting from the options, else as
    the training embeddings were read (their provenance in the model folder)."""
    from ssae_core.lm.tokens import CHAT_TEMPLATE
    from ssae_core.runs import load_model

    template = CHAT_TEMPLATE if args.chat else args.template
    if template is None:
        template = recorded.get("template") or None
    bos = args.bos or recorded.get("bos")
    if bos is None and not _is_vector_file(args.model_dir):
        bos = (load_model(args.model_dir).config.get("provenance") or {}).get("bos")
    return {"template": template, "bos": bos or "false"}  # recorded none: read without a prefix


def _run_steer(args: argparse.Namespace) -> None:
    """``ssae steer``: print unsteered vs steered continuations, write the requested exports."""
    from ssae_core.evaluation.behaviour.language import at_typical_strength
    from ssae_core.lm.steer import steer
    from ssae_core.lm.tokens import complete
    from ssae_core.lm.vector_files import check_gguf_exportable, with_model

    if not args.prompt and not (args.export or args.export_gguf):
        raise InputError("give --prompt TEXT to generate, or --export/--export-gguf FILE")
    _export_targets(args)
    vector = _steering_vector(args)
    if args.export_gguf and not any(k is not None and k < 0 for k in vector.layer_activations):
        check_gguf_exportable(vector)  # fail before loading a model
    net = tokenizer = None
    by_strength = args.alpha is None and args.operator != "project_out"
    if args.prompt or by_strength:
        net, tokenizer = _load_lm(args, vector.metadata.get("model", ""))
        vector = with_model(vector, net.config)
    form = _prompt_form(args, vector.metadata)
    if by_strength:
        strength = DEFAULT_STRENGTH if args.strength is None else args.strength
        vector = at_typical_strength(net, tokenizer, vector, strength, **form)
    if not args.prompt:
        _write_vector_files(args, vector, None)
        return
    reading = {"max_new_tokens": args.max_new_tokens, **form}
    plain = complete(net, tokenizer, args.prompt, **reading)
    with steer(net, vector, positions=args.positions, operator=args.operator):
        steered = complete(net, tokenizer, args.prompt, **reading)
    _write_vector_files(args, vector, None)  # once every prompt was read: all or nothing
    print(
        f"steering: {_steer_label(args, vector)}, operator {args.operator}, "
        f"layer {vector.metadata.get('layer', '?')}, positions {args.positions}"
    )
    for prompt, before, after in zip(args.prompt, plain, steered, strict=True):
        print(f"\nprompt:    {prompt}")
        print(f"unsteered: {before}")
        print(f"steered:   {after}")


def _steer_label(args: argparse.Namespace, vector) -> str:
    if args.concept is not None:
        name = args.concept
    elif args.latent is not None:
        name = f"latent {args.latent}"
    else:
        name = vector.metadata.get("expression") or vector.metadata.get("concept") or "vector"
    if args.operator == "project_out":
        return name
    if args.alpha is None:
        return f"{name}, strength {float(vector.metadata['strength']):g} x norm " + (
            f"{vector.metadata['typical_norm']}"
        )
    return f"{name}, alpha {args.alpha:g}"


VECTOR_EXAMPLE = """\
examples (after `dvc repro`, from the repository root):
  ssae vector md data/embeddings/lang/layer-15 --out lang-md.safetensors
  ssae vector md data/embeddings/binary/layer-15 --concept gender --out gender-md.safetensors
  ssae vector md data/pairs/lang.parquet --lm models/lm --layer -1 --out lang-md.safetensors \\
      --export-gguf lang-md.gguf
  ssae steer lang-md.safetensors --prompt "My favourite food is"

The vector is the mean of z_tilde - z over the pairs of --split; for a table whose pairs are
labelled with several concepts, over the pairs in which only --concept changes (reverse pairs
flipped). It is in raw embedding units: multiplier 1 adds the average shift.
"""


VECTOR_SHOW_EXAMPLE = """\
examples (after `dvc repro`, from the repository root):
  ssae vector md data/embeddings/lang/layer-15 --out lang-md.safetensors
  ssae vector show lang-md.safetensors
  ssae steer models/study/layer-15/lang/aff/seed-0 --latent 0 --alpha 4 \\
      --export lang-0.safetensors --export-gguf lang-0.gguf
  ssae vector show lang-0.safetensors    # budget, status, stability, concept match, alpha_fit
  ssae vector show lang-0.gguf           # the llama.cpp file: format, layers, norms, hint
"""


def _add_vector(sub: argparse._SubParsersAction) -> None:
    from ssae_core.lm.embed import EmbedConfig

    p = sub.add_parser(
        "vector",
        help="build steering vectors without training (md: the supervised mean difference)",
        description="Build steering vectors straight from data.",
    )
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    md = kinds.add_parser(
        "md",
        help="the mean-difference vector of a pair or embedding table",
        description="Write the supervised mean-difference vector, the mean of z_tilde - z over "
        "the pairs, in the file format of learnt vectors (safetensors; metadata: model, layer, "
        "method=md, concept, n_pairs...). A pair table is embedded first with --lm.",
        epilog=VECTOR_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    md.add_argument(
        "table", help="pair table (x, x_tilde) or embedding table (z, z_tilde; file or shards)"
    )
    md.add_argument("--out", required=True, help="output .safetensors file")
    md.add_argument(
        "--concept",
        help="average the pairs in which only this concept changes (needed when the table "
        "labels several); for unlabelled pairs, the name recorded",
    )
    md.add_argument(
        "--split", default="train", help="pairs to average: a split, or 'all' (default: train)"
    )
    md.add_argument(
        "--layer",
        type=_layer_text,
        default=None,
        help="pair tables: the layer to embed, 'final' or a block index, -1 = the last block "
        "(default: final); embedding tables: only for tables that record none",
    )
    md.add_argument(
        "--lm",
        default=None,
        help="pair tables: the language model, hub id, local folder or 'embedded' (default)",
    )
    md.add_argument("--revision", default=None, help="pair tables: hub revision of --lm")
    add_config_options(md, EmbedConfig, only=("batch_size", "template"))
    add_device_arguments(md)
    _add_export_arguments(md)
    md.add_argument("--quiet", action="store_true", help="no progress")
    md.set_defaults(func=_run_vector_md)
    show = kinds.add_parser(
        "show",
        help="print a steering vector file's evidence: how far it can be trusted",
        description="Print, one field per line, a steering vector file's format, width, layers "
        "and norms, and the evidence it records: method, model, layer, the hash of its data "
        "(pairs_sha256), the member's seed, budget and status, the cross-seed stability of its "
        "latent and the run's decoder UDR, the concept it matches with the match score, and its "
        "fitted alpha (none: does not apply). Reads the files of `ssae vector md` and `ssae steer "
        "--export/--export-gguf`, and llama.cpp control vectors (.gguf, as repeng and llama.cpp "
        "write them: format, layers, norms and model hint; their evidence is absent).",
        epilog=VECTOR_SHOW_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    show.add_argument("file", help="a .safetensors or .gguf steering vector")
    show.set_defaults(func=_run_vector_show)


def _run_vector_show(args: argparse.Namespace) -> None:
    """``ssae vector show``: the format, layers, norms and evidence of a vector file."""
    from ssae_core.evaluation.vector_evidence import show_lines

    print("\n".join(show_lines(args.file)))


def _run_vector_md(args: argparse.Namespace) -> None:
    """``ssae vector md``: embed (pair tables) or read the table, average, write the files."""
    from ssae_core.evaluation.mean_difference import load_or_embed, mean_difference_vector
    from ssae_core.lm.embed import EmbedConfig

    # --batch-size, --template, --device and --dtype before any work (--layer is its own here)
    config_from_args(EmbedConfig, args, layer=None)
    _export_targets(args)
    embedded = load_or_embed(
        args.table,
        lm=args.lm,
        revision=args.revision,
        layer=args.layer,
        split=args.split,
        template=args.template,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
    )
    vector = mean_difference_vector(
        embedded.table,
        concept=args.concept,
        split=args.split,
        layer=args.layer if embedded.config is None else None,
        source=str(args.table),
    )
    _write_vector_files(args, vector, embedded.config)
    values = next(iter(vector.layer_activations.values()))
    print(
        f"md vector of {vector.metadata['n_pairs']} pairs (concept "
        f"{vector.metadata['concept'] or 'none'}, layer {vector.metadata['layer']}, "
        f"norm {float(values.norm()):.4g})"
    )


INSPECT_EXAMPLE = """\
examples (after `dvc repro`, from the repository root; the selected cell of a set is in
metrics/udr.json: its run folder and L1 budget):
  ssae inspect models/study/layer-15/binary/aff --pairs data/embeddings/binary/layer-15 \\
      --texts data/pairs/binary.parquet --lm models/lm --out inspect/binary
  ssae inspect models/study/layer-final/lang/aff --pairs data/pairs/lang.parquet \\
      --out inspect/lang                                   # embeds the pairs as the run's were
  ssae synth synth.parquet --concepts 3 --max-changes 2
  ssae train synth.parquet --out runs/synth --latent-dim 3 --seeds 0,1,2
  ssae inspect runs/synth --pairs synth.parquet --out inspect/synth   # no LM: no steering

A grid run (models/study/layer-L/SET/grid/lr-LR) stacks several budgets: pick one with
--sparsity BUDGET, a budget of models/study/layer-L/SET/budgets.json.

Writes OUT/index.html (open it in a browser; it loads nothing from the network), OUT/summary.md
(one row per latent) and OUT/inspection.json (everything both show). A list of strengths that
starts with a negative one needs the = form: --strengths=-1.2,-0.6,0.6,1.2.
"""


def _numbers(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers like -4,-2,2,4,8") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one number, e.g. -4,-2,2,4,8")
    return values


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    from ssae_core.evaluation.inspection import InspectConfig
    from ssae_core.lm.steer import POSITIONS

    p = sub.add_parser(
        "inspect",
        help="a page that shows what each latent of a run does (pairs, concepts, steering)",
        description="For every latent of a trained run: its stability across seeds, the pairs "
        "that move it most in each direction, the labelled concept it matches best, and greedy "
        "continuations of neutral prompts steered at several strengths (x the typical "
        "residual norm at the layer, as ssae steer --strength). "
        "Writes a self-contained HTML page and a Markdown summary into --out.",
        epilog=INSPECT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run folder written by `ssae train` (all its seed members)")
    p.add_argument(
        "--pairs",
        required=True,
        help="the pairs to show: the embedding table the run was trained on (file or shards), "
        "or a pair table, which is embedded first as the run's embeddings were (model, layer, "
        "template, BOS)",
    )
    p.add_argument("--out", required=True, help="output folder (new, or an earlier inspect)")
    p.add_argument(
        "--texts",
        default=None,
        help="with an embedding table: the pair table it was embedded from, for the texts "
        "(joined on pair_id; without it pairs are shown by id)",
    )
    p.add_argument(
        "--lm",
        default=None,
        help="the language model to steer: hub id, local folder or 'embedded' (default: the "
        "one the run records)",
    )
    p.add_argument("--no-lm", action="store_true", help="no steering, no language model")
    p.add_argument(
        "--sparsity",
        type=in_range(float, 0, open_low=True),
        default=None,
        help="the L1 budget of the members to inspect, for a run that stacks several; range: "
        "(0, inf)",
    )
    add_config_options(
        p,
        InspectConfig,
        types={"strengths": _numbers},
        choices={"positions": POSITIONS},
    )
    add_device_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=_run_inspect)


def _run_inspect(args: argparse.Namespace) -> None:
    from ssae_core.evaluation.inspection import InspectConfig, inspect_files

    result = inspect_files(
        args.run,
        args.pairs,
        args.out,
        texts=args.texts,
        lm=args.lm,
        steer=not args.no_lm,
        sparsity=args.sparsity,
        config=config_from_args(InspectConfig, args),
        device=args.device,
        dtype=args.dtype,
        progress=not args.quiet,
    )
    steered = "with" if result["unsteered"] is not None else "without"
    print(
        f"inspected {len(result['latents'])} latents of seed {result['run']['reference_seed']} "
        f"({steered} steering): {args.out}/index.html"
    )


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_train,
    _add_encode,
    _add_embed,
    _add_steer,
    _add_vector,
    _add_inspect,
    _add_synth,
    _add_pairs,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="ssae",
        description="Sparse Shift Autoencoders: identifiable steering vectors from paired texts.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ssae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a scheduler, DVC, kill) ends the run like Ctrl-C: clean-ups run, nothing stays."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a file removed while we read it...
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
