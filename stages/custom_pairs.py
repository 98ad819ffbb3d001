"""Stage `custom_pairs`: a pair set of your own, params.yaml `pairs.custom.NAME` (a CSV, TSV,
JSON Lines, Parquet file or datasets folder; ssae_core/datasets/custom.py) ->
data/pairs/NAME.parquet. Add NAME to study.sets to run it through the study."""

from __future__ import annotations

from ssae_core.datasets.custom import custom_pair_configs, write_custom_pairs
from stages.common import LAYOUT, load_params, run_stage, stage_parser


def main() -> None:
    params = load_params("pairs") or {}
    configs = custom_pair_configs(params.get("custom"), "params.yaml:pairs.custom")
    parser = stage_parser("stages.custom_pairs", __doc__)
    parser.add_argument("name", choices=list(configs), help="a key of pairs.custom")
    name = parser.parse_args().name
    out = LAYOUT.pairs(name)
    print(write_custom_pairs(configs[name], out, name=name).summary(out))


if __name__ == "__main__":
    run_stage(main)
