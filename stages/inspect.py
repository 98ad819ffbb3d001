"""Stage `inspect`: the inspection page (what each latent does; ssae_core/evaluation/inspection.py)
of the selected SSAE run of each set of params.yaml `inspect.sets`, at each of `inspect.layers`
-> metrics/inspect/SET_layer-L/{index.html,summary.md,inspection.json} and
metrics/inspect/README.md (which got a page, which had no usable cell)."""

from __future__ import annotations

from ssae_core.study.config import StudyConfig
from ssae_core.study.inspection import inspect_study, load_inspect_config
from stages.common import LAYOUT, load_params, load_section, run_stage


def main() -> None:
    config = load_inspect_config(load_params("inspect"))
    study = load_section(StudyConfig, "study")
    out = inspect_study(study, LAYOUT, config)
    print(f"inspect: wrote {LAYOUT.relative(out)}/README.md")


if __name__ == "__main__":
    run_stage(main)
