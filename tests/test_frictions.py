"""The everyday frictions a newcomer hit (issue 23), each through the command line."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pandas as pd
import pytest

from conftest import REPO, assert_refused, opened_storage, refused_with_imports, run_sweeps
from lrsweep.sweeps.cli import build_parser
from lrsweep.sweeps.study.settings import StudySettings


def test_a_mistyped_label_column_names_the_closest_columns(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    data = tmp_path / "digits.csv"
    frame = pd.read_csv(sklearn_csv("wine")).rename(columns={"target": "cultivar"})
    frame.to_csv(data, index=False)
    result = run_sweeps(
        "run", "--data", str(data), "--label-column", "cultivr", "--trials", "2", cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: data file {data} has no column 'cultivr' (did you mean 'cultivar'?)"
    ]
    assert not (tmp_path / "lrsweep.db").exists()


def test_a_new_study_names_its_metric_validation_accuracy(tmp_path: Path, data_path: Path) -> None:
    """Optuna's charts and the dashboard label the value with the study's metric name."""
    worker = run_sweeps(
        "worker", "--study", "m", "--storage", str(tmp_path / "m.db"), "--data", str(data_path),
        "--trials", "2", "--epochs", "2", "--folds", "1", "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'm.db'}") as storage:
        study = optuna.load_study(study_name="m", storage=storage)
        assert study.metric_names == ["validation accuracy"]


@pytest.mark.slow
def test_run_says_it_resumes_and_exports_a_finished_study_without_retraining(
    tmp_path: Path, data_path: Path
) -> None:
    flags = ("--data", str(data_path), "--epochs", "3", "--folds", "1", "--quiet")
    first = run_sweeps("run", *flags, "--trials", "4", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "resuming" not in first.stderr
    resumed = run_sweeps("run", *flags, "--trials", "6", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming study 'lrsweep' with 4 finished trials (target 6)" in resumed.stderr
    chosen = json.loads((tmp_path / "best.json").read_text())
    (tmp_path / "best.json").unlink()

    again = run_sweeps("run", *flags, "--trials", "6", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (
        "study 'lrsweep' already has 6 finished trials (target 6): nothing to train"
        in again.stderr
    )
    assert "robust choice" not in again.stderr  # nothing retrained
    assert "the study's recorded choice" in again.stdout
    exported = json.loads((tmp_path / "best.json").read_text())
    assert exported["source"] == chosen["source"]
    assert exported["selection"] == chosen["selection"]
    with opened_storage(f"sqlite:///{tmp_path / 'lrsweep.db'}") as storage:
        assert len(optuna.load_study(study_name="lrsweep", storage=storage).trials) == 6

    other = run_sweeps("run", *flags, "--trials", "6", "--epochs", "4", cwd=tmp_path)
    assert_refused(other, "epochs")  # checked against the study as a joining worker is
    anew = run_sweeps("run", *flags, "--trials", "6", "--top", "2", "--seeds", "1", cwd=tmp_path)
    assert anew.returncode == 0, anew.stderr
    assert "nothing to train; choosing anew (--top/--seeds)" in anew.stderr
    assert "robust choice" in anew.stdout + anew.stderr
    assert "worker" not in anew.stderr  # no worker was launched for a finished study
    assert json.loads((tmp_path / "best.json").read_text())["selection"]["seeds"] == 1


def test_a_finished_study_without_a_recorded_choice_exports_its_best_and_says_so(
    tmp_path: Path, data_path: Path
) -> None:
    flags = ("--data", str(data_path), "--epochs", "2", "--folds", "1", "--quiet")
    worker = run_sweeps("worker", "--study", "lrsweep", *flags, "--trials", "3", cwd=tmp_path)
    assert worker.returncode == 0, worker.stderr
    run = run_sweeps("run", *flags, "--trials", "3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert (
        "note: the study recorded no robust choice for these trials: its best trial is "
        "exported as it is (--top K retrains the best K)" in run.stderr
    )
    with opened_storage(f"sqlite:///{tmp_path / 'lrsweep.db'}") as storage:
        best = optuna.load_study(study_name="lrsweep", storage=storage).best_trial.number
    assert json.loads((tmp_path / "best.json").read_text())["source"]["trial_number"] == best


@pytest.mark.slow
def test_train_reads_the_file_the_sweep_read_or_names_it_when_it_is_gone(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    """Without --data, `sweeps train` uses the export's `data.path`, not ionosphere, and
    refuses it when its values changed since."""
    data = (tmp_path / "wine.csv").resolve()
    data.write_bytes(sklearn_csv("wine").read_bytes())
    swept = run_sweeps(
        "run", "--data", str(data), "--trials", "2", "--epochs", "2", "--folds", "1", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert json.loads((tmp_path / "best.json").read_text())["data"]["path"] == str(data)
    trained = run_sweeps("train", "--config", "best.json", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    report = json.loads(trained.stdout)
    assert report["train_rows"] + report["test_rows"] == 178  # wine's rows
    frame = pd.read_csv(data)
    frame.iloc[:-1].to_csv(data, index=False)  # a row fewer
    changed = run_sweeps("train", "--config", "best.json", cwd=tmp_path)
    assert changed.returncode == 2
    assert re.fullmatch(
        f"error: {re.escape(str(data))}, which best.json was swept on, has changed since "
        r"\(sha256 of values \w{12} != \w{12}\): give --data CSV\n",
        changed.stderr,
    )
    data.rename(tmp_path / "moved.csv")
    gone = run_sweeps("train", "--config", "best.json", cwd=tmp_path)
    assert gone.returncode == 2
    assert gone.stderr.strip().splitlines() == [
        f"error: best.json was swept on {data}, which is not here: give --data CSV"
    ]


def _readme_synopsis() -> dict[str, set[str]]:
    """The flags the README's command-line block gives each command, its groups expanded."""
    text = (REPO / "README.md").read_text()
    block = text.split("## Command line\n\n```\n", 1)[1].split("```", 1)[0]
    groups: dict[str, set[str]] = {}
    commands: dict[str, set[str]] = {}
    current: set[str] = set()
    for line in block.splitlines():
        if match := re.match(r"sweeps (\w+)", line):
            current = commands.setdefault(match.group(1), set())
        elif match := re.match(r"([A-Z]+):", line):
            current = groups.setdefault(match.group(1), set())
        current.update(re.findall(r"--[a-z][a-z-]*", line))
        current.update(f"@{name}" for name in re.findall(r"\[([A-Z]+)\]", line))
    for flags in commands.values():
        for group in [flag[1:] for flag in flags if flag.startswith("@")]:
            flags |= groups[group]
    return commands


def test_the_readme_synopsis_lists_every_option_of_every_command() -> None:
    commands = next(
        action
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ).choices
    synopsis = _readme_synopsis()
    assert set(synopsis) == set(commands)
    for name, parser in commands.items():
        flags = {
            flag
            for action in parser._actions
            if action.help != argparse.SUPPRESS
            for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"
        }
        assert flags - synopsis[name] == set(), f"sweeps {name}: the README's synopsis omits them"


@pytest.mark.parametrize("command", ["run", "worker", "launch"])
def test_a_typo_in_a_space_file_is_refused_before_torch_is_imported(
    command: str, tmp_path: Path, data_path: Path
) -> None:
    """Refused in about a second, not after the data, the study and torch (11-14 s before)."""
    space = tmp_path / "space.toml"
    space.write_text("[ranges]\nlrr = [0.1, 0.2]\n")
    extra = ("--study", "s", "--workers", "1") if command == "launch" else ("--study", "s")
    lines, imported = refused_with_imports(
        command, *extra, "--storage", str(tmp_path / "s.db"), "--data", str(data_path),
        "--space", str(space), cwd=tmp_path,
    )  # fmt: skip
    assert lines == [
        f"error: search space {space}: unknown search-space key 'lrr'; did you mean 'lr'?"
    ]
    assert "torch" not in imported and "lrsweep.trainer.training" not in imported
    assert not (tmp_path / "s.db").exists()


def test_trials_that_learned_nothing_are_labelled_at_chance(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    """Wine's raw features (up to 1680) at lrs near 1: trials stuck at the most common class
    are marked, the others not, and status counts them."""
    space = tmp_path / "space.toml"
    space.write_text('schedulers = ["constant"]\n[ranges]\nlr = [0.3, 1.0]\n')
    common = ("--study", "c", "--storage", str(tmp_path / "c.db"))
    worker = run_sweeps(
        "worker", *common, "--data", str(sklearn_csv("wine")), "--space", str(space),
        "--trials", "6", "--epochs", "3", "--folds", "1", "--no-baselines", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    with opened_storage(f"sqlite:///{tmp_path / 'c.db'}") as storage:
        study = optuna.load_study(study_name="c", storage=storage)
        trials = [t for t in study.trials if "validation_accuracy" in t.user_attrs]
        rows = StudySettings.of_study(study).validation_rows
    labels = pd.read_csv(sklearn_csv("wine"))["target"].to_numpy()[list(rows)]
    chance = max((labels == label).mean() for label in set(labels))
    marked = {t.number for t in trials if t.user_attrs.get("at_chance")}
    assert marked == {
        t.number for t in trials if t.user_attrs["validation_accuracy"] <= chance + 1e-9
    }
    assert marked  # the case it is for happened
    status = run_sweeps("status", *common, cwd=tmp_path)
    assert f"{len(marked)} at chance, no better than the most common class" in status.stdout


def test_each_batch_line_says_the_best_so_far_and_the_time_left(
    tmp_path: Path, data_path: Path
) -> None:
    worker = run_sweeps(
        "worker", "--study", "p", "--storage", str(tmp_path / "p.db"), "--data", str(data_path),
        "--trials", "6", "--trials-per-batch", "2", "--epochs", "2", "--folds", "1",
        "--no-baselines", "--pruner", "none", cwd=tmp_path,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    lines = [line for line in worker.stderr.splitlines() if line.startswith("trials ")]
    with opened_storage(f"sqlite:///{tmp_path / 'p.db'}") as storage:
        values = {
            t.number: t.value for t in optuna.load_study(study_name="p", storage=storage).trials
        }
    assert len(lines) == 3
    for batch, line in enumerate(lines):
        pattern = r"batch best ([0-9.]+) .*; best so far ([0-9.]+); (\d) of 6 finished"
        match = re.search(pattern + r"(, about \d+ s left)?", line)
        assert match, line
        finished = int(match.group(3))
        assert finished == 2 * (batch + 1)
        assert float(match.group(1)) == pytest.approx(
            max(values[2 * batch], values[2 * batch + 1]), abs=1e-4
        )
        assert float(match.group(2)) == pytest.approx(
            max(values[n] for n in range(finished)), abs=1e-4
        )
        assert match.group(4)  # a pace, measured from the first batch on


@pytest.mark.slow
def test_the_robust_choice_says_the_time_left_and_draws_a_bar_on_a_terminal(
    tmp_path: Path, data_path: Path
) -> None:
    """Lines in a log (each seed, the time left); tqdm's bar over its epochs on a terminal;
    and `run`'s last line counts the choice's time beside the sweep's."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    flags = ("--data", str(data_path), "--epochs", "4", "--folds", "1")
    swept = run_sweeps("run", *flags, "--trials", "6", "--seeds", "2", "--quiet", cwd=tmp_path)
    assert swept.returncode == 0, swept.stderr
    assert re.search(
        r"robust choice: seed 1 of 2 retrained \(\d+ candidates\), [\d.]+ s; about \d+ s left "
        r"\(1 more seed\)\n.*robust choice: seed 2 of 2 retrained .*; done",
        swept.stderr,
        re.DOTALL,
    ), swept.stderr
    assert re.search(
        r"sweep wall time [\d.]+s; choice and export [\d.]+s; [\d.]+s in all", swept.stdout
    )
    leader, follower = pty.openpty()
    rows_columns = struct.pack("HHHH", 24, 100, 0, 0)  # tqdm hides a bar on a 0-row terminal
    fcntl.ioctl(follower, termios.TIOCSWINSZ, rows_columns)
    process = subprocess.Popen(
        [sys.executable, "-m", "lrsweep.sweeps", "export", "--study", "lrsweep", "--top", "3",
         "--seeds", "2", "--data", str(data_path)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=follower, text=True,
    )  # fmt: skip
    os.close(follower)
    terminal = b""
    while chunk := _read_or_end(leader):
        terminal += chunk
    assert process.wait(timeout=120) == 0
    os.close(leader)
    bar = re.findall(rb"robust choice: +(\d+)%\|[^\r\n]*\| (\d+)/(\d+)", terminal)
    assert bar and bar[-1] == (b"100", b"8", b"8"), terminal  # 2 seeds x 4 epochs


def _read_or_end(fd: int) -> bytes:
    """What a pseudo-terminal's other end wrote; b"" once it is closed."""
    import os

    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the writer has gone
        return b""
