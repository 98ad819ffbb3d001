"""The pipeline's study: its configuration, where its files live, and the loops the stages run.

- :mod:`~ssae_core.study.config`: the ``study``, ``entangle`` and pipeline-only ``train`` keys;
- :mod:`~ssae_core.study.layout`: every data/ models/ metrics/ path, under a root passed in;
- :mod:`~ssae_core.study.sets`: the pair sets' embeddings as the study reads them;
- :mod:`~ssae_core.study.synthetic_training`: the synthetic runs;
- :mod:`~ssae_core.study.training`: the study's three training modes;
- :mod:`~ssae_core.study.budgets`: fair L1 budgets; :mod:`~ssae_core.study.usability`: the
  usable rule;
- :mod:`~ssae_core.study.selection`: the label-free choice of one SSAE grid cell per set;
- :mod:`~ssae_core.study.scores`: identifiability and steering-accuracy loops;
- :mod:`~ssae_core.study.behaviour`: the behaviour loop (steering the LM itself);
- :mod:`~ssae_core.study.report`: metrics/REPORT.md;
- :mod:`~ssae_core.study.plots`: the rows of every plot table.
"""
