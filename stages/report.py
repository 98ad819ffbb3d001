"""Stage `report`: metrics/REPORT.md (every table of the study, the paper's claims decided) and
metrics/summary.json (the headline numbers DVC shows), from the metrics files and the run.json
of every study run; ssae_core/study/report.py and summary.py write them."""

from __future__ import annotations

from ssae_core.io import atomic_file, write_json
from ssae_core.lm.embed import EmbedConfig
from ssae_core.lm.loading import ModelConfig
from ssae_core.study.config import ReportConfig, StudyConfig
from ssae_core.study.plots import render_figures
from ssae_core.study.report import build_report, load_metrics, training_times
from ssae_core.study.summary import headline_metrics
from stages.common import LAYOUT, ROOT, load_section, run_stage


def main() -> None:
    study, config = load_section(StudyConfig, "study"), load_section(ReportConfig, "report")
    model = load_section(ModelConfig, "model")
    timings = training_times(study, LAYOUT, load_section(EmbedConfig, "embed").layer_list)
    metrics = load_metrics(LAYOUT)
    figures = render_figures(LAYOUT, ROOT / "dvc.yaml")
    shown = [(title, path.relative_to(LAYOUT.report.parent).as_posix()) for title, path in figures]
    text = build_report(study, config, model.name_or_path, metrics, timings, shown)
    with atomic_file(LAYOUT.report) as tmp:
        tmp.write_text(text)
    write_json(headline_metrics(config, metrics), LAYOUT.metrics("summary"))
    print(f"wrote {LAYOUT.relative(LAYOUT.report)} and metrics/summary.json")


if __name__ == "__main__":
    run_stage(main)
