"""Stage `train_synthetic`: for one synthetic setting and method, one stacked run (all seeds) per
latent size m = factor x n (train.latent_factors) of its table and of its entangled variant;
params.yaml `train`."""

from __future__ import annotations

from ssae_core.study.config import ENTANGLED_SUFFIX, load_synthetic_runs
from ssae_core.study.synthetic_training import train_synthetic
from stages.common import LAYOUT, load_params, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.train", __doc__)
    parser.add_argument("setting", help="a key of params.yaml synthetic.settings")
    parser.add_argument("method", choices=("ssae", "aff"))
    args = parser.parse_args()
    runs = load_synthetic_runs(load_params("train"), args.method)
    for name in (args.setting, f"{args.setting}{ENTANGLED_SUFFIX}"):
        train_synthetic(LAYOUT.synthetic(name), LAYOUT.synthetic_models / name / args.method, runs)


if __name__ == "__main__":
    run_stage(main)
