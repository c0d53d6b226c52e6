"""Learning-rate schedules: one validated config type, the real torch scheduler, its lr curve.

`build(optimizer, config)` returns the `torch.optim.lr_scheduler` object users step once per
epoch; `lr_curve(config, lr0, epochs)` is the same schedule as a pure function of the epoch, used
to draw and compare schedules without an optimizer. Tests hold the two to each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch.optim import Optimizer
    from torch.optim.lr_scheduler import LRScheduler

from trainer.errors import InvalidInputError


@dataclass(frozen=True)
class ParamSpec:
    """The legal values of one scheduler argument: type and bounds (open or closed)."""

    is_int: bool
    low: float
    high: float = math.inf
    low_open: bool = False

    def check(self, kind: str, name: str, value: object) -> int | float:
        """Return `value` converted to the param's type, or raise InvalidInputError."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInputError(f"{kind}.{name} must be a number; got {value!r}")
        if self.is_int and not float(value).is_integer():
            raise InvalidInputError(f"{kind}.{name} must be an integer; got {value!r}")
        number = int(value) if self.is_int else float(value)
        too_low = number <= self.low if self.low_open else number < self.low
        if not math.isfinite(number) or too_low or number > self.high:
            raise InvalidInputError(f"{kind}.{name} must be {self.describe()}; got {value!r}")
        return number

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if math.isinf(self.high) else "]"
        high = "inf" if math.isinf(self.high) else f"{self.high:g}"
        kind = "an integer" if self.is_int else "a number"
        return f"{kind} in {left}{self.low:g}, {high}{right}"


FACTOR = ParamSpec(is_int=False, low=0.0, high=1.0, low_open=True)
NONNEGATIVE = ParamSpec(is_int=False, low=0.0)
POSITIVE = ParamSpec(is_int=False, low=0.0, low_open=True)
COUNT = ParamSpec(is_int=True, low=1)


@dataclass(frozen=True)
class ScheduleKind:
    """A supported schedule: the torch class that implements it and its arguments, named as
    that class names them (so they are its keyword arguments)."""

    torch_class_name: str
    params: Mapping[str, ParamSpec]
    fixed_kwargs: Mapping[str, Any] = field(default_factory=dict)


def inverse_time_factor(alpha: float) -> Callable[[int], float]:
    """The tutorial's time-based decay, lr0 / (1 + alpha * epoch), as a LambdaLR factor."""

    def factor(epoch: int) -> float:
        return 1.0 / (1.0 + alpha * epoch)

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
    params: Mapping[str, int | float] = field(default_factory=dict)

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
        object.__setattr__(self, "params", MappingProxyType(checked))

    @property
    def torch_class_name(self) -> str:
        return SCHEDULES[self.kind].torch_class_name

    def torch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the torch class (inverse_time keeps `alpha` for its lambda)."""
        return {**SCHEDULES[self.kind].fixed_kwargs, **self.params}


def build(optimizer: Optimizer, config: ScheduleConfig) -> LRScheduler:
    """The real torch scheduler for `config`, attached to `optimizer`; step it once per epoch."""
    from torch.optim import lr_scheduler  # kept out of import time: the CLI starts faster

    torch_class = getattr(lr_scheduler, config.torch_class_name)
    if config.kind == "inverse_time":
        return torch_class(optimizer, lr_lambda=inverse_time_factor(config.params["alpha"]))
    return torch_class(optimizer, **config.torch_kwargs())  # type: ignore[no-any-return]


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
        elif config.kind == "cosine":
            # 3. half a cosine from lr0 down to eta_min over T_max epochs (periodic after).
            cosine = (1 + math.cos(math.pi * epoch / p["T_max"])) / 2
            lr = p["eta_min"] + (lr0 - p["eta_min"]) * cosine
        else:  # polynomial
            lr = lr0 * (1.0 - min(epoch, p["total_iters"]) / p["total_iters"]) ** p["power"]
        lrs.append(lr)
    return lrs
