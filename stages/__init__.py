"""The DVC stage scripts: one per stage of dvc.yaml, each run as ``python -m stages.NAME``."""
