"""Stage `train_study` (and `train_entangled`, `train_overcomplete`): the LLM study's training
of one pair set at one layer; the modes are described in ssae_core/study/training.py.
`train_entangled` first writes the set's entangled table (params.yaml `entangle`):
data/entangled/layer-L/NAME.parquet."""

from __future__ import annotations

from ssae_core.lm.layers import parse_layer
from ssae_core.study.config import EntangleConfig, StudyConfig
from ssae_core.study.sets import write_entangled
from ssae_core.study.training import STUDY_MODES
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    study = load_section(StudyConfig, "study")
    parser = stage_parser("stages.train_study", __doc__)
    parser.add_argument("set", choices=study.sets, help="a pair set of study.sets")
    parser.add_argument("layer", type=parse_layer, help="a layer of embed.layers (L or final)")
    modes = parser.add_mutually_exclusive_group()
    for flag in STUDY_MODES:
        modes.add_argument(flag, dest="mode", action="store_const", const=flag)
    args = parser.parse_args()
    at = LAYOUT.at(args.layer)
    if args.mode == "--entangled":
        mixed = write_entangled(load_section(EntangleConfig, "entangle"), at, args.set)
        print(f"entangle: {args.set} at layer {args.layer}: {len(mixed)} pairs, d={mixed.dim}")
    STUDY_MODES[args.mode or "--grid"](study, at, args.set)


if __name__ == "__main__":
    run_stage(main)
