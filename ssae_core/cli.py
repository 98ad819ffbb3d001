"""The ``ssae`` command-line tool: train, encode, embed, synth.

Every subcommand reports bad input as one line ``error: ...`` and exits with status 2, leaving no
partial output behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence

from ssae_core import __version__
from ssae_core.config import field_docs
from ssae_core.errors import InputError

EXAMPLES = """\
examples:
  ssae synth data.parquet --concepts 5 --max-changes 3
  ssae train data.parquet --out runs/demo --latent-dim 5 --seeds 0,1,2
  ssae encode runs/demo/seed-0 data.parquet --out codes.parquet
"""


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one line (``error: ...; see `ssae train --help```), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def _default_text(value: object) -> str:
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value)
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
) -> None:
    """One ``--option`` per field of config dataclass ``cls`` (all of them, or ``only``): the flag
    is the field name with dashes (``flags`` renames), the help text the field's docstring and the
    default the dataclass's, so the command line and the config share one definition."""
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
        help_text = docs.get(name, "").rstrip(".")
        required = default is None and field.default is dataclasses.MISSING
        if not required:
            help_text += f" (default: {_default_text(default)})"
        parser.add_argument(
            (flags or {}).get(name, f"--{name.replace('_', '-')}"),
            dest=name,
            type=kind,
            default=default,
            required=required,
            choices=(choices or {}).get(name),
            help=help_text.replace("%", "%%"),
        )


def config_from_args(cls: type, args: argparse.Namespace, **extra: object) -> object:
    """The config dataclass ``cls`` from the parsed options :func:`add_config_options` added."""
    values = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return cls(**{**values, **extra})


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
    return values[0] if len(values) == 1 else values


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ssae_core.model import NORMALIZATIONS
    from ssae_core.train import METHODS, TrainConfig

    p = sub.add_parser(
        "train",
        help="train SSAE (or the aff baseline) on an embedding table, all seeds stacked",
        description="Train a sparse shift autoencoder on the shifts z_tilde - z of an embedding "
        "table. All seeds train together as one stacked model; one folder per seed "
        "(model.safetensors + config.json) is written under --out, with history.csv and run.json.",
        epilog="example:\n  ssae train data.parquet --out runs/demo --latent-dim 5 --seeds 0,1,2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("embeddings", help="embedding table: a Parquet file or a folder of shards")
    p.add_argument("--out", required=True, help="run folder to write (replaced if it exists)")
    add_config_options(
        p,
        TrainConfig,
        types={"seeds": _seeds, "sparsity": _sparsities},
        choices={"method": METHODS, "normalize": NORMALIZATIONS},
    )
    p.add_argument(
        "--split",
        default="train",
        help="rows to train on: a split name, or 'all' (default: %(default)s)",
    )
    p.add_argument(
        "--allow-inactive",
        action="store_true",
        help="keep SSAE runs whose multiplier ended at 0 (else that is an error)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> None:
    from ssae_core.runs import train_run
    from ssae_core.train import TrainConfig

    result = train_run(
        args.embeddings,
        args.out,
        config_from_args(TrainConfig, args),
        split=args.split,
        require_active=not args.allow_inactive,
        progress=not args.quiet,
    )
    for model in result.models:
        final = model.config["final"]
        print(
            f"seed {model.config['seed']}: val_loss {final['val_loss']:.4f}  "
            f"L1 {final['val_l1']:.3f}  multiplier {final['multiplier']:.3f}"
        )
    print(f"wrote {len(result.models)} model(s) to {args.out}")


def _add_encode(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "encode",
        help="write the codes h of every pair of an embedding table",
        description="Encode the shifts of an embedding table with one trained model; writes "
        "Parquet with pair_id, split and h (fixed-size list of m floats).",
    )
    p.add_argument("model_dir", help="a model folder (e.g. runs/demo/seed-0)")
    p.add_argument("embeddings", help="embedding table: a Parquet file or a folder of shards")
    p.add_argument("--out", required=True, help="output Parquet file")
    p.add_argument(
        "--rescale",
        action="store_true",
        help="multiply codes by each sample's normalisation scale (for --normalize layer)",
    )
    p.set_defaults(func=_run_encode)


def _run_encode(args: argparse.Namespace) -> None:
    from ssae_core.runs import encode_table

    count = encode_table(args.model_dir, args.embeddings, args.out, rescale=args.rescale)
    print(f"wrote codes of {count} pairs to {args.out}")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from ssae_core.synthetic import VALUE_DISTRIBUTIONS, SynthConfig

    p = sub.add_parser(
        "synth",
        help="write a synthetic embedding table with known concept shifts",
        description="Synthetic data synth(n, k): z ~ N(0, I), z_tilde = z + A d_c with a dense "
        "Gaussian A and sparse d_c (1..k non-zero of n). The true d_c is stored in 'shift'.",
    )
    p.add_argument("out", help="output Parquet file")
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
    from ssae_core.io import save_embeddings
    from ssae_core.synthetic import SynthConfig, entangle, make_synthetic

    cfg = config_from_args(SynthConfig, args)
    table = make_synthetic(cfg)
    if args.entangle:
        table = entangle(table, seed=cfg.seed + 1)
    save_embeddings(table, args.out)
    print(f"wrote {len(table)} pairs (d={table.dim}, n={cfg.num_concepts}) to {args.out}")


def _layer_list(text: str) -> list[int | str]:
    """``--layers 15,final`` -> [15, "final"]."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise argparse.ArgumentTypeError("--layers: give block indices and/or final, e.g. 15,final")
    return [int(item) if item.isdigit() else item for item in items]


def _add_embed(sub: argparse._SubParsersAction) -> None:
    from ssae_core.lm.embed import EmbedConfig
    from ssae_core.lm.loading import DTYPES
    from ssae_core.lm.tokens import BOS_SETTINGS

    p = sub.add_parser(
        "embed",
        help="extract last-token LM embeddings of a pair table into Parquet shards",
        description="Embed every distinct text of a pair table with a causal LM (last real "
        "token, a chosen layer) and write embedding shards; an interrupted run resumes. With "
        "--layers, several layers come from one forward pass, one table per layer in "
        "OUT/layer-L/.",
        epilog="examples:\n  ssae embed data/pairs/lang.parquet --out data/embeddings/lang\n"
        "  ssae embed data/pairs/lang.parquet --out emb/lang --layers 15,final --bos true",
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
        choices={"dtype": ("auto", *DTYPES), "bos": BOS_SETTINGS},
        only=("layer", "layers", "batch_size", "device", "dtype", "template", "bos", "shard_rows"),
    )
    p.add_argument(
        "--num-shards",
        type=int,
        default=1,
        help="split the work into this many parts (processes or machines)",
    )
    p.add_argument("--shard-index", type=int, default=0, help="which part this process does")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_embed)


def _run_embed(args: argparse.Namespace) -> None:
    from ssae_core.lm.embed import EmbedConfig, extract_embeddings

    config = config_from_args(EmbedConfig, args)
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
example (after `dvc repro`, from the repository root; models/study/lang/aff is the aff run of
the lang set, English -> French nouns: one concept, so one latent, latent 0):
  ssae steer models/study/lang/aff/seed-0 --lm models/lm --latent 0 --alpha 30 \\
      --prompt "My favourite food is" --max-new-tokens 16
  ssae steer models/study/lang/aff/seed-0 --latent 0 --alpha 30 --positions generated \\
      --prompt "The weather today is" --prompt "My house has a" --max-new-tokens 30
  ssae steer models/study/lang/aff/seed-0 --latent 0 --alpha 30 --export lang.safetensors
SSAE runs of the selected grid cell (metrics/udr.json) are in models/study/SET/grid/lr-LR/,
one folder per budget and seed (eps-0.25_seed-0...). `ssae train` trains your own.

Decoder columns have an arbitrary sign: if the text moves away from the concept, flip --alpha.
alpha is in embedding units (the fitted size of each concept's shift, alpha_fit, is listed in
metrics/behaviour.json and metrics/REPORT.md). The vector is added where the training embeddings
were read (the final-norm output by default, or the output of block L). --export-gguf needs a
block layer >= 1 (llama.cpp control vectors add to block outputs); use it with
`llama-cli -m MODEL.gguf --control-vector FILE.gguf`.
"""


def _add_steer(sub: argparse._SubParsersAction) -> None:
    from ssae_core.lm.steer import POSITIONS
    from ssae_core.lm.tokens import BOS_SETTINGS

    p = sub.add_parser(
        "steer",
        help="generate text with and without a latent's steering vector; export the vector",
        description="Add alpha x (unit steering vector of one latent of a trained model) to the "
        "LM's residual stream at the layer its embeddings were read from, and print greedy "
        "continuations of each prompt without and with steering. The vector can be saved as "
        "safetensors (loadable by ssae_core.lm.vector_files.load_steering_vectors) or as a "
        "llama.cpp control vector.",
        epilog=STEER_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model_dir", help="a trained model folder (e.g. runs/lang/seed-0)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--latent", type=int, help="index of the latent whose vector is used")
    which.add_argument(
        "--concept",
        help="concept name, for models with one latent per concept and a recorded matching",
    )
    p.add_argument(
        "--alpha",
        type=float,
        required=True,
        help="scale of the unit vector, in raw embedding units (norms: ~50 for the final normed "
        "state of SmolLM2); the sign picks the direction",
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
        "recorded with the training embeddings)",
    )
    p.add_argument(
        "--positions",
        choices=POSITIONS,
        default="all",
        help="steer every token, only the prompt's, or only generated tokens "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--max-new-tokens", type=int, default=20, help="tokens to generate (default: %(default)s)"
    )
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
    add_device_arguments(p)
    p.add_argument("--export", metavar="FILE", help="also save the vector as safetensors")
    p.add_argument(
        "--export-gguf",
        metavar="FILE",
        help="also save it as a llama.cpp control vector (block layers >= 1 only)",
    )
    p.set_defaults(func=_run_steer)


def _default_lm(recorded: str) -> str | None:
    from ssae_core.lm.loading import EMBEDDED

    if not recorded:
        return None
    return EMBEDDED if recorded.startswith(f"{EMBEDDED}:") else recorded


def _prompt_form(args: argparse.Namespace, recorded: Mapping[str, str]) -> dict[str, object]:
    """How ``ssae steer`` tokenises prompts: template and BOS setting from the options, else as
    the training embeddings were read (their provenance in the model folder)."""
    from ssae_core.lm.tokens import CHAT_TEMPLATE
    from ssae_core.runs import load_model

    template = CHAT_TEMPLATE if args.chat else args.template
    if template is None:
        template = recorded.get("template") or None
    bos = args.bos
    if bos is None:
        provenance = load_model(args.model_dir).config.get("provenance") or {}
        bos = provenance.get("bos") or "false"  # embeddings from before the setting: no prefix
    return {"template": template, "bos": bos}


def _run_steer(args: argparse.Namespace) -> None:
    """``ssae steer``: print unsteered vs steered continuations, write the requested exports."""
    from ssae_core.lm import loading as lm
    from ssae_core.lm.steer import steer
    from ssae_core.lm.tokens import complete
    from ssae_core.lm.vector_files import (
        check_gguf_exportable,
        export_gguf,
        save_steering_vector,
        vector_from_model,
    )

    if not args.prompt and not (args.export or args.export_gguf):
        raise InputError("give --prompt TEXT to generate, or --export/--export-gguf FILE")
    vector = vector_from_model(
        args.model_dir, latent=args.latent, concept=args.concept, alpha=args.alpha
    )
    if args.export_gguf:
        check_gguf_exportable(vector)
    net = tokenizer = None
    if args.prompt:
        recorded = vector.metadata["model"]
        name = args.lm if args.lm is not None else _default_lm(recorded)
        if name is None:
            raise InputError(f"{args.model_dir}: records no language model; give --lm")
        source = lm.resolve_model(name)
        if recorded and source.name != recorded:
            print(
                f"warning: the vector comes from embeddings of {recorded}; steering {source.name}",
                file=sys.stderr,
            )
        net = lm.load_model(source, device=args.device, dtype=args.dtype)
        tokenizer = lm.load_tokenizer(source)
        vector.metadata["model_type"] = str(getattr(net.config, "model_type", ""))
    if args.export:
        save_steering_vector(vector, args.export)
        print(f"wrote {args.export}")
    if args.export_gguf:
        export_gguf(vector, args.export_gguf)
        print(f"wrote {args.export_gguf}")
    if net is None:
        return
    reading = {"max_new_tokens": args.max_new_tokens, **_prompt_form(args, vector.metadata)}
    plain = complete(net, tokenizer, args.prompt, **reading)
    with steer(net, vector, positions=args.positions):
        steered = complete(net, tokenizer, args.prompt, **reading)
    label = args.concept if args.concept is not None else f"latent {vector.metadata['latent']}"
    print(
        f"steering: {label}, alpha {args.alpha:g}, layer {vector.metadata['layer']}, "
        f"positions {args.positions}"
    )
    for prompt, before, after in zip(args.prompt, plain, steered, strict=True):
        print(f"\nprompt:    {prompt}")
        print(f"unsteered: {before}")
        print(f"steered:   {after}")


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_train,
    _add_encode,
    _add_embed,
    _add_steer,
    _add_synth,
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
