"""Learning-rate schedules: one validated config type, the real torch scheduler, its lr curve.

`build(optimizer, config)` returns the `torch.optim.lr_scheduler` object users step once per
epoch; `lr_curve(config, lr0, epochs)` is the same schedule as a pure function of the epoch, used
to draw and compare schedules without an optimizer. Tests hold the two to each other.

`plateau` (ReduceLROnPlateau) is the one schedule that reads the model: it is stepped with the
epoch's validation accuracy, `scheduler.step(val_accuracy)`, and `PlateauTracker` is its rule as
plain Python, for the vectorized engine, which steps it per member.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

from lrsweep.errors import InvalidInputError


@dataclass(frozen=True)
class ParamSpec:
    """The legal values of one scheduler argument: type and bounds (open or closed)."""

    is_int: bool
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    increasing_list: bool = False  # a non-empty, strictly increasing list of such values
    listed: bool = False  # a non-empty list of such values, in any order

    def check(self, kind: str, name: str, value: object) -> Any:
        """Return `value` converted to the param's type, or raise InvalidInputError."""
        if self.increasing_list or self.listed:
            if not isinstance(value, list | tuple) or not value:
                raise InvalidInputError(f"{kind}.{name} must be a non-empty list; got {value!r}")
            item_rule = replace(self, increasing_list=False, listed=False)
            items = tuple(item_rule.check(kind, name, item) for item in value)
            if self.increasing_list and any(
                a >= b for a, b in zip(items, items[1:], strict=False)
            ):
                raise InvalidInputError(f"{kind}.{name} must increase; got {list(items)}")
            return items
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"{kind}.{name} must be a number; got {value!r}")
        if self.is_int and not float(value).is_integer():
            raise InvalidInputError(f"{kind}.{name} must be an integer; got {value!r}")
        number = int(value) if self.is_int else float(value)
        too_low = number <= self.low if self.low_open else number < self.low
        too_high = number >= self.high if self.high_open else number > self.high
        if not math.isfinite(number) or too_low or too_high:
            raise InvalidInputError(f"{kind}.{name} must be {self.describe()}; got {value!r}")
        return number

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if math.isinf(self.high) or self.high_open else "]"
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        kind = "an integer" if self.is_int else "a number"
        return f"{kind} in {left}{self.low:g}, {high}{right}"


FACTOR = ParamSpec(is_int=False, low=0.0, high=1.0, low_open=True)
NONNEGATIVE = ParamSpec(is_int=False, low=0.0)
POSITIVE = ParamSpec(is_int=False, low=0.0, low_open=True)
COUNT = ParamSpec(is_int=True, low=1)
UNIT = ParamSpec(is_int=False, low=0.0, high=1.0)
OPEN_UNIT = ParamSpec(is_int=False, low=0.0, high=1.0, low_open=True, high_open=True)
AT_LEAST_1 = ParamSpec(is_int=False, low=1.0)
MILESTONES = ParamSpec(is_int=True, low=1, increasing_list=True)
FACTORS = ParamSpec(is_int=False, low=0.0, low_open=True, listed=True)


@dataclass(frozen=True)
class ScheduleKind:
    """A supported schedule: the torch class that implements it and its arguments, named as
    that class names them (so they are its keyword arguments)."""

    torch_class_name: str
    params: Mapping[str, ParamSpec]
    fixed_kwargs: Mapping[str, Any] = field(default_factory=dict)
    lr_kwarg: str | None = None  # the torch argument that takes the optimizer's initial lr


def inverse_time_factor(alpha: float) -> Callable[[int], float]:
    """The tutorial's time-based decay, lr0 / (1 + alpha * epoch), as a LambdaLR factor."""

    def factor(epoch: int) -> float:
        return 1.0 / (1.0 + alpha * epoch)

    return factor


def recorded_factor(factors: tuple[float, ...]) -> Callable[[int], float]:
    """A recorded schedule (what population mode found) as a LambdaLR factor: epoch n's lr
    is lr0 * factors[n]; past the record, the last factor holds."""

    def factor(epoch: int) -> float:
        return factors[min(epoch, len(factors) - 1)]

    return factor


SCHEDULES: Mapping[str, ScheduleKind] = MappingProxyType(
    {
        "constant": ScheduleKind("ConstantLR", {}, fixed_kwargs={"factor": 1.0, "total_iters": 0}),
        "step": ScheduleKind("StepLR", {"step_size": COUNT, "gamma": FACTOR}),
        "exponential": ScheduleKind("ExponentialLR", {"gamma": FACTOR}),
        "linear": ScheduleKind(
            "LinearLR",
            {
                "start_factor": FACTOR,
                "end_factor": ParamSpec(is_int=False, low=0.0, high=1.0),
                "total_iters": COUNT,
            },
        ),
        "inverse_time": ScheduleKind("LambdaLR", {"alpha": NONNEGATIVE}),
        "cosine": ScheduleKind("CosineAnnealingLR", {"T_max": COUNT, "eta_min": NONNEGATIVE}),
        "polynomial": ScheduleKind("PolynomialLR", {"total_iters": COUNT, "power": POSITIVE}),
        "multistep": ScheduleKind("MultiStepLR", {"milestones": MILESTONES, "gamma": FACTOR}),
        "onecycle": ScheduleKind(
            "OneCycleLR",
            {
                "total_steps": COUNT,
                "pct_start": OPEN_UNIT,
                "div_factor": AT_LEAST_1,
                "final_div_factor": AT_LEAST_1,
            },
            # Momentum stays the trial's (sampled) SGD momentum, as in the vectorized engine.
            fixed_kwargs={"anneal_strategy": "cos", "three_phase": False, "cycle_momentum": False},
            lr_kwarg="max_lr",
        ),
        "cosine_warm_restarts": ScheduleKind(
            "CosineAnnealingWarmRestarts",
            {"T_0": COUNT, "T_mult": COUNT, "eta_min": NONNEGATIVE},
        ),
        "cyclic": ScheduleKind(
            "CyclicLR",
            {"max_lr": POSITIVE, "step_size_up": COUNT},
            fixed_kwargs={"mode": "triangular", "cycle_momentum": False},
            lr_kwarg="base_lr",
        ),
        "warmup_cosine": ScheduleKind(
            "SequentialLR",
            {
                "warmup_iters": COUNT,
                "start_factor": FACTOR,
                "T_max": COUNT,
                "eta_min": NONNEGATIVE,
            },
        ),
        # The per-epoch factors a population run recorded for its best lineage; exported, never
        # searched (`sweeps run --population`).
        "recorded": ScheduleKind("LambdaLR", {"factors": FACTORS}),
        "plateau": ScheduleKind(
            "ReduceLROnPlateau",
            {
                "factor": OPEN_UNIT,
                "patience": ParamSpec(is_int=True, low=0),
                "threshold": NONNEGATIVE,
                "min_lr": NONNEGATIVE,
            },
            fixed_kwargs={"mode": "max", "threshold_mode": "rel", "cooldown": 0},
        ),
    }
)


@dataclass(frozen=True)
class ScheduleConfig:
    """A schedule kind and exactly its arguments, checked on construction.

    Example:
        >>> ScheduleConfig("step", {"step_size": 5, "gamma": 0.1}).torch_class_name
        'StepLR'
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = SCHEDULES.get(self.kind)
        if spec is None:
            raise InvalidInputError(
                f"unknown scheduler {self.kind!r}; choose from {', '.join(SCHEDULES)}"
            )
        if not isinstance(self.params, Mapping):
            raise InvalidInputError(f"{self.kind} params must be a mapping; got {self.params!r}")
        unknown = sorted(set(self.params) - set(spec.params))
        missing = sorted(set(spec.params) - set(self.params))
        if unknown or missing:
            raise InvalidInputError(
                f"{self.kind} takes exactly ({', '.join(spec.params) or 'no arguments'}); "
                f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        checked = {
            name: rule.check(self.kind, name, self.params[name])
            for name, rule in spec.params.items()
        }
        if self.kind == "onecycle" and checked["pct_start"] * checked["total_steps"] == 1.0:
            raise InvalidInputError(
                "onecycle.pct_start * total_steps must not be 1 (a warm-up of no steps: torch "
                "divides by zero)"
            )
        object.__setattr__(self, "params", MappingProxyType(checked))

    @property
    def torch_class_name(self) -> str:
        return SCHEDULES[self.kind].torch_class_name

    @property
    def reads_metric(self) -> bool:
        """Stepped with the epoch's validation accuracy, `scheduler.step(val_accuracy)`."""
        return self.kind == "plateau"

    def torch_kwargs(self, lr: float) -> dict[str, Any]:
        """Keyword arguments of the torch class for an optimizer starting at `lr`.

        inverse_time keeps `alpha` for its lambda; warmup_cosine's are its two parts' and the
        milestone between them (`build` assembles the SequentialLR)."""
        kind = SCHEDULES[self.kind]
        p = self.params
        if self.kind == "warmup_cosine":
            warmup = {"start_factor": p["start_factor"], "end_factor": 1.0}
            return {
                "schedulers": [
                    {"class": "LinearLR", "kwargs": {**warmup, "total_iters": p["warmup_iters"]}},
                    {
                        "class": "CosineAnnealingLR",
                        "kwargs": {"T_max": p["T_max"], "eta_min": p["eta_min"]},
                    },
                ],
                "milestones": [p["warmup_iters"]],
            }
        kwargs: dict[str, Any] = {**kind.fixed_kwargs, **p}
        for listed in ("milestones", "factors"):
            if listed in kwargs:
                kwargs[listed] = list(kwargs[listed])
        if kind.lr_kwarg is not None:
            kwargs[kind.lr_kwarg] = lr
        return kwargs


def build(optimizer: Optimizer, config: ScheduleConfig) -> LRScheduler:
    """The real torch scheduler for `config`, attached to `optimizer`; step it once per epoch
    (`plateau`: `scheduler.step(val_accuracy)`)."""
    from torch.optim import lr_scheduler  # kept out of import time: the CLI starts faster

    torch_class = getattr(lr_scheduler, config.torch_class_name)
    kwargs = config.torch_kwargs(optimizer.param_groups[0]["lr"])
    if config.kind == "inverse_time":
        return torch_class(optimizer, lr_lambda=inverse_time_factor(config.params["alpha"]))
    if config.kind == "recorded":
        return torch_class(optimizer, lr_lambda=recorded_factor(config.params["factors"]))
    if config.kind == "warmup_cosine":
        parts = [
            getattr(lr_scheduler, part["class"])(optimizer, **part["kwargs"])
            for part in kwargs["schedulers"]
        ]
        return torch_class(optimizer, parts, milestones=kwargs["milestones"])  # type: ignore
    return torch_class(optimizer, **kwargs)  # type: ignore[no-any-return]


def lr_curve(config: ScheduleConfig, lr0: float, epochs: int) -> list[float]:
    """Learning rate used in each epoch 0..epochs-1, computed the way torch computes it.

    Step and exponential decay multiply the previous lr by gamma, as torch does, so the values
    are bit-identical; the other kinds use torch's closed forms.
    """
    p = config.params
    lrs: list[float] = []
    for epoch in range(epochs):
        if config.kind == "constant":
            lr = lr0
        elif config.kind == "step":
            # 1. multiply by gamma at each multiple of step_size, as StepLR does.
            lr = (
                lr0 if epoch == 0 else lrs[-1] * (p["gamma"] if epoch % p["step_size"] == 0 else 1)
            )
        elif config.kind == "exponential":
            lr = lr0 if epoch == 0 else lrs[-1] * p["gamma"]
        elif config.kind == "linear":
            # 2. interpolate the factor from start to end over total_iters, then hold.
            progress = min(epoch, p["total_iters"]) / p["total_iters"]
            lr = lr0 * (p["start_factor"] + (p["end_factor"] - p["start_factor"]) * progress)
        elif config.kind == "inverse_time":
            lr = lr0 * inverse_time_factor(p["alpha"])(epoch)
        elif config.kind == "recorded":
            lr = lr0 * recorded_factor(p["factors"])(epoch)
        elif config.kind == "cosine":
            lr = _cosine(lr0, p["eta_min"], epoch, p["T_max"])
        elif config.kind == "polynomial":
            lr = lr0 * (1.0 - min(epoch, p["total_iters"]) / p["total_iters"]) ** p["power"]
        elif config.kind == "multistep":
            # 3. multiply by gamma once per milestone reached this epoch, as MultiStepLR does.
            drops = p["milestones"].count(epoch)
            lr = lr0 if epoch == 0 else lrs[-1] * p["gamma"] ** drops if drops else lrs[-1]
        elif config.kind == "onecycle":
            lr = _one_cycle(lr0, p, epoch)
        elif config.kind == "cosine_warm_restarts":
            cycle_length, position = p["T_0"], epoch
            while position >= cycle_length:  # 4. restart: each cycle T_mult times longer
                position -= cycle_length
                cycle_length *= p["T_mult"]
            lr = _cosine(lr0, p["eta_min"], position, cycle_length)
        elif config.kind == "cyclic":
            # 5. a triangle from lr0 up to max_lr and back, step_size_up epochs each way.
            total = 2.0 * p["step_size_up"]
            cycle = math.floor(1 + epoch / total)
            x = 1.0 + epoch / total - cycle
            scale = x / 0.5 if x <= 0.5 else (x - 1) / (0.5 - 1)
            lr = lr0 + (p["max_lr"] - lr0) * scale
        elif config.kind == "warmup_cosine":
            # 6. LinearLR up to lr0 over warmup_iters, then a cosine from lr0 (SequentialLR).
            warmup = p["warmup_iters"]
            if epoch < warmup:
                lr = lr0 * (p["start_factor"] + (1.0 - p["start_factor"]) * epoch / warmup)
            else:
                lr = _cosine(lr0, p["eta_min"], epoch - warmup, p["T_max"])
        else:  # plateau: lr0 until the metric stalls (PlateauTracker follows the metric)
            lr = lr0
        lrs.append(lr)
    return lrs


def _cosine(lr0: float, eta_min: float, epoch: int, period: int) -> float:
    """Half a cosine from lr0 down to eta_min over `period` epochs (periodic after)."""
    return eta_min + (lr0 - eta_min) * (1 + math.cos(math.pi * epoch / period)) / 2


def _one_cycle(max_lr: float, p: Mapping[str, Any], step: int) -> float:
    """OneCycleLR's two cosine phases: up from max_lr / div_factor to max_lr over pct_start
    of the steps, then down to that start / final_div_factor (torch's arithmetic)."""
    initial = max_lr / p["div_factor"]
    phases = (
        (float(p["pct_start"] * p["total_steps"]) - 1, initial, max_lr),
        (p["total_steps"] - 1, max_lr, initial / p["final_div_factor"]),
    )
    start_step = 0.0
    for index, (end_step, start, end) in enumerate(phases):
        if step <= end_step or index == len(phases) - 1:
            pct = (step - start_step) / (end_step - start_step)
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        start_step = end_step
    raise AssertionError("unreachable: the last phase always answers")


@dataclass
class PlateauTracker:
    """ReduceLROnPlateau(mode="max", threshold_mode="rel", cooldown=0) as plain Python: after
    more than `patience` epochs without an accuracy above best * (1 + threshold), the lr is
    multiplied by `factor` (not below min_lr; a change under eps=1e-8 is skipped)."""

    lr: float
    factor: float
    patience: int
    threshold: float
    min_lr: float
    best: float = -math.inf
    bad_epochs: int = 0

    @classmethod
    def of(cls, config: ScheduleConfig, lr0: float) -> PlateauTracker:
        p = config.params
        return cls(lr0, p["factor"], p["patience"], p["threshold"], p["min_lr"])

    def step(self, accuracy: float) -> float:
        """The lr of the next epoch, given this epoch's validation accuracy."""
        if accuracy > self.best * (1.0 + self.threshold):
            self.best, self.bad_epochs = accuracy, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            reduced = max(self.lr * self.factor, self.min_lr)
            if self.lr - reduced > 1e-8:
                self.lr = reduced
            self.bad_epochs = 0
        return self.lr
