"""`sweeps report`: one self-contained HTML page (plotly.js inlined, opens offline) and a PNG per
chart, for people who would rather look at a sweep than read its table."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd
import plotly.offline

from lrsweep.errors import require_positive
from lrsweep.sweeps.results import figures
from lrsweep.sweeps.results.ranking import top_trials
from lrsweep.sweeps.results.summary import format_summary, summarize
from lrsweep.sweeps.study.attributes import SELECTION_ATTR
from lrsweep.sweeps.study.open import OpenStudy
from lrsweep.sweeps.study.space import OPTIMIZER_PARAM, SCHEDULER_PARAM

PNG_DPI = 110


@dataclass(frozen=True)
class Report:
    """Where the report was written."""

    html: Path
    images: tuple[Path, ...]


def write_report(opened: OpenStudy, out_dir: Path, *, top_k: int) -> Report:
    """Draw every chart of the study into `out_dir` (created if needed)."""
    require_positive("--top", top_k)
    top = _with_chosen(opened, top_trials(opened, top_k))  # refuses an empty study first
    charts = [figures.optimization_history(opened.study)]
    if len(top) > 1:  # importances need two completed trials to compare
        charts.append(figures.param_importances(opened.study))
    charts += [
        figures.top_learning_curves(opened, top),
        figures.accuracy_by(opened.study, SCHEDULER_PARAM, "scheduler type"),
        figures.top_lr_schedules(opened, top),
    ]
    if opened.settings.space.records_optimizer:
        charts.append(figures.accuracy_by(opened.study, OPTIMIZER_PARAM, "optimizer"))
    out_dir.mkdir(parents=True, exist_ok=True)
    images = tuple(_save_png(chart, out_dir) for chart in charts)
    page = out_dir / "report.html"
    page.write_text(_page(opened, charts, top))
    return Report(page, images)


def _with_chosen(
    opened: OpenStudy, top: list[optuna.trial.FrozenTrial]
) -> list[optuna.trial.FrozenTrial]:
    """The top trials, and the robust choice's trial after them when it is not among them: the
    report shows the schedule `run` exported even when the study ranked it lower."""
    chosen = _chosen_number(opened)
    if chosen is None or any(trial.number == chosen for trial in top):
        return top
    return [*top, opened.study.trials[chosen]]


def _chosen_number(opened: OpenStudy) -> int | None:
    """The trial the recorded robust choice exported, if there is a record."""
    record = opened.study.user_attrs.get(SELECTION_ATTR) or {}
    return record.get("chosen_trial")


def _save_png(chart: figures.Chart, out_dir: Path) -> Path:
    path = out_dir / f"{chart.name}.png"
    chart.static.savefig(path, dpi=PNG_DPI)
    plt.close(chart.static)
    return path


def _page(
    opened: OpenStudy, charts: list[figures.Chart], top: list[optuna.trial.FrozenTrial]
) -> str:
    name = html.escape(opened.study.study_name)
    chosen = _chosen_number(opened)
    table = pd.DataFrame(
        [
            {
                "trial": f"{t.number} (chosen)" if t.number == chosen else t.number,
                "accuracy": t.user_attrs.get("validation_accuracy", t.value),
                **t.params,
            }
            for t in top
        ]
    ).to_html(index=False, na_rep="", float_format=lambda value: f"{value:.4g}")
    sections = "\n".join(
        f"<section><h2>{html.escape(chart.title)}</h2>"
        f"{chart.interactive.to_html(full_html=False, include_plotlyjs=False)}</section>"
        for chart in charts
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lrsweep report: {name}</title>
<script>{plotly.offline.get_plotlyjs()}</script>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}
table{{border-collapse:collapse}}td,th{{padding:2px 8px;border:1px solid #ccc}}</style>
</head><body>
<h1>lrsweep report: {name}</h1>
<pre>{html.escape(format_summary(summarize(opened)))}</pre>
<h2>Top trials, and the chosen one</h2>
{table}
{sections}
</body></html>
"""
