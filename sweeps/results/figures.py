"""The report's charts, each built twice from the same data by libraries that already draw it:
an interactive plotly figure for the HTML page and a matplotlib figure for the PNG file.

Optuna's visualization module draws the study-level charts; pandas/plotly express draw those
specific to schedules (accuracy by scheduler type and by optimizer, learning rate over the
epochs).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI

import matplotlib.figure
import optuna
import optuna.visualization as optuna_plotly
import optuna.visualization.matplotlib as optuna_matplotlib
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from matplotlib.axes import Axes

from lrsweep.sweeps.results.export import trial_lr_curve
from lrsweep.sweeps.results.ranking import trial_config
from lrsweep.sweeps.study.open import METRIC_NAME, OpenStudy


@dataclass(frozen=True)
class Chart:
    """One chart of the report: a file stem, a title, and the two renderings."""

    name: str
    title: str
    interactive: go.Figure
    static: matplotlib.figure.Figure


def optimization_history(study: optuna.Study) -> Chart:
    """Named by the study's metric, not Optuna's "Objective Value"."""
    return _optuna_chart(
        "history",
        "Optimization history (validation accuracy per trial, best so far)",
        study,
        functools.partial(optuna_plotly.plot_optimization_history, target_name=METRIC_NAME),
        functools.partial(optuna_matplotlib.plot_optimization_history, target_name=METRIC_NAME),
    )


def param_importances(study: optuna.Study) -> Chart:
    return _optuna_chart(
        "importances",
        "Parameter importances (Optuna's default evaluator)",
        study,
        optuna_plotly.plot_param_importances,
        optuna_matplotlib.plot_param_importances,
    )


def top_learning_curves(opened: OpenStudy, top: Sequence[optuna.trial.FrozenTrial]) -> Chart:
    """Validation accuracy per epoch of the top trials only: all trials would be unreadable."""
    frame = pd.DataFrame(
        {_label(opened, trial): pd.Series(trial.intermediate_values) for trial in top}
    )
    title = f"Validation accuracy per epoch, top {len(top)} trials"
    return _line_chart("intermediate_values", title, frame, "validation accuracy", logy=False)


def accuracy_by(study: optuna.Study, param: str, label: str) -> Chart:
    """Final accuracy of completed trials grouped by one categorical parameter (`scheduler`:
    the scheduler type; `optimizer`)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    frame = pd.DataFrame(
        [{param: t.params[param], "accuracy": t.value} for t in complete if param in t.params]
    )
    title = f"Final validation accuracy by {label} (completed trials)"
    interactive = px.box(frame, x=param, y="accuracy", points="all", title=title)
    axes = frame.boxplot(column="accuracy", by=param, grid=False, rot=30)
    axes.set_ylabel("validation accuracy")
    return Chart(f"accuracy_by_{param}", title, interactive, _finish(axes, title))


def top_lr_schedules(opened: OpenStudy, top: Sequence[optuna.trial.FrozenTrial]) -> Chart:
    """The learning rate each of the top schedules sets, epoch by epoch: the schedule itself."""
    curves = {_label(opened, trial): trial_lr_curve(opened, trial) for trial in top}
    title = f"Learning rate per epoch, top {len(top)} schedules"
    return _line_chart("lr_curves", title, pd.DataFrame(curves), "learning rate", logy=True)


def _label(opened: OpenStudy, trial: optuna.trial.FrozenTrial) -> str:
    """The same name for a trial in every chart: number, scheduler, optimizer unless SGD,
    accuracy."""
    config = trial_config(opened, trial)
    optimizer = "" if config.optimizer == "sgd" else f" {config.optimizer}"
    return f"#{trial.number} {config.schedule.kind}{optimizer} ({trial.value:.3f})"


def _line_chart(name: str, title: str, frame: pd.DataFrame, ylabel: str, *, logy: bool) -> Chart:
    """One line per column of `frame`, indexed by epoch."""
    frame = frame.rename_axis("epoch")
    interactive = px.line(frame, log_y=logy, labels={"value": ylabel, "variable": "trial"})
    interactive.update_layout(title=title)
    axes = frame.plot(logy=logy, ylabel=ylabel + (" (log)" if logy else ""))
    return Chart(name, title, interactive, _finish(axes, title))


def _optuna_chart(
    name: str,
    title: str,
    study: optuna.Study,
    plotly_plot: Callable[[optuna.Study], go.Figure],
    matplotlib_plot: Callable[[optuna.Study], Axes],
) -> Chart:
    with warnings.catch_warnings():
        # The matplotlib backend is marked experimental, and PED-ANOVA warns about every
        # conditional parameter seen in few trials: noise for a report.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)
        interactive = plotly_plot(study)
        axes = matplotlib_plot(study)
    interactive.update_layout(title=title)
    return Chart(name, title, interactive, _finish(axes, title))


def _finish(axes: Axes, title: str) -> matplotlib.figure.Figure:
    figure = axes.get_figure()
    assert isinstance(figure, matplotlib.figure.Figure)
    figure.suptitle("")  # pandas' grouped boxplot adds its own
    for side in ("left", "right"):
        axes.set_title("", loc=side)
    axes.set_title(title)
    figure.set_size_inches(9, 5.5)
    figure.tight_layout()
    return figure
