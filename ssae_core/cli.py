"""The ``ssae`` command-line tool: train, encode, embed, synth.

Every subcommand reports bad input as one line ``error: ...`` and exits with status 2, leaving no
partial output behind.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence

from ssae_core import __version__
from ssae_core.errors import InputError

EXAMPLES = """\
examples:
  ssae synth data.parquet --concepts 5 --max-changes 3
  ssae train data.parquet --out runs/demo --latent-dim 5 --seeds 0,1,2
  ssae encode runs/demo/seed-0 data.parquet --out codes.parquet
"""


class _Parser(argparse.ArgumentParser):
    """Usage mistakes as one line (``error: ...; see ssae train --help``), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message}; see `{self.prog} --help`\n")


def add_device_arguments(p: argparse.ArgumentParser) -> None:
    """--device and --dtype, shared by the commands that run a language model."""
    p.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda or cuda:N (default: %(default)s: cuda when available)",
    )
    p.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="auto: bfloat16 on CUDA, float32 on CPU (default: %(default)s)",
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


def _add_train(sub: argparse._SubParsersAction) -> None:
    from ssae_core.train import TrainConfig

    d = TrainConfig()
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
    p.add_argument(
        "--out",
        required=True,
        help="run folder to write: a new folder, or an earlier `ssae train` run (replaced once "
        "the new one is complete); nothing else is ever replaced",
    )
    p.add_argument(
        "--method",
        choices=("ssae", "aff"),
        default=d.method,
        help="ssae: L1-constrained (the paper); aff: unconstrained affine baseline "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--latent-dim",
        type=int,
        default=d.latent_dim,
        help="number of latents m (default: the number of concepts named in the table)",
    )
    p.add_argument(
        "--seeds",
        type=_seeds,
        default=d.seeds,
        help="comma-separated seeds, trained stacked (default: 0,1,2,3,4)",
    )
    p.add_argument(
        "--sparsity",
        type=_sparsities,
        default=d.sparsity,
        help="L1 budget eps on mean ||h||_1 / x_rms; a comma list stacks one member per "
        "value and seed (default: %(default)s)",
    )
    p.add_argument(
        "--normalize",
        choices=("global", "layer", "none"),
        default=d.normalize,
        help="input normalisation of the shifts (default: %(default)s)",
    )
    p.add_argument(
        "--epochs", type=int, default=d.epochs, help="maximum epochs (default: %(default)s)"
    )
    p.add_argument(
        "--min-steps",
        type=int,
        default=d.min_steps,
        help="at least this many optimiser steps (raises the epoch cap for small "
        "tables; default: %(default)s)",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many epochs without held-out improvement once every "
        "budget is met; 0 disables (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="default: %(default)s")
    p.add_argument(
        "--lr", type=float, default=d.lr, help="primal learning rate (default: %(default)s)"
    )
    p.add_argument(
        "--dual-lr",
        type=float,
        default=d.dual_lr,
        help="multiplier learning rate, keep <= lr/3 (default: %(default)s)",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        default=d.val_fraction,
        help="fraction of training shifts held out for the stopping rule (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=d.threads,
        help="torch threads while training; 0: torch's default (default: %(default)s)",
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

    if args.latent_dim < 0:
        raise InputError(f"--latent-dim {args.latent_dim}: must be at least 1")
    cfg = TrainConfig(
        method=args.method,
        latent_dim=args.latent_dim,
        seeds=args.seeds,
        sparsity=args.sparsity,
        normalize=args.normalize,
        epochs=args.epochs,
        min_steps=args.min_steps,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        dual_lr=args.dual_lr,
        val_fraction=args.val_fraction,
        threads=args.threads,
    )
    result = train_run(
        args.embeddings,
        args.out,
        cfg,
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

    count = encode_table(args.model_dir, args.embeddings, args.out, rescale=args.rescale)
    print(f"wrote codes of {count} pairs to {args.out}")


def _add_synth(sub: argparse._SubParsersAction) -> None:
    from ssae_core.synthetic import VALUE_DISTRIBUTIONS, SynthConfig

    d = SynthConfig(num_concepts=3, max_changes=2)
    p = sub.add_parser(
        "synth",
        help="write a synthetic embedding table with known concept shifts",
        description="Synthetic data synth(n, k): z ~ N(0, I), z_tilde = z + A d_c with a dense "
        "Gaussian A and sparse d_c (1..k non-zero of n). The true d_c is stored in 'shift'.",
    )
    p.add_argument(
        "out", help="Parquet file to write: a new file, or an earlier `ssae synth` output"
    )
    p.add_argument("--concepts", type=int, required=True, help="n, number of concepts")
    p.add_argument("--max-changes", type=int, required=True, help="k, most concepts changed")
    p.add_argument("--dim", type=int, default=d.dim, help="embedding width (default: %(default)s)")
    p.add_argument("--pairs", type=int, default=d.num_pairs, help="default: %(default)s")
    p.add_argument(
        "--values",
        choices=VALUE_DISTRIBUTIONS,
        default=d.values,
        help="distribution of non-zero shift values (default: %(default)s)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=d.noise,
        help="additive noise std relative to the mean shift norm (default: %(default)s)",
    )
    p.add_argument(
        "--entangle",
        action="store_true",
        help="apply a dense invertible D x D map to z and z_tilde",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="default: %(default)s")
    p.set_defaults(func=_run_synth)


def _run_synth(args: argparse.Namespace) -> None:
    from ssae_core.synthetic import SynthConfig, write_synthetic

    cfg = SynthConfig(
        num_concepts=args.concepts,
        max_changes=args.max_changes,
        dim=args.dim,
        num_pairs=args.pairs,
        values=args.values,
        noise=args.noise,
        seed=args.seed,
    )
    table = write_synthetic(cfg, args.out, entangled=args.entangle)
    print(f"wrote {len(table)} pairs (d={table.dim}, n={args.concepts}) to {args.out}")


def _add_embed(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "embed",
        help="extract last-token LM embeddings of a pair table into Parquet shards",
        description="Embed every distinct text of a pair table with a causal LM (last real "
        "token, a chosen layer) and write embedding shards; an interrupted run resumes.",
        epilog="example:\n  ssae embed data/pairs/lang.parquet --out data/embeddings/lang",
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
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="block index whose output residual stream is read (default: the final "
        "hidden state after the model's final norm)",
    )
    p.add_argument(
        "--batch-size", type=int, default=32, help="texts per forward pass (default: %(default)s)"
    )
    add_device_arguments(p)
    p.add_argument(
        "--template",
        default=None,
        help="prompt template with {text}, e.g. 'Q: {text}' (default: none)",
    )
    p.add_argument(
        "--shard-rows", type=int, default=2048, help="pairs per shard (default: %(default)s)"
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
    from ssae_core.embed import extract_embeddings

    out = extract_embeddings(
        args.pairs,
        args.out,
        model=args.model,
        revision=args.revision,
        layer=args.layer,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        template=args.template,
        shard_rows=args.shard_rows,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
        progress=not args.quiet,
    )
    print(f"wrote embeddings to {out}")


def _add_steer(sub: argparse._SubParsersAction) -> None:
    from ssae_core.steer import add_steer_parser

    add_steer_parser(sub)


SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_train,
    _add_encode,
    _add_embed,
    _add_steer,
    _add_synth,
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
