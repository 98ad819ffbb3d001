"""Stage `report`: metrics/REPORT.md, every table of the study, from the metrics files and the
run.json of every study run (training times); ssae_core/study/report.py writes the tables."""

from __future__ import annotations

from ssae_core.io import atomic_file
from ssae_core.lm.embed import EmbedConfig
from ssae_core.lm.loading import ModelConfig
from ssae_core.study.config import StudyConfig
from ssae_core.study.report import build_report, load_metrics, training_times
from stages.common import LAYOUT, load_section, run_stage


def main() -> None:
    study = load_section(StudyConfig, "study")
    model = load_section(ModelConfig, "model")
    layers = load_section(EmbedConfig, "embed").layer_list
    timings = training_times(study, LAYOUT, layers)
    text = build_report(study, model.name_or_path, load_metrics(LAYOUT), timings)
    with atomic_file(LAYOUT.report) as tmp:
        tmp.write_text(text)
    print(f"wrote {LAYOUT.relative(LAYOUT.report)}")


if __name__ == "__main__":
    run_stage(main)
