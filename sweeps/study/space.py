"""The conditional search space: a scheduler kind first, then only that kind's arguments.

Optuna parameter names are flat and dotted (`lr`, `momentum`, `step.gamma`,
`cosine.eta_min_factor`); a TOML or YAML file overrides any range by the same name, and may
search the optimizer too (SGD alone by default, the tutorial's):

    schedulers = ["step", "cosine"]
    optimizers = ["sgd", "adam", "adamw"]  # searched as the `optimizer` parameter; also
    # "sgd_schedulefree" and "adamw_schedulefree" (with schedulers = ["constant"]: no schedule)
    [ranges]
    lr = {low = 0.01, high = 0.5, log = true}
    "step.gamma" = {low = 0.1, high = 0.5}
    weight_decay = {low = 1e-5, high = 1e-2, log = true}  # opt-in: searched only if named
    beta2 = {low = 0.9, high = 0.9999}  # Adam's and AdamW's; opt-in, as beta1 and eps
    batch_size = {low = 16, high = 256}  # opt-in; searched among 16, 32, 64, 128, 256

`config_from_params` turns a trial's parameters into a `TrainConfig`; sampling and export both
go through it, so an exported config is exactly what the trial trained.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import optuna

from lrsweep.trainer import SCHEDULES, InvalidInputError, ScheduleConfig, TrainConfig
from lrsweep.trainer.config import DEFAULT_BATCH_SIZE, OPTIMIZERS
from lrsweep.trainer.documents import read_document
from lrsweep.trainer.schedules import (
    AT_LEAST_1,
    COUNT,
    FACTOR,
    NONNEGATIVE,
    OPEN_UNIT,
    POSITIVE,
    UNIT,
    ParamSpec,
)

SCHEDULER_PARAM = "scheduler"
OPTIMIZER_PARAM = "optimizer"
ADAPTIVE = ("adam", "adamw", "adamw_schedulefree")  # those with betas and eps


@dataclass(frozen=True)
class Range:
    """Bounds of one searched parameter; `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False

    def doublings(self) -> list[int]:
        """low, 2 low, 4 low, ... up to high: a doubling dimension's values."""
        values = [int(self.low)]
        while values[-1] * 2 <= self.high:
            values.append(values[-1] * 2)
        return values

    def suggest(
        self, trial: optuna.Trial, name: str, is_int: bool, doubling: bool = False
    ) -> int | float:
        if doubling:
            return trial.suggest_categorical(name, self.doublings())
        if is_int:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(name, self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Dimension:
    """A searchable parameter: its legal values and its default search range. An opt-in one is
    searched only when a space file gives its range; otherwise it keeps the tutorial's value."""

    rule: ParamSpec
    default: Range
    opt_in: bool = False
    off: float = 0.0  # an opt-in parameter's value when it is not searched (the tutorial's)
    # Searched among low, 2 low, 4 low, ... up to high (`Range.doublings`), not every integer.
    doubling: bool = False
    optimizers: tuple[str, ...] = tuple(OPTIMIZERS)  # the optimizers that have it
    # An optimizer whose unsearched value is not `off` (AdamW's weight decay: torch's 0.01).
    off_by_optimizer: Mapping[str, float] = field(default_factory=dict)

    def off_for(self, optimizer: str) -> float:
        return self.off_by_optimizer.get(optimizer, self.off)


def _adaptive(high: float, searched: Range, *, off: float) -> Dimension:
    """An Adam-family beta: in [0, high], opt-in, torch's default `off` unless searched."""
    rule = ParamSpec(is_int=False, low=0.0, high=high)
    return Dimension(rule, searched, opt_in=True, off=off, optimizers=ADAPTIVE)


DIMENSIONS: Mapping[str, Dimension] = MappingProxyType(
    {
        "lr": Dimension(POSITIVE, Range(1e-3, 1.0, log=True)),
        # Schedule-Free SGD's is not searched: its default, 0.9 (0 is not allowed).
        "momentum": Dimension(
            ParamSpec(is_int=False, low=0.0, high=0.999),
            Range(0.0, 0.99),
            optimizers=("sgd",),
            off_by_optimizer=MappingProxyType({"sgd_schedulefree": 0.9}),
        ),
        # Adam's, AdamW's and Schedule-Free AdamW's, opt-in (torch's defaults otherwise).
        "beta1": _adaptive(0.999, Range(0.8, 0.95), off=0.9),
        "beta2": _adaptive(0.99999, Range(0.9, 0.9999), off=0.999),
        "eps": Dimension(
            POSITIVE, Range(1e-10, 1e-6, log=True), opt_in=True, off=1e-8, optimizers=ADAPTIVE
        ),
        # Opt-in; whether it pays on unseen rows: bench/NOTES.md, step 11.
        "weight_decay": Dimension(
            NONNEGATIVE,
            Range(1e-5, 1e-2, log=True),
            opt_in=True,
            off_by_optimizer=MappingProxyType({"adamw": 0.01}),
        ),
        # Opt-in: a data set's size sets what suits it. Doubling: a batch's members train in one
        # vectorized group per size, so a few sizes keep batches vectorized.
        "batch_size": Dimension(
            COUNT, Range(16, 256), opt_in=True, off=DEFAULT_BATCH_SIZE, doubling=True
        ),
        "step.step_size": Dimension(COUNT, Range(2, 25)),
        "step.gamma": Dimension(FACTOR, Range(0.05, 0.9)),
        "exponential.gamma": Dimension(FACTOR, Range(0.8, 0.999)),
        "linear.end_factor": Dimension(SCHEDULES["linear"].params["end_factor"], Range(0.01, 1.0)),
        "linear.total_iters": Dimension(COUNT, Range(5, 50)),
        "inverse_time.alpha": Dimension(NONNEGATIVE, Range(1e-4, 1.0, log=True)),
        "cosine.T_max": Dimension(COUNT, Range(10, 50)),
        "cosine.eta_min_factor": Dimension(UNIT, Range(0.0, 0.1)),
        "polynomial.total_iters": Dimension(COUNT, Range(10, 50)),
        "polynomial.power": Dimension(POSITIVE, Range(0.5, 3.0)),
        # The kinds below are searched when a space file lists them; lr is their initial lr
        # (onecycle: its peak), and their lr-valued arguments are searched relative to it.
        "multistep.first_milestone": Dimension(COUNT, Range(5, 25)),
        "multistep.milestone_gap": Dimension(COUNT, Range(5, 25)),
        "multistep.gamma": Dimension(FACTOR, Range(0.05, 0.9)),
        "onecycle.pct_start": Dimension(OPEN_UNIT, Range(0.1, 0.5)),
        "onecycle.div_factor": Dimension(AT_LEAST_1, Range(5.0, 50.0, log=True)),
        "onecycle.final_div_factor": Dimension(AT_LEAST_1, Range(10.0, 1e4, log=True)),
        "cosine_warm_restarts.T_0": Dimension(COUNT, Range(5, 25)),
        "cosine_warm_restarts.T_mult": Dimension(COUNT, Range(1, 2)),
        "cosine_warm_restarts.eta_min_factor": Dimension(UNIT, Range(0.0, 0.1)),
        "cyclic.max_lr_factor": Dimension(AT_LEAST_1, Range(2.0, 10.0, log=True)),
        "cyclic.step_size_up": Dimension(COUNT, Range(2, 15)),
        "warmup_cosine.warmup_iters": Dimension(COUNT, Range(1, 10)),
        "warmup_cosine.start_factor": Dimension(FACTOR, Range(0.01, 0.5, log=True)),
        "warmup_cosine.eta_min_factor": Dimension(UNIT, Range(0.0, 0.1)),
        "plateau.factor": Dimension(OPEN_UNIT, Range(0.1, 0.7)),
        "plateau.patience": Dimension(ParamSpec(is_int=True, low=0), Range(1, 8)),
        "plateau.threshold": Dimension(NONNEGATIVE, Range(1e-4, 1e-2, log=True)),
    }
)
# The seven kinds a space file need not name: the others were added later, and a default
# space changes only where measurements show it pays (none made yet for those).
SEARCHABLE_SCHEDULERS = tuple(kind for kind in SCHEDULES if kind != "recorded")
DEFAULT_SCHEDULERS = (
    "constant", "step", "exponential", "linear", "inverse_time", "cosine", "polynomial",
)  # fmt: skip


def _default_ranges() -> Mapping[str, Range]:
    return MappingProxyType(
        {name: dim.default for name, dim in DIMENSIONS.items() if not dim.opt_in}
    )


def _schedule_params(kind: str, sampled: dict[str, Any], lr: float, epochs: int) -> dict[str, Any]:
    """A kind's torch-side arguments from its searched ones: relative lrs made absolute,
    lengths tied to the epochs a trial trains."""
    derived = dict(sampled)
    if "eta_min_factor" in derived:
        derived["eta_min"] = lr * derived.pop("eta_min_factor")
    if kind == "linear":
        derived["start_factor"] = 1.0  # searched as a decay from the initial lr
    elif kind == "multistep":
        first = derived.pop("first_milestone")
        derived["milestones"] = (first, first + derived.pop("milestone_gap"))
    elif kind == "onecycle":
        derived["total_steps"] = epochs
        if derived["pct_start"] * epochs == 1.0:  # a warm-up of no steps, which torch refuses
            derived["pct_start"] = math.nextafter(derived["pct_start"], 1.0)
    elif kind == "cyclic":
        derived["max_lr"] = lr * derived.pop("max_lr_factor")
    elif kind == "warmup_cosine":
        derived["T_max"] = max(1, epochs - derived["warmup_iters"])
    elif kind == "plateau":
        derived["min_lr"] = 0.0
    return derived


@dataclass(frozen=True)
class SearchSpace:
    """Which scheduler kinds and optimizers to try and the range of every parameter."""

    schedulers: tuple[str, ...] = DEFAULT_SCHEDULERS
    ranges: Mapping[str, Range] = field(default_factory=_default_ranges)
    optimizers: tuple[str, ...] = ("sgd",)

    def __post_init__(self) -> None:
        if not self.schedulers:
            raise InvalidInputError("search space lists no schedulers")
        if not self.optimizers:
            raise InvalidInputError("search space lists no optimizers")
        unknown_optimizers = [name for name in self.optimizers if name not in OPTIMIZERS]
        if unknown_optimizers or len(set(self.optimizers)) != len(self.optimizers):
            raise InvalidInputError(
                f"search space optimizers must be distinct names among {', '.join(OPTIMIZERS)}; "
                f"got {list(self.optimizers)}"
            )
        unknown = [kind for kind in self.schedulers if kind not in SEARCHABLE_SCHEDULERS]
        if unknown:
            raise InvalidInputError(
                f"unknown scheduler {unknown[0]!r} in search space; choose from "
                f"{', '.join(SEARCHABLE_SCHEDULERS)}"
                + (
                    " (`recorded` is what population mode exports)"
                    if "recorded" in unknown
                    else ""
                )
            )
        if len(set(self.schedulers)) != len(self.schedulers):
            raise InvalidInputError(f"search space lists a scheduler twice: {self.schedulers}")
        merged = dict(_default_ranges())
        for name, bounds in self.ranges.items():
            if name not in DIMENSIONS:
                close = difflib.get_close_matches(name, DIMENSIONS, n=3)
                hint = (
                    "did you mean " + " or ".join(map(repr, close)) + "?"
                    if close
                    else f"known: {', '.join(DIMENSIONS)}"
                )
                raise InvalidInputError(f"unknown search-space key {name!r}; {hint}")
            _check_range(name, bounds)
            unused = not set(DIMENSIONS[name].optimizers) & set(self.optimizers)
            if unused and bounds != DIMENSIONS[name].default:  # a default range is harmless
                raise InvalidInputError(
                    f"range {name!r} belongs to {' and '.join(DIMENSIONS[name].optimizers)}, "
                    f"which the search space does not try (optimizers: "
                    f"{', '.join(self.optimizers)})"
                )
            merged[name] = bounds
        object.__setattr__(self, "ranges", MappingProxyType(merged))

    def __reduce__(self) -> tuple[type[SearchSpace], tuple[Any, ...]]:
        """Pickled as its arguments (a read-only mapping does not pickle): proposal processes
        receive the study's space (`sweeps.worker.prefetch`)."""
        return type(self), (self.schedulers, dict(self.ranges), self.optimizers)

    @property
    def records_optimizer(self) -> bool:
        """Trials carry an `optimizer` parameter unless SGD is the only one (the tutorial's
        space, and every study made before optimizers were searched: absent means SGD)."""
        return self.optimizers != ("sgd",)

    def suggest(self, trial: optuna.Trial, *, epochs: int, batch_size: int) -> TrainConfig:
        """Sample one config: scheduler kind, optimizer, that optimizer's parameters (lr,
        momentum or betas, and any opt-in one), then the kind's parameters."""
        kind = trial.suggest_categorical(SCHEDULER_PARAM, list(self.schedulers))
        optimizer = (
            trial.suggest_categorical(OPTIMIZER_PARAM, list(self.optimizers))
            if self.records_optimizer
            else "sgd"
        )
        for name, bounds in self.ranges.items():
            dimension = DIMENSIONS[name]
            if optimizer in dimension.optimizers and (
                "." not in name or name.startswith(f"{kind}.")
            ):
                bounds.suggest(trial, name, dimension.rule.is_int, dimension.doubling)
        return config_from_params(trial.params, epochs=epochs, batch_size=batch_size)

    def with_opt_in_off(self, params: Mapping[str, Any], *, batch_size: int) -> dict[str, Any]:
        """`params` (SGD's, a tutorial baseline) with every opt-in parameter this space
        searches for SGD at its tutorial value (weight decay 0, the study's `batch_size`), and
        the optimizer named when trials record it."""
        study_values = {"batch_size": batch_size}
        searched: dict[str, Any] = {
            name: study_values.get(name, DIMENSIONS[name].off)
            for name in self.ranges
            if DIMENSIONS[name].opt_in and "sgd" in DIMENSIONS[name].optimizers
        }
        if self.records_optimizer:
            searched[OPTIMIZER_PARAM] = "sgd"
        return {**searched, **params}

    def why_outside(self, params: Mapping[str, Any]) -> str | None:
        """Why a fixed set of parameters (a baseline) cannot be a trial of this space, or None
        when it can."""
        if params[SCHEDULER_PARAM] not in self.schedulers:
            return f"scheduler {params[SCHEDULER_PARAM]!r} is not in the search space"
        optimizer = params.get(OPTIMIZER_PARAM, "sgd")
        if optimizer not in self.optimizers:
            return f"optimizer {optimizer!r} is not in the search space"
        for name, value in params.items():
            bounds = self.ranges.get(name)
            if bounds is None:
                continue
            if DIMENSIONS[name].doubling and value not in bounds.doublings():
                sizes = ", ".join(map(str, bounds.doublings()))
                return f"{name} {value:g} is not one of the space's {sizes}"
            if not bounds.low <= value <= bounds.high:
                return f"{name} {value:g} is outside the space's {bounds.low:g} to {bounds.high:g}"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schedulers": list(self.schedulers),
            "optimizers": list(self.optimizers),
            "ranges": {
                name: {"low": r.low, "high": r.high, "log": r.log}
                for name, r in self.ranges.items()
                if set(DIMENSIONS[name].optimizers) & set(self.optimizers)  # none unused
            },
        }

    @classmethod
    def from_dict(cls, document: object, origin: str = "search space") -> SearchSpace:
        """Parse the file/JSON form; unknown keys and bad ranges are refused with `origin`."""
        if not isinstance(document, Mapping):
            raise InvalidInputError(f"{origin} must be a table/mapping at top level")
        unknown = sorted(set(document) - {"schedulers", "optimizers", "ranges"})
        if unknown:
            raise InvalidInputError(
                f"{origin}: unknown key {unknown[0]!r} (expected 'schedulers', 'optimizers' "
                "and/or 'ranges')"
            )
        schedulers = document.get("schedulers", list(DEFAULT_SCHEDULERS))
        optimizers = document.get("optimizers", ["sgd"])
        for key, names in (("schedulers", schedulers), ("optimizers", optimizers)):
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InvalidInputError(f"{origin}: {key!r} must be a list of names")
        ranges = {
            name: _parse_range(name, value, origin)
            for name, value in _flatten(document.get("ranges", {}), origin).items()
        }
        try:
            return cls(schedulers=tuple(schedulers), ranges=ranges, optimizers=tuple(optimizers))
        except InvalidInputError as exc:
            raise InvalidInputError(f"{origin}: {exc}") from exc


def load_space(path: str | Path) -> SearchSpace:
    """Read a TOML (.toml) or YAML (.yaml/.yml) search-space file; never executes anything."""
    document = read_document(path, "search space", (".toml", ".yaml", ".yml"))
    return SearchSpace.from_dict(document, origin=f"search space {path}")


def config_from_params(params: Mapping[str, Any], *, epochs: int, batch_size: int) -> TrainConfig:
    """The TrainConfig a trial with these Optuna parameters trains."""
    kind, optimizer = params[SCHEDULER_PARAM], params.get(OPTIMIZER_PARAM, "sgd")

    def value(name: str) -> Any:
        return params.get(name, DIMENSIONS[name].off_for(optimizer))

    prefix = f"{kind}."
    sampled = {
        name.removeprefix(prefix): value
        for name, value in params.items()
        if name.startswith(prefix)
    }
    return TrainConfig(
        schedule=ScheduleConfig(kind, _schedule_params(kind, sampled, params["lr"], epochs)),
        lr=params["lr"],
        momentum=value("momentum"),
        epochs=epochs,
        batch_size=params.get("batch_size", batch_size),
        weight_decay=value("weight_decay"),
        optimizer=optimizer,
        betas=(value("beta1"), value("beta2")),
        eps=value("eps"),
    )


def _flatten(ranges: object, origin: str) -> dict[str, object]:
    """Accept both `"step.gamma" = {...}` and nested `[ranges.step] gamma = {...}`."""
    if not isinstance(ranges, Mapping):
        raise InvalidInputError(f"{origin}: 'ranges' must be a table/mapping")
    flat: dict[str, object] = {}
    for key, value in ranges.items():
        if isinstance(value, Mapping) and key in SCHEDULES:
            flat.update({f"{key}.{inner}": bounds for inner, bounds in value.items()})
        else:
            flat[str(key)] = value
    return flat


def _parse_range(name: str, value: object, origin: str) -> Range:
    if isinstance(value, list | tuple) and len(value) == 2:
        value = {"low": value[0], "high": value[1]}
    if not isinstance(value, Mapping) or not {"low", "high"} <= set(value) <= {
        "low",
        "high",
        "log",
    }:
        raise InvalidInputError(
            f"{origin}: range {name!r} must be {{low, high[, log]}} or [low, high]; got {value!r}"
        )
    low, high, log = value["low"], value["high"], value.get("log", False)
    for bound in (low, high):
        if isinstance(bound, bool) or not isinstance(bound, int | float):
            raise InvalidInputError(f"{origin}: range {name!r} bounds must be numbers")
    if not isinstance(log, bool):
        raise InvalidInputError(f"{origin}: range {name!r} 'log' must be true or false")
    return Range(float(low), float(high), log)


def _check_range(name: str, bounds: Range) -> None:
    rule = DIMENSIONS[name].rule
    if not (math.isfinite(bounds.low) and math.isfinite(bounds.high)) or bounds.low > bounds.high:
        raise InvalidInputError(
            f"range {name!r} is inverted or not finite: low={bounds.low:g} high={bounds.high:g}"
        )
    for bound in (bounds.low, bounds.high):
        rule.check(
            "range", name, int(bound) if rule.is_int and float(bound).is_integer() else bound
        )
    if bounds.log and bounds.low <= 0:
        raise InvalidInputError(f"range {name!r} is on a log scale, so low must be > 0")
