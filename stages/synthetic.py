"""Stage `synthetic`: write synth(n, k) and its entangled variant as embedding tables."""

from __future__ import annotations

from ssae_core.io import save_embeddings
from ssae_core.study.config import ENTANGLED_SUFFIX, load_synthetic_data
from ssae_core.synthetic import entangle, make_synthetic
from stages.common import LAYOUT, load_params, run_stage, stage_parser


def main() -> None:
    data, tables = load_synthetic_data(load_params("synthetic"))
    parser = stage_parser("stages.synthetic", __doc__)
    parser.add_argument("name", choices=list(tables), help="a key of synthetic.settings")
    name = parser.parse_args().name
    table = make_synthetic(tables[name])
    save_embeddings(table, LAYOUT.synthetic(name))
    mixed = entangle(table, seed=data.entangle_seed)
    save_embeddings(mixed, LAYOUT.synthetic(f"{name}{ENTANGLED_SUFFIX}"))
    print(f"{name}: {len(table)} pairs, d={table.dim}, n={tables[name].num_concepts}")


if __name__ == "__main__":
    run_stage(main)
