"""Does the service stay ahead of a hand-written Optuna loop as tables grow? Measured from outside.

For each size: a `make_classification` table (40 features, 20 informative, random_state 0) of
that many rows to sweep plus a quarter as many held out, written to CSV; then, side by side on
the same files, with the same trials and epochs:

- `sweeps run` with its defaults (folds and robust choice chosen from the data),
- `sweeps run --folds 1 --top 1` (one split, the best trial exported as it is),
- the hand-written loop (`bench/handwritten.py`, 2 processes, SQLite), its best trial exported.

Each export is scored on the held-out rows with `sweeps train --seeds S --test-csv` (trained on
all swept rows). Seconds are wall time end to end (export included); models/s counts full
models (epochs trained over every trial, fold and retraining, divided by the epochs per
trial); peak memory is the largest summed RSS of the command's process tree.

    python -m bench.scaling [--rows 351 2000 20000 100000] [--trials 50] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import optuna
import pandas as pd
from sklearn.datasets import make_classification
from sklearn.model_selection import train_test_split

from bench.commands import run_sweeps
from lrsweep.sweeps.study.settings import StudySettings
from lrsweep.trainer.data import cached_dataset

REPO = Path(__file__).resolve().parent.parent
ARMS = ("defaults", "one split", "hand-written")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True)
class Measured:
    """One arm at one size."""

    seconds: float
    trials: int
    models: float
    peak_mib: float
    held_out: tuple[float, float]  # mean and sd over training seeds
    choice: str  # how the export was chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[351, 2000, 20000, 100000])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=3, help="held-out training seeds")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    print(
        f"| rows | arm | seconds | trials/s | models/s | peak MiB | held-out accuracy "
        f"({args.seeds} seeds) | export |\n|---|---|---|---|---|---|---|---|"
    )
    for rows in args.rows:
        with TemporaryDirectory() as folder:
            work = Path(folder)
            train_csv, held_csv = write_table(rows, work)
            for arm in args.arms:
                measured = run_arm(arm, work / arm.replace(" ", "_"), train_csv, held_csv, args)
                mean, sd = measured.held_out
                print(
                    f"| {rows:,} | {arm} | {measured.seconds:.1f} | "
                    f"{measured.trials / measured.seconds:.2f} | "
                    f"{measured.models / measured.seconds:.2f} | {measured.peak_mib:.0f} | "
                    f"{mean:.4f} ± {sd:.4f} | {measured.choice} |",
                    flush=True,
                )


def write_table(rows: int, work: Path) -> tuple[Path, Path]:
    """`rows` rows to sweep and `rows // 4` held out, stratified, with a header and `label`."""
    held = max(rows // 4, 50)
    x, y = make_classification(
        n_samples=rows + held, n_features=40, n_informative=20, random_state=0
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])]).assign(label=y)
    swept, held_out = train_test_split(frame, test_size=held, stratify=y, random_state=0)
    paths = work / "train.csv", work / "held.csv"
    for part, path in zip((swept, held_out), paths, strict=True):
        part.to_csv(path, index=False)
    return paths


def run_arm(
    arm: str, work: Path, train_csv: Path, held_csv: Path, args: argparse.Namespace
) -> Measured:
    work.mkdir()
    data = ("--data", str(train_csv), "--label-column", "label")
    if arm == "hand-written":
        optuna.create_study(storage=_url(work), study_name="lrsweep", direction="maximize")
        commands = [
            [sys.executable, "-m", "bench.handwritten", "--storage", _url(work), "--study",
             "lrsweep", "--trials", str(args.trials), "--seed", str(seed), "--data",
             str(train_csv)]
            for seed in range(2)
        ]  # fmt: skip
    else:
        single = ("--folds", "1", "--top", "1") if arm == "one split" else ()
        commands = [
            [sys.executable, "-m", "lrsweep.sweeps", "run", *data, "--trials", str(args.trials),
             "--storage", _url(work), "--out", "best.json", "--quiet", *single]
        ]  # fmt: skip
    seconds, peak_mib = run_tracked(commands, work)
    study = optuna.load_study(study_name="lrsweep", storage=_url(work))
    if arm == "hand-written":  # its best trial as the config it trained, as it sets it up
        dataset = cached_dataset(str(train_csv))
        settings = StudySettings(data_sha256=dataset.sha256).fixed_at_creation(dataset)
        best = settings.train_config(study.best_trial.params)
        (work / "best.json").write_text(json.dumps(best.to_json_dict()))
    else:
        settings = StudySettings.of_study(study)
    document = json.loads((work / "best.json").read_text())
    report = json.loads(
        run_sweeps(work, "train", "--config", "best.json", *data, "--test-csv", str(held_csv),
                "--seeds", str(args.seeds))
    )  # fmt: skip
    return Measured(
        seconds=seconds,
        trials=len([t for t in study.trials if t.state.is_finished()]),
        models=_models_trained(study, settings, document, folds_per_trial=arm != "hand-written"),
        peak_mib=peak_mib,
        held_out=(report["mean_accuracy"], report.get("std_accuracy", 0.0)),
        choice=_choice(document),
    )


def _models_trained(
    study: optuna.Study,
    settings: StudySettings,
    document: dict[str, object],
    folds_per_trial: bool,
) -> float:
    """Full models trained: epochs over every trial and fold, plus the robust choice's."""
    folds = settings.folds if folds_per_trial else 1
    epochs = sum(len(t.intermediate_values) for t in study.trials) * folds
    selection = document.get("selection")
    if isinstance(selection, dict) and selection.get("candidates"):
        retrained = len(selection["candidates"]) * selection["seeds"] * selection["folds"]
        epochs += retrained * settings.epochs
    return epochs / settings.epochs


def _choice(document: dict[str, object]) -> str:
    selection = document.get("selection")
    if not isinstance(selection, dict):
        return "best trial"
    if not selection.get("candidates"):
        return "best trial, no retraining"
    return (
        f"{len(selection['candidates'])} candidates x {selection['seeds']} seeds x "
        f"{selection['folds']} folds"
    )


def run_tracked(commands: list[list[str]], work: Path) -> tuple[float, float]:
    """Run the commands at once; wall seconds and the peak summed RSS (MiB) of their trees."""
    started = time.perf_counter()
    logs = [work / f"stderr-{index}.txt" for index in range(len(commands))]
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # `bench.handwritten` from any folder
    processes = [
        subprocess.Popen(c, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
        for c, log in zip(commands, logs, strict=True)
    ]
    peak, done = [0.0], threading.Event()

    def watch() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(_tree_rss_mib(p.pid) for p in processes))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    failures = [(p.args, log.read_text()) for p, log in zip(processes, logs) if p.wait()]
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    if failures:
        raise SystemExit(f"benchmark command failed: {failures[0]}")
    return seconds, peak[0]


def _tree_rss_mib(root: int) -> float:
    """Summed resident memory of `root` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    resident: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            pages = int((entry / "statm").read_text().split()[1])
        except OSError:
            continue  # exited meanwhile
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        resident[pid] = pages
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return sum(resident.get(pid, 0) for pid in tree) * PAGE_KIB / 1024


def _url(work: Path) -> str:
    return f"sqlite:///{work / 'study.db'}"


if __name__ == "__main__":
    main()
