"""The language-model side: loading, layers, tokens, extraction, steering hooks, vector files.

- :mod:`~ssae_core.lm.loading`: where a model comes from (the embedded SmolLM2, a hub id, a
  folder), GGUF conversion, devices and dtypes;
- :mod:`~ssae_core.lm.layers`: the one meaning of "layer" (block ``L`` or ``final``);
- :mod:`~ssae_core.lm.tokens`: prompt templates, tokenisation, left padding, greedy completion;
- :mod:`~ssae_core.lm.engines`: where extraction runs: this process, or Ray Data actors;
- :mod:`~ssae_core.lm.embed`: pair tables -> embedding shards;
- :mod:`~ssae_core.lm.steer`: :class:`SteeringVector` (with arithmetic) and the hooks that steer
  the LM while it runs (add, project out, add keeping the norm);
- :mod:`~ssae_core.lm.vector_files`: safetensors and llama.cpp files, vectors of trained models.
"""
