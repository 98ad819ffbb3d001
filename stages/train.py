"""Stage `train_synthetic`: for every synthetic setting and its entangled variant, and for each
method (ssae, aff), one stacked run (all seeds) per latent size m = factor x n
(train.latent_factors), train.workers runs at a time; params.yaml `train`."""

from __future__ import annotations

from ssae_core.study.config import ENTANGLED_SUFFIX, load_synthetic_data, load_synthetic_runs
from ssae_core.study.synthetic_training import SyntheticJob, train_synthetic_jobs
from stages.common import LAYOUT, load_params, run_stage, stage_parser

METHODS = ("ssae", "aff")


def main() -> None:
    stage_parser("stages.train", __doc__).parse_args()
    _, settings = load_synthetic_data(load_params("synthetic"))
    runs = {method: load_synthetic_runs(load_params("train"), method) for method in METHODS}
    train_synthetic_jobs(
        [
            SyntheticJob(
                LAYOUT.synthetic(name), LAYOUT.synthetic_models / name / method, runs[method]
            )
            for setting in settings
            for name in (setting, f"{setting}{ENTANGLED_SUFFIX}")
            for method in METHODS
        ]
    )


if __name__ == "__main__":
    run_stage(main)
