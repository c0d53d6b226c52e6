"""`sweeps` command line: parse arguments into the library's options dataclasses, call it, and
map its errors to exit codes. The argparse Namespace stops here.

Exit codes (`lrsweep.errors`): 0 success, 2 bad input or usage (one `error: ...` line on
stderr), 1 a failure of the run (a database lost for longer than workers wait: one line too;
anything else), 130/143 when interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from lrsweep.errors import LrsweepError, UsageError
from lrsweep.sweeps.flags import add_flags, from_flags

EXIT_OK = 0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def _storage_options(parser: argparse.ArgumentParser) -> None:
    """The storage flags; their defaults are StorageSettings' own."""
    from lrsweep.storage import StorageSettings

    group = parser.add_argument_group("storage")
    group.add_argument(
        "--storage",
        help="SQLite file or SQLAlchemy URL (sqlite:///x.db, postgresql://user@host/db); "
        "default $LRSWEEP_STORAGE, else ./lrsweep.db",
    )
    for name, help_text in (
        ("heartbeat_interval", "seconds between heartbeats of a running trial"),
        ("grace_period", "a trial silent this long belongs to a dead worker"),
    ):
        default = StorageSettings.__dataclass_fields__[name].default
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            metavar="S",
            help=f"{help_text} (default {default})",
        )


def _storage_settings(args: argparse.Namespace) -> Any:
    from lrsweep.sweeps.api import storage_settings

    timing = {
        name: getattr(args, name)
        for name in ("heartbeat_interval", "grace_period")
        if getattr(args, name) is not None
    }
    return storage_settings(args.storage, **timing)


def _study_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    from lrsweep.sweeps.api import DEFAULT_STUDY

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


def _worker_parser(commands: Any, name: str, help_text: str) -> Any:
    """A command that runs workers: storage, study, new-study and worker flags."""
    from lrsweep.sweeps.study.options import StudyOptions
    from lrsweep.sweeps.worker.options import WorkerOptions

    parser = commands.add_parser(name, help=help_text)
    _storage_options(parser)
    _study_options(parser, required=name != "run")
    add_flags(
        parser.add_argument_group("new study (ignored when joining unless they conflict)"),
        StudyOptions,
    )
    add_flags(parser, WorkerOptions)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from lrsweep.sweeps.api import DEFAULT_OUT
    from lrsweep.sweeps.results.choice import ChoiceOptions
    from lrsweep.sweeps.study.options import DataOptions
    from lrsweep.sweeps.worker.options import PopulationOptions
    from lrsweep.sweeps.worker.slurm import SlurmOptions

    parser = _Parser(prog="sweeps", description="Learning-rate schedule sweeps on Optuna.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    choice_title = (
        "the robust choice: retrain the best K trials over S seeds on the study's rows split "
        "anew (split seed + 1), export the best mean"
    )

    run = _worker_parser(commands, "run", "create/resume a study, sweep on all cores, export")
    run.add_argument("--workers", type=int, help="worker processes (default: GPUs, else cores)")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"exported config (default {DEFAULT_OUT})")
    add_flags(run.add_argument_group(choice_title), ChoiceOptions)
    add_flags(run.add_argument_group("population mode"), PopulationOptions)
    run.set_defaults(handler=_cmd_run)

    worker = _worker_parser(commands, "worker", "run trials of a study in this process")
    worker.add_argument("--launched", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument("--trackers-prepared", action="store_true", help=argparse.SUPPRESS)
    worker.set_defaults(handler=_cmd_worker)

    launch = _worker_parser(commands, "launch", "start K worker processes on this machine")
    launch.add_argument("--workers", type=int, required=True, help="worker processes")
    launch.set_defaults(handler=_cmd_launch)

    slurm = _worker_parser(commands, "slurm", "submit workers as a SLURM job array")
    add_flags(slurm.add_argument_group("SLURM"), SlurmOptions)
    slurm.set_defaults(handler=_cmd_slurm)

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
    add_flags(export.add_argument_group(choice_title), ChoiceOptions)
    add_flags(export, DataOptions)
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

    train = commands.add_parser(
        "train",
        help="retrain a config over seeds, score on test CSV",
        description="Without --data, the file the export was swept on (its data.path), "
        "refused when its values changed since.",
    )
    train.add_argument("--config", required=True, help="exported config (.json/.yaml)")
    add_flags(train, DataOptions)
    train.add_argument("--test-csv", help="held-out CSV in the same format")
    train.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    train.add_argument("--device", help="cpu, cuda or cuda:N")
    train.set_defaults(handler=_cmd_train)
    return parser


def _options(args: argparse.Namespace, config: Any, **overrides: Any) -> Any:
    """One options dataclass from the parsed flags (the Namespace stops here)."""
    return from_flags(config, vars(args), **overrides)


def _cmd_worker(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.study.open import open_for_sweep
    from lrsweep.sweeps.study.options import StudyOptions
    from lrsweep.sweeps.worker.launch import released_by_launcher
    from lrsweep.sweeps.worker.options import WorkerOptions
    from lrsweep.sweeps.worker.trackers import prepare_trackers

    # The options first (a typo is refused before torch), then torch and the rest, imported
    # while a launcher is still working.
    options, study_options = _options(args, WorkerOptions), _options(args, StudyOptions)
    from lrsweep.sweeps.worker.loop import run_worker

    if args.launched and not released_by_launcher():
        return EXIT_OK
    if not args.trackers_prepared:
        prepare_trackers(options.trackers, args.study)
    opened = open_for_sweep(_storage_settings(args), args.study, study_options, options.data)
    summary = run_worker(opened, options)
    print(
        f"worker done: {summary.trials_run} trials {summary.by_reason}; stopped because "
        f"{summary.stopped_because}; {summary.proposed_ahead} proposed while a batch trained; "
        f"time: {summary.time_line()}",
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


def _cmd_launch(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.study.options import StudyOptions
    from lrsweep.sweeps.worker.launch import launch
    from lrsweep.sweeps.worker.options import WorkerOptions

    launched = launch(
        _storage_settings(args),
        args.study,
        _options(args, StudyOptions),
        _options(args, WorkerOptions),
        args.workers,
    )
    _exit_without_teardown(launched.exit_code, launched.opened)


def _cmd_slurm(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.study.open import open_for_sweep
    from lrsweep.sweeps.study.options import StudyOptions
    from lrsweep.sweeps.worker.options import WorkerOptions
    from lrsweep.sweeps.worker.slurm import SlurmOptions, job_script, submit, write_job
    from lrsweep.sweeps.worker.trackers import prepare_trackers

    slurm = _options(args, SlurmOptions)
    options = _options(args, WorkerOptions)
    study = _options(args, StudyOptions)
    storage = _storage_settings(args)
    if slurm.dry_run:
        print(job_script(storage, args.study, study, options, slurm), end="")
        return EXIT_OK
    script = write_job(storage, args.study, study, options, slurm)  # checked, not submitted
    prepare_trackers(options.trackers, args.study)  # once, not raced by the tasks
    # The study is made (or its options checked) here, once, before any task starts.
    opened = open_for_sweep(storage, args.study, study, options.data)
    job_id = submit(storage, script)
    print(
        f"submitted job {job_id}: {slurm.tasks} workers on study {args.study!r} "
        f"({storage.masked_url}); logs {script.parent}/*-{job_id}_*.out; "
        f"follow with: sweeps status --study {args.study}",
        file=sys.stderr,
    )
    _exit_without_teardown(EXIT_OK, opened)


def _cmd_run(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.api import SweepFailed, SweepInterrupted, run
    from lrsweep.sweeps.results.choice import ChoiceOptions
    from lrsweep.sweeps.results.summary import format_summary, summarize
    from lrsweep.sweeps.study.options import StudyOptions
    from lrsweep.sweeps.worker.options import PopulationOptions, WorkerOptions

    try:
        result = run(
            storage=_storage_settings(args),
            study=args.study,
            workers=args.workers,
            out=args.out,
            options=_options(args, WorkerOptions),  # the run's target and seed: run()'s
            study_options=_options(args, StudyOptions),
            choice=_options(args, ChoiceOptions, after_sweep=True),
            population=_options(args, PopulationOptions),
        )
    except (SweepFailed, SweepInterrupted) as failed:  # the workers said why themselves
        return failed.exit_code
    print(format_summary(summarize(result.opened)))
    print(
        f"sweep wall time {result.seconds:.1f}s; choice and export "
        f"{result.choice_seconds:.1f}s; {result.seconds + result.choice_seconds:.1f}s in all"
    )
    _exit_without_teardown(EXIT_OK, result.opened)


def _cmd_status(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.summary import format_summary, summarize
    from lrsweep.sweeps.study.open import open_existing

    summary = summarize(open_existing(_storage_settings(args), args.study))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return EXIT_OK


def _cmd_export(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.api import export
    from lrsweep.sweeps.results.choice import ChoiceOptions
    from lrsweep.sweeps.results.export import export_path, write_trials_csv
    from lrsweep.sweeps.study.open import open_existing
    from lrsweep.sweeps.study.options import DataOptions

    choice = _options(args, ChoiceOptions)
    out = export_path(args.out, args.format)
    storage = _storage_settings(args)
    export(
        args.study,
        storage=storage,
        out=out,
        choice=choice,
        data=_options(args, DataOptions),
        device=args.device,
    )
    if args.trials_csv:
        rows = write_trials_csv(open_existing(storage, args.study), Path(args.trials_csv))
        print(f"wrote {rows} trials to {args.trials_csv}")
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.study.open import open_existing

    opened = open_existing(_storage_settings(args), args.study)
    from lrsweep.sweeps.results.report import (
        write_report,  # plotting libraries load only when needed
    )

    report = write_report(opened, Path(args.out), top_k=args.top)
    print(f"wrote {report.html} and {len(report.images)} PNG charts to {args.out}")
    return EXIT_OK


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.servers import serve_dashboard

    serve_dashboard(_storage_settings(args), args.host, args.port)
    return EXIT_OK


def _cmd_proxy(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.servers import serve_proxy

    serve_proxy(_storage_settings(args), args.host, args.port, args.threads)
    return EXIT_OK


def _cmd_train(args: argparse.Namespace) -> int:
    from lrsweep.sweeps.results.retrain import retrain, training_data
    from lrsweep.sweeps.study.options import DataOptions
    from lrsweep.trainer.config import load_export

    exported = load_export(args.config)
    report = retrain(
        exported.config,
        model_spec=exported.model,
        data=training_data(exported, _options(args, DataOptions), args.config),
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
    except LrsweepError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        return _fail("interrupted", 128 + signum)


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
