"""Stage `entangle`: the robustness variant of one LLM embedding set at one layer: one seeded,
dense invertible D x D map (params.yaml `entangle`) applied to z and z~ ->
data/entangled/layer-L/NAME.parquet."""

from __future__ import annotations

from ssae_core.io import load_embeddings, save_embeddings
from ssae_core.lm.layers import parse_layer
from ssae_core.study.config import EntangleConfig
from ssae_core.synthetic import entangle
from stages.common import LAYOUT, load_section, run_stage, stage_parser


def main() -> None:
    parser = stage_parser("stages.entangle", __doc__)
    parser.add_argument("name", help="an embedding set in data/embeddings")
    parser.add_argument("layer", type=parse_layer, help="a layer of embed.layers (L or final)")
    args = parser.parse_args()
    config = load_section(EntangleConfig, "entangle")
    table = load_embeddings(LAYOUT.embeddings(args.name, args.layer))
    mixed = entangle(table, seed=config.seed, max_condition=config.max_condition)
    save_embeddings(mixed, LAYOUT.entangled(args.name, args.layer))
    print(f"entangle: {args.name} at layer {args.layer}: {len(mixed)} pairs, d={mixed.dim}")


if __name__ == "__main__":
    run_stage(main)
