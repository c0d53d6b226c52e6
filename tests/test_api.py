"""The Python API as users call it: the README's example run as written, flags that round-trip
through a launched worker's argv, and the installed name that a user's own `trainer.py` cannot
shadow."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO, run_sweeps
from lrsweep import sweeps
from lrsweep.errors import InvalidInputError, LrsweepError
from lrsweep.sweeps.cli import build_parser
from lrsweep.sweeps.flags import from_flags
from lrsweep.sweeps.worker.launch import worker_argvs


def readme_python_example() -> str:
    """The first ```python block of the README's "Python API" section."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Python API", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's Python API section has no python example"
    return match.group(1)


@pytest.mark.parametrize(
    ("cores", "workers", "expected"), [(16, 1, 4), (16, 4, 3), (16, 8, 1), (2, 1, 1), (4, 4, 1)]
)
def test_proposal_processes_share_the_cores_gpu_workers_leave(
    cores: int, workers: int, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a GPU each worker gets an even share of the free cores (at least one, at most 4);
    on a CPU none, its workers use every core; an explicit count always wins."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    defaults = sweeps.WorkerOptions()
    assert defaults.proposal_processes_for(on_gpu=True, workers=workers) == expected
    assert defaults.proposal_processes_for(on_gpu=False, workers=workers) == 0
    explicit = sweeps.WorkerOptions(proposal_processes=2)
    assert explicit.proposal_processes_for(on_gpu=False, workers=workers) == 2
    with pytest.raises(InvalidInputError, match="--proposal-processes must be >= 0"):
        sweeps.WorkerOptions(proposal_processes=-1)


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path: Path, data_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", readme_python_example()],
        cwd=tmp_path,
        env={**os.environ, "IONOSPHERE_CSV": str(data_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout  # the example's lines, between what the library says itself
    for line in (
        r"trial \d+: \w+ in [\d.]+ s",
        r"\d+ more trials; stopped because the study has its 16 finished trials",
        r"exported trial \d+: lr [\d.e-]+, 50 epochs",
    ):
        assert re.search(f"^{line}$", printed, re.M), printed
    assert (tmp_path / "best.json").is_file() and (tmp_path / "best.yaml").is_file()
    opened = sweeps.open_study("api", str(tmp_path / "api.db"))
    finished = [trial for trial in opened.study.trials if trial.state.is_finished()]
    assert len(finished) == 16
    selection = yaml.safe_load((tmp_path / "best.yaml").read_text())["selection"]
    assert len(selection["candidates"]) == 3 and selection["seeds"] == 2, selection


def test_api_errors_are_the_commands_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="--seeds needs --top K"):
        sweeps.ChoiceOptions(seeds=2)
    with pytest.raises(LrsweepError, match="no study storage at"):
        sweeps.open_study("missing", str(tmp_path / "nothing.db"))
    assert not (tmp_path / "nothing.db").exists()


# "--" alone is argparse's end-of-options marker, dropped even from `--flag=--`: no command line
# can pass it as a value, so no column name of a launched worker can be it.
texts = st.text(alphabet="abcxyz_-0123456789", min_size=1, max_size=8).filter(lambda t: t != "--")
worker_options = st.builds(
    sweeps.WorkerOptions,
    target_trials=st.none() | st.integers(1, 10**6),
    timeout_s=st.none() | st.floats(0.001, 1e6),
    data=st.builds(
        sweeps.DataOptions,
        path=st.none() | st.just("/data/train.csv"),
        label_column=st.none() | texts,
        header=st.none() | st.booleans(),
    ),
    device=st.none() | st.sampled_from(["cpu", "cuda", "cuda:1"]),
    seed=st.none() | st.integers(0, 2**31 - 1),
    trials_per_batch=st.none() | st.integers(1, 4096),
    sampler_history=st.integers(10, 10_000),
    quiet=st.booleans(),
    threads=st.integers(1, 64),
    proposal_processes=st.none() | st.integers(0, 16),
)


@settings(max_examples=200, deadline=None)
@given(worker_options)
def test_worker_options_reach_a_launched_worker_unchanged(options: sweeps.WorkerOptions) -> None:
    """What `launch` hands a worker (`to_argv`) parses back to the very same options: a new
    field is a new flag on both sides at once."""
    args = build_parser().parse_args(["worker", "--study", "s", *options.to_argv()])
    assert from_flags(sweeps.WorkerOptions, vars(args)) == options


@pytest.mark.slow
def test_a_users_own_trainer_storage_and_sweeps_modules_stay_theirs(
    tmp_path: Path, data_path: Path
) -> None:
    """Training code often has a `trainer.py`: with `--model` the working directory is on the
    path, and the user's model imports its own `trainer`, `storage` and `sweeps`, not ours,
    while lrsweep keeps using its own."""
    for name in ("trainer", "storage", "sweeps"):
        (tmp_path / f"{name}.py").write_text(f"OWNER = 'user {name}'\n")
    (tmp_path / "nets.py").write_text(
        textwrap.dedent(
            """
            import storage
            import sweeps
            import trainer
            from torch import nn

            assert (trainer.OWNER, storage.OWNER, sweeps.OWNER) == (
                "user trainer", "user storage", "user sweeps"
            ), (trainer, storage, sweeps)


            def build(n_features, n_outputs):
                return nn.Sequential(nn.Linear(n_features, 8), nn.ReLU(), nn.Linear(8, n_outputs))
            """
        )
    )
    result = run_sweeps(
        "worker", "--study", "mine", "--storage", "mine.db", "--data", str(data_path),
        "--model", "nets:build", "--trials", "2", "--epochs", "2", "--folds", "1", "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "worker done: 2 trials" in result.stderr


def test_each_launched_worker_gets_the_options_its_own_seed_and_the_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What `launch` starts: every worker with the options, the sampler seed plus its index,
    the data file as an absolute path (it may start elsewhere), quiet under a progress bar."""
    monkeypatch.chdir(tmp_path)
    storage = sweeps.storage_settings("s.db", heartbeat_interval=3, grace_period=9)
    options = sweeps.WorkerOptions(target_trials=40, seed=7, data=sweeps.DataOptions("d.csv"))
    argvs = worker_argvs(storage, "the study", options, 3, quiet=True)
    parsed = [build_parser().parse_args(["worker", *argv]) for argv in argvs]
    assert [from_flags(sweeps.WorkerOptions, vars(args)) for args in parsed] == [
        replace(options, seed=seed, quiet=True, data=sweeps.DataOptions(str(tmp_path / "d.csv")))
        for seed in (7, 8, 9)
    ]
    for args in parsed:
        assert (args.study, args.heartbeat_interval, args.grace_period) == ("the study", 3, 9)
    unseeded = worker_argvs(storage, "s", replace(options, seed=None), 2, quiet=False)
    assert not any(arg.startswith(("--seed", "--quiet")) for argv in unseeded for arg in argv)
