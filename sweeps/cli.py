"""`sweeps` command line: parse arguments, call the library, map errors to exit codes.

Exit codes: 0 success, 2 bad input or usage (one `error: ...` line on stderr), 1 a failure of
the run (a database lost for longer than workers wait: one line too; anything else), 130/143
when interrupted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NoReturn

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_STUDY = "lrsweep"
DEFAULT_RUN_TRIALS = 100
DEFAULT_RUN_TOP = 10
DEFAULT_CHOICE_SEEDS = 5
MAX_SEED = 2**31  # NumPy seeds are below 2**32, and launch adds the worker index


class UsageError(Exception):
    """Raised by the parser instead of printing usage and exiting."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _storage_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("storage")
    group.add_argument(
        "--storage",
        help="SQLite file or SQLAlchemy URL (sqlite:///x.db, postgresql://user@host/db); "
        "default $LRSWEEP_STORAGE, else ./lrsweep.db",
    )
    group.add_argument(
        "--heartbeat-interval",
        type=int,
        default=10,
        metavar="S",
        help="seconds between heartbeats of a running trial (default 10)",
    )
    group.add_argument(
        "--grace-period",
        type=int,
        default=30,
        metavar="S",
        help="a trial silent this long belongs to a dead worker (default 30)",
    )


def _study_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--study",
        required=required,
        default=DEFAULT_STUDY,
        help="study name" + ("" if required else f" (default {DEFAULT_STUDY})"),
    )


def _server_options(parser: argparse.ArgumentParser, *, port: int, host_note: str) -> None:
    """--host (loopback unless asked: neither server authenticates) and --port."""
    parser.add_argument(
        "--host", default="127.0.0.1", help=f"address to bind (default 127.0.0.1; {host_note})"
    )
    parser.add_argument("--port", type=int, default=port, help=f"port (default {port})")


def _creation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("new study (ignored when joining unless they conflict)")
    group.add_argument("--space", help="search-space file (.toml/.yaml) overriding ranges")
    group.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        help="your model: FUNCTION(n_features, n_outputs) -> nn.Module (imports MODULE: your "
        "code runs; default the built-in MLP)",
    )
    group.add_argument("--pruner", help="median (default), hyperband, successive_halving, none")
    group.add_argument("--epochs", type=int, help="epochs per trial (default 50)")
    group.add_argument(
        "--folds",
        type=int,
        help="cross-validate each trial over F stratified folds, trained together (default: 5 "
        "when one split's accuracy is noisier than 1 point, else 1; 1: one train/validation "
        "split, --validation-fraction)",
    )
    group.add_argument("--validation-fraction", type=float, help="held-out share (default 0.3)")
    group.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the tutorial's schedules first (default: on for `run`)",
    )


def _data_options(parser: argparse.ArgumentParser, data_help: str = "") -> None:
    parser.add_argument(
        "--data",
        help=data_help
        or "classification CSV, with or without a header (default $IONOSPHERE_CSV or OpenML "
        "ionosphere)",
    )
    parser.add_argument(
        "--label-column",
        metavar="NAME|INDEX",
        help="the label's column: a header name or a 0-based position, -1 the last (default: "
        "the study's, else the last)",
    )
    parser.add_argument(
        "--header",
        choices=["yes", "no"],
        help="whether the first row is a header (default: the study's, else read from the file "
        "as a person would: README, Your data)",
    )


def _data_source(args: argparse.Namespace) -> Any:
    from lrsweep.trainer.data import DataSource

    header = None if args.header is None else args.header == "yes"
    return DataSource(args.data, args.label_column, header=header)


def _worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trials", type=int, help="finished trials in the whole study to reach")
    parser.add_argument(
        "--timeout", type=float, metavar="SECONDS", help="stop starting trials after this long"
    )
    _data_options(parser)
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--seed", type=int, help="sampler seed (launch adds the worker index)")
    parser.add_argument(
        "--trials-per-batch",
        "--batch-size-trials",  # its name before 0.2, kept for existing scripts
        dest="trials_per_batch",
        type=int,
        metavar="K",
        help="trials trained together as one vectorized model (default: from device and --trials)",
    )
    parser.add_argument(
        "--sampler-history",
        type=int,
        metavar="H",
        help="most finished trials TPE fits on (default 200: the best and the most recent)",
    )
    parser.add_argument("--quiet", action="store_true", help="no line per batch")


def _robust_choice_options(parser: argparse.ArgumentParser, *, after_sweep: bool) -> None:
    group = parser.add_argument_group(
        "the robust choice: retrain the best K trials over S seeds on the study's rows split "
        "anew (split seed + 1), export the best mean"
    )
    group.add_argument(
        "--top",
        type=int,
        metavar="K",
        help=f"candidates (default: of the top {DEFAULT_RUN_TOP}, those a 95%% test cannot "
        "tell from the best and one seed retrains in a quarter of the sweep's time; fewer "
        "than 2: no retraining)"
        if after_sweep
        else "candidates (default: export the study's single best trial, no retraining)",
    )
    group.add_argument(
        "--seeds",
        type=int,
        metavar="S",
        help=f"seeds (default: up to {DEFAULT_CHOICE_SEEDS}, as many as fit in a quarter of "
        "the sweep's time)"
        if after_sweep
        else f"seeds (default {DEFAULT_CHOICE_SEEDS}; needs --top)",
    )


def _check_choice_options(args: argparse.Namespace, *, after_sweep: bool) -> None:
    """Refuse a bad --top/--seeds before any work (a sweep may run for hours first)."""
    from lrsweep.trainer import InvalidInputError

    if not after_sweep and args.top is None and args.seeds is not None:
        raise InvalidInputError("--seeds needs --top K (the robust choice among the best K)")
    for flag, value in (("--top", args.top), ("--seeds", args.seeds)):
        if value is not None:
            _require_positive(flag, value)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sweeps", description="Learning-rate schedule sweeps on Optuna.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="create/resume a study, sweep on all cores, export")
    _storage_options(run)
    _study_options(run, required=False)
    _creation_options(run)
    _worker_options(run)
    run.add_argument("--workers", type=int, help="worker processes (default: GPUs, else cores)")
    run.add_argument("--out", default="best.json", help="exported best config (default best.json)")
    _robust_choice_options(run, after_sweep=True)
    run.set_defaults(handler=_cmd_run, trials=DEFAULT_RUN_TRIALS, seed=0)

    worker = commands.add_parser("worker", help="run trials of a study in this process")
    _storage_options(worker)
    _study_options(worker, required=True)
    _creation_options(worker)
    _worker_options(worker)
    worker.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(handler=_cmd_worker)

    launch = commands.add_parser("launch", help="start K worker processes on this machine")
    _storage_options(launch)
    _study_options(launch, required=True)
    _creation_options(launch)
    _worker_options(launch)
    launch.add_argument("--workers", type=int, required=True, help="worker processes")
    launch.set_defaults(handler=_cmd_launch)

    status = commands.add_parser("status", help="trials by state and the best trial")
    _storage_options(status)
    _study_options(status, required=True)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=_cmd_status)

    export = commands.add_parser("export", help="write the best schedule as a config file")
    _storage_options(export)
    _study_options(export, required=True)
    export.add_argument("--out", help="config file, .json or .yaml (default best.<format>)")
    export.add_argument(
        "--format", choices=["json", "yaml"], help="file format (default: from --out, else json)"
    )
    export.add_argument("--trials", dest="trials_csv", help="also write every trial to CSV")
    _robust_choice_options(export, after_sweep=False)
    _data_options(export, "the study's CSV (default $IONOSPHERE_CSV or OpenML ionosphere)")
    export.add_argument("--device", help="cpu, cuda or cuda:N")
    export.set_defaults(handler=_cmd_export)

    report = commands.add_parser("report", help="HTML report and PNG charts of a study")
    _storage_options(report)
    _study_options(report, required=True)
    report.add_argument("--out", default="report", help="output folder (default ./report)")
    report.add_argument(
        "--top", type=int, default=5, metavar="K", help="schedules to draw in detail (default 5)"
    )
    report.set_defaults(handler=_cmd_report)

    dashboard = commands.add_parser("dashboard", help="optuna-dashboard on the study storage")
    _storage_options(dashboard)
    _server_options(dashboard, port=8080, host_note="this machine only")
    dashboard.set_defaults(handler=_cmd_dashboard)

    proxy = commands.add_parser("proxy", help="gRPC storage proxy for many workers")
    _storage_options(proxy)
    _server_options(
        proxy,
        port=13000,
        host_note="the proxy has no authentication, so serve other machines only on a "
        "private network: --host 0.0.0.0",
    )
    proxy.add_argument("--threads", type=int, default=32, help="request threads (default 32)")
    proxy.set_defaults(handler=_cmd_proxy)

    train = commands.add_parser("train", help="retrain a config over seeds, score on test CSV")
    train.add_argument("--config", required=True, help="exported config (.json/.yaml)")
    _data_options(train, "training CSV (default $IONOSPHERE_CSV or OpenML ionosphere)")
    train.add_argument("--test-csv", help="held-out CSV in the same format")
    train.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    train.add_argument("--device", help="cpu, cuda or cuda:N")
    train.set_defaults(handler=_cmd_train)
    return parser


def _storage_settings(args: argparse.Namespace) -> Any:
    from lrsweep.storage import StorageSettings, resolve_storage_url

    return StorageSettings(
        url=resolve_storage_url(args.storage),
        heartbeat_interval=args.heartbeat_interval,
        grace_period=args.grace_period,
    )


def _as_the_study_reads_it(args: argparse.Namespace, source: Any, error: Exception) -> Any:
    """A file unreadable with its last column as the label may be an existing study's, read
    with the label column the study recorded; otherwise `error` stands."""
    from lrsweep.storage import StorageError, close_storage
    from lrsweep.sweeps.study.open import open_existing
    from lrsweep.trainer import InvalidInputError

    try:
        opened = open_existing(_storage_settings(args), args.study)
    except (InvalidInputError, StorageError):
        raise error from None
    try:
        return opened.settings.load_data(source)
    finally:
        close_storage(opened.storage)


def _join_or_create(args: argparse.Namespace, default_baselines: bool) -> Any:
    """Validate the data, then create the study from the flags or join the existing one."""
    from lrsweep.sweeps.study.open import create_or_join
    from lrsweep.sweeps.study.settings import StudySettings, default_folds
    from lrsweep.sweeps.study.space import load_space
    from lrsweep.trainer import InvalidInputError
    from lrsweep.trainer.models import ModelSpec

    source = _data_source(args)
    try:
        dataset = source.load()
    except InvalidInputError as error:
        if source.label_column is not None:
            raise
        dataset = _as_the_study_reads_it(args, source, error)
    if args.model is not None:  # a bad --model is refused before any study exists
        ModelSpec(args.model).check(dataset.features[:2], dataset.schema.n_outputs)
    given = {
        "pruner": args.pruner,
        "epochs": args.epochs,
        "folds": args.folds,
        "validation_fraction": args.validation_fraction,
        "space": load_space(args.space) if args.space else None,
        "model": args.model,
    }
    explicit = {name: value for name, value in given.items() if value is not None}
    # A validation fraction asks for one split; otherwise the data's noise decides.
    chosen: dict[str, Any] = {}
    if args.validation_fraction is not None:
        chosen = {"folds": 1}
    elif args.folds is None:
        folds, why = default_folds(dataset)
        chosen = {"folds": folds, "chosen_by_data": why}
    requested = StudySettings(data_sha256=dataset.sha256, **{**chosen, **explicit})
    opened = create_or_join(
        _storage_settings(args),
        args.study,
        requested,
        dataset,
        explicit=frozenset(explicit),
        sampler_seed=args.seed,
        enqueue_baselines=default_baselines if args.baselines is None else args.baselines,
    )
    opened.settings.load_data(source)
    return opened


def _worker_options_of(args: argparse.Namespace) -> Any:
    from lrsweep.sweeps.worker.history import DEFAULT_SAMPLER_HISTORY
    from lrsweep.sweeps.worker.options import WorkerOptions
    from lrsweep.trainer import InvalidInputError

    if args.seed is not None and not 0 <= args.seed < MAX_SEED:
        raise InvalidInputError(f"--seed must be between 0 and {MAX_SEED - 1}; got {args.seed}")
    return WorkerOptions(
        target_trials=args.trials,
        timeout_s=args.timeout,
        data=_data_source(args),
        device=args.device,
        trials_per_batch=args.trials_per_batch,
        sampler_history=(
            DEFAULT_SAMPLER_HISTORY if args.sampler_history is None else args.sampler_history
        ),
        quiet=args.quiet,
    )


def _child_worker_args(args: argparse.Namespace, *, quiet: bool) -> list[str]:
    """Flags a launched worker needs; the storage URL goes through the environment."""
    pairs = {
        "--study": args.study,
        "--trials": args.trials,
        "--timeout": args.timeout,
        "--data": args.data and str(Path(args.data).resolve()),
        "--label-column": args.label_column,
        "--header": args.header,
        "--device": args.device,
        "--heartbeat-interval": args.heartbeat_interval,
        "--grace-period": args.grace_period,
        "--trials-per-batch": args.trials_per_batch,
        "--sampler-history": args.sampler_history,
    }
    flags = [
        item for name, value in pairs.items() if value is not None for item in (name, str(value))
    ]
    return flags + (["--quiet"] if quiet else [])


def _cmd_worker(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.worker.launch import released_by_launcher
    from lrsweep.sweeps.worker.loop import (
        run_worker,  # torch and the rest, before waiting for the launcher
    )

    if args.launched and not released_by_launcher():
        return EXIT_OK
    options = _worker_options_of(args)
    opened = _join_or_create(args, default_baselines=False)
    summary = run_worker(opened, options)
    print(
        f"worker done: {summary.trials_run} trials {summary.by_reason}; stopped because "
        f"{summary.stopped_because}",
        file=sys.stderr,
    )
    if args.launched:
        _exit_without_teardown(EXIT_OK, opened)
    return EXIT_OK


def _exit_without_teardown(code: int, opened: Any) -> NoReturn:
    """Exit once everything is stored and written, skipping the interpreter's teardown of
    torch, Optuna and SQLAlchemy (about 0.3 s a process). The study's connections are closed
    first: SQLite folds its write-ahead log back into the database file when the last one
    closes, and PostgreSQL sees a clean goodbye."""
    from lrsweep.storage import close_storage

    close_storage(opened.storage)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _launch(args: argparse.Namespace, default_baselines: bool) -> tuple[Any, int, int]:
    """The study, the workers' exit code, and how many workers ran."""
    from lrsweep.sweeps.worker.launch import LaunchPlan, started_workers
    from lrsweep.sweeps.worker.progress import StudyProgress, wants_progress

    _worker_options_of(args)  # validate before starting anything
    plan = LaunchPlan.for_this_machine(args.workers, args.device)
    storage_settings = _storage_settings(args)
    show_progress = wants_progress()
    # Under a progress bar the workers' own per-batch lines would tear it: they go quiet.
    worker_args = _child_worker_args(args, quiet=args.quiet or show_progress)
    with started_workers(plan, storage_settings.url, worker_args, args.seed) as workers:
        opened = _join_or_create(args, default_baselines)
        print(
            f"starting {plan.workers} workers on study {args.study!r} "
            f"({storage_settings.masked_url})",
            file=sys.stderr,
        )
        with StudyProgress(opened, args.trials) if show_progress else nullcontext():
            code = workers.run()
    return opened, code, plan.workers


def _cmd_launch(args: argparse.Namespace) -> int:
    opened, code, _ = _launch(args, default_baselines=False)
    _exit_without_teardown(code, opened)


def _cmd_run(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.summary import format_summary, summarize

    _check_choice_options(args, after_sweep=True)
    started, started_at = time.perf_counter(), datetime.datetime.now()  # Optuna's clock
    opened, code, workers = _launch(args, default_baselines=True)
    if code != EXIT_OK:
        _exit_without_teardown(code, opened)
    elapsed = time.perf_counter() - started
    out = _export_path(args.out, None)
    from lrsweep.sweeps.results.selection import SweepPace

    _export(args, opened, out, SweepPace.of_sweep(opened, started_at, elapsed, workers))
    print(format_summary(summarize(opened)))
    print(f"sweep wall time {elapsed:.1f}s")
    _exit_without_teardown(EXIT_OK, opened)


def _cmd_status(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.summary import format_summary, summarize
    from lrsweep.sweeps.study.open import open_existing

    summary = summarize(open_existing(_storage_settings(args), args.study))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.export import write_trials_csv
    from lrsweep.sweeps.study.open import open_existing

    _check_choice_options(args, after_sweep=False)
    out = _export_path(args.out, args.format)
    opened = open_existing(_storage_settings(args), args.study)
    _export(args, opened, out)
    if args.trials_csv:
        rows = write_trials_csv(opened, Path(args.trials_csv))
        print(f"wrote {rows} trials to {args.trials_csv}")
    return EXIT_OK


def _export(args: argparse.Namespace, opened: Any, out: Path, sweep: Any = None) -> None:
    """The study's single best trial, or the robust choice: among the best K with --top, and
    after a sweep (`sweep`, its `SweepPace`) among those the study's rows cannot tell from the
    best, as many as and over the seeds that fit in its time budget, unless --top/--seeds say
    otherwise."""
    from lrsweep.sweeps.results.export import best_trial

    if args.top is None and sweep is None:
        _export_as_it_is(opened, best_trial(opened), out)
        return
    from lrsweep.sweeps.results.export import top_trials
    from lrsweep.sweeps.results.selection import robust_choice_budget

    budget_s = None
    if args.seeds is None and sweep is not None:
        budget_s = robust_choice_budget(sweep.seconds)
    if args.top is not None:
        candidates = top_trials(opened, args.top)
        why = f"--top {args.top} leaves one candidate, nothing to rank it against"
    else:
        candidates, why = _default_candidates(args, opened, sweep, budget_s)
    if len(candidates) < 2 and args.seeds is None:  # retraining one alone would rank nothing
        _export_as_it_is(opened, candidates[0], out, why)
        return
    _export_robust_choice(args, opened, out, candidates, budget_s)


def _default_candidates(
    args: argparse.Namespace, opened: Any, sweep: Any, budget_s: float | None
) -> tuple[list[Any], str]:
    """The top trials the study's rows cannot tell from the best, as many as one seed
    retrains within `budget_s` (the best alone when fewer than 2 fit), said in a note; and
    why, should one be left."""
    from lrsweep.sweeps.results.export import top_trials
    from lrsweep.sweeps.results.selection import (
        affordable_candidates,
        not_told_apart,
        reevaluation_folds,
    )

    top = top_trials(opened, DEFAULT_RUN_TOP)
    rows = opened.settings.validation_row_count
    candidates = not_told_apart(top, rows)
    note = f"those a 95% test on {rows} validation rows cannot tell from the best"
    why = (
        "the study has one completed trial"
        if len(top) == 1
        else "the study's rows tell its best trial apart from the rest of its top"
    )
    if budget_s is not None and len(candidates) > 1 and sweep.model_epochs:
        dataset = opened.settings.load_data(_data_source(args))
        folds = reevaluation_folds(opened.settings, dataset).folds
        each_s = sweep.seconds_per_candidate(folds, opened.settings.epochs)
        affordable = affordable_candidates(candidates, each_s, budget_s)
        note += f"; {len(affordable)} of them fit one seed in {budget_s:.1f} s at the sweep's pace"
        if len(affordable) < 2:
            why = (
                f"retraining 2 candidates once would take about {2 * each_s:.1f} s, over the "
                f"robust choice's budget of {budget_s:.1f} s (a quarter of the sweep)"
            )
        candidates = affordable or candidates[:1]
    print(
        f"note: robust choice among {len(candidates)} of the top {len(top)} trials ({note})",
        file=sys.stderr,
    )
    return candidates, why


def _export_as_it_is(opened: Any, trial: Any, out: Path, why: str | None = None) -> None:
    """A trial exported without retraining; with `why`, that choice recorded as the selection
    in the file and the study."""
    from lrsweep.sweeps.results.export import export_document, write_document

    document = export_document(opened, trial)
    if why is not None:
        from lrsweep.sweeps.results.selection import (  # imports torch
            no_retraining_record,
            record_selection,
        )

        record = no_retraining_record(opened, trial, why)
        record_selection(opened, record)
        document = {**document, "selection": record}
    write_document(document, out)
    print(
        f"exported trial {trial.number} (accuracy {trial.value:.4f}{'; ' + why if why else ''}) "
        f"to {out}"
    )


def _cmd_report(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.study.open import open_existing

    _require_positive("--top", args.top)
    opened = open_existing(_storage_settings(args), args.study)
    from lrsweep.sweeps.results.report import (
        write_report,  # plotting libraries load only when needed
    )

    report = write_report(opened, Path(args.out), top_k=args.top)
    print(f"wrote {report.html} and {len(report.images)} PNG charts to {args.out}")
    return EXIT_OK


def _export_robust_choice(
    args: argparse.Namespace,
    opened: Any,
    out: Path,
    trials: list[Any],
    budget_s: float | None,
) -> None:
    from lrsweep.sweeps.results.export import export_document, write_document
    from lrsweep.sweeps.results.retrain import OverBudget
    from lrsweep.sweeps.results.selection import (
        rank_top_trials,
        record_selection,
        selection_record,
    )

    seeds = DEFAULT_CHOICE_SEEDS if args.seeds is None else args.seeds

    def said(seed: int, seconds: float) -> None:
        print(
            f"robust choice: seed {seed + 1} of {'up to ' if budget_s else ''}{seeds} "
            f"retrained ({len(trials)} candidates), {seconds:.1f} s"
            + ("" if budget_s is None else f" of a {budget_s:.1f} s budget"),
            file=sys.stderr,
        )

    try:
        ranking = rank_top_trials(
            opened,
            trials,
            seeds=seeds,
            data=_data_source(args),
            device=args.device,
            budget_s=budget_s,
            first_seed_in_budget=args.top is None,  # K given: at least one seed of the K
            on_seed=said,
        )
    except OverBudget as over:
        why = (
            f"one seed of {len(trials)} candidates would take about {over.predicted_s:.1f} s "
            f"(measured on its first two epochs), over the robust choice's budget of "
            f"{budget_s:.1f} s"
        )
        print(f"note: robust choice skipped: {why}", file=sys.stderr)
        _export_as_it_is(opened, trials[0], out, why)
        return
    chosen = ranking.chosen
    spread = (
        "with seed 0 (one seed: no spread)"
        if ranking.seeds == 1
        else f"+/- {chosen.scores.std:.4f} over {ranking.seeds} seeds"
    )
    document = export_document(opened, chosen.trial)
    record = selection_record(opened, ranking)
    record_selection(opened, record)
    write_document({**document, "selection": record}, out)
    print(
        f"exported trial {chosen.trial.number} (study accuracy {chosen.trial.value:.4f}; "
        f"{chosen.scores.mean:.4f} {spread} on {ranking.folds} folds, best mean of "
        f"{len(ranking.candidates)} candidates) to {out}"
    )


def _require_positive(flag: str, value: int) -> None:
    from lrsweep.trainer import InvalidInputError

    if value < 1:
        raise InvalidInputError(f"{flag} must be >= 1; got {value}")


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.servers import serve_dashboard

    serve_dashboard(_storage_settings(args), args.host, args.port)
    return EXIT_OK


def _cmd_proxy(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.servers import serve_proxy

    _require_positive("--threads", args.threads)
    serve_proxy(_storage_settings(args), args.host, args.port, args.threads)
    return EXIT_OK


def _export_path(out: str | None, fmt: str | None) -> Path:
    """The export file: its suffix decides the format, so `trainer.load_config` reads it back."""
    if out is None:
        return Path(f"best.{fmt or 'json'}")
    path = Path(out)
    suffix_format = "yaml" if path.suffix in (".yaml", ".yml") else "json"
    if path.suffix not in (".json", ".yaml", ".yml") or (fmt and fmt != suffix_format):
        raise UsageError(f"--out {out} must end in .json, .yaml or .yml matching --format")
    return path


def _cmd_train(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.retrain import retrain
    from lrsweep.trainer.config import load_export

    _require_positive("--seeds", args.seeds)
    exported = load_export(args.config)
    report = retrain(
        exported.config,
        model_spec=exported.model,
        data=_data_source(args).as_recorded(exported.schema),
        test_csv=args.test_csv,
        seeds=args.seeds,
        device=args.device,
    )
    print(json.dumps(report, indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sweeps` script; returns the process exit code (`launch` and `run`
    exit the process themselves once done)."""
    signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except UsageError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        return _fail("interrupted", 128 + signum)
    except Exception as exc:
        from lrsweep.storage import StorageError, StorageLost
        from lrsweep.trainer import InvalidInputError

        if isinstance(exc, InvalidInputError | StorageError):
            return _fail(str(exc), EXIT_USAGE)
        if isinstance(exc, StorageLost):
            return _fail(str(exc), EXIT_FAILURE)
        raise


class Interrupted(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (running trials are failed and re-queued), exit 143."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code
