"""The optimizers a trial trains with, applied per member of a stacked batch as torch.optim does.

Both engines (the built-in MLP's `_Stack`, a user's model's `ModuleStack`) hold each member's
optimizer state beside its weights and call `update` once per mini-batch with the members'
settings as tensors broadcast against the weights, so members with different lrs, betas or weight
decays train in one op per tensor and never share state. `update` computes what
`torch.optim.SGD`, `Adam` and `AdamW`, and `schedulefree`'s `SGDScheduleFree` and
`AdamWScheduleFree`, compute for each member, bit for bit; tests hold it and the engines to them.
Schedule-Free keeps two scalars per parameter group (the largest lr so far, the sum of its
averaging weights): shared by stacked members they would couple trials, so each member has its
own (`ScheduleFreeClock`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from lrsweep.trainer.config import OPTIMIZERS, SCHEDULE_FREE


def new_state(kind: str, param: torch.Tensor) -> dict[str, torch.Tensor]:
    """The optimizer state of `param` before its first step (stacked members: each member's
    slice is its own): zeros, and Schedule-Free's `z` a copy of the weights."""
    return {
        name: param.detach().clone() if name == "z" else torch.zeros_like(param)
        for name in OPTIMIZERS[kind][1]
    }


@dataclass(frozen=True)
class StepSettings:
    """One epoch's optimizer settings of the members still running, each shaped to broadcast
    against the stacked weights ([1, A] against [P, A]; [A, 1, ...] against [A, ...]). Built
    once per epoch and shared by its mini-batches; frozen, so a stack cannot change the
    settings of the steps after it.

    The settings are float64, as torch.optim holds them (Python floats); what torch passes to
    its float32 kernels as scalars is derived once, in float32, so each member's update rounds
    as torch's does (Adam with a small eps amplifies any difference in the last bit).
    """

    kind: str
    lr: torch.Tensor
    momentum: torch.Tensor
    decay: torch.Tensor
    beta1: torch.Tensor
    beta2: torch.Tensor
    eps: torch.Tensor
    decaying: bool  # any member's weight decay is non-zero: otherwise the decay op is skipped
    # Schedule-Free's averaging weight of this step (float64), set by `ScheduleFreeClock`.
    ckp1: torch.Tensor | None = None
    kernel: _KernelScalars = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kernel", _KernelScalars.of(self))

    def shaped(self, shape: tuple[int, ...]) -> StepSettings:
        """The settings viewed as `shape` (a [1, A] setting as [A, 1, 1] for [A, ., .])."""
        return self._map(lambda setting: setting.reshape(shape))

    def member(self, position: int) -> StepSettings:
        """One member's settings (0-d), for a stack that steps its members one at a time."""
        return self._map(lambda setting: setting.reshape(-1)[position])

    @property
    def schedule_free_beta(self) -> torch.Tensor:
        """Schedule-Free's interpolation constant (SGD's momentum, AdamW's beta1), float64."""
        return self.momentum if self.kind == "sgd_schedulefree" else self.beta1

    def _map(self, change: Callable[[torch.Tensor], torch.Tensor]) -> StepSettings:
        changed: dict[str, Any] = {name: change(getattr(self, name)) for name in _SETTINGS}
        ckp1 = None if self.ckp1 is None else change(self.ckp1)
        return StepSettings(kind=self.kind, decaying=self.decaying, ckp1=ckp1, **changed)


_SETTINGS = ("lr", "momentum", "decay", "beta1", "beta2", "eps")


@dataclass(frozen=True)
class _KernelScalars:
    """The float32 values torch's optimizers hand their kernels, per member."""

    lr: torch.Tensor
    momentum: torch.Tensor
    decay: torch.Tensor
    shrink: torch.Tensor  # AdamW's 1 - lr * weight_decay
    one_minus_beta1: torch.Tensor
    beta2: torch.Tensor
    one_minus_beta2: torch.Tensor
    eps: torch.Tensor
    ckp1: torch.Tensor | None  # Schedule-Free: the weight of z in y's interpolation
    y_step: torch.Tensor | None  # Schedule-Free: lr * (beta * (1 - ckp1) - 1)

    @classmethod
    def of(cls, settings: StepSettings) -> _KernelScalars:
        def kernel(value: torch.Tensor) -> torch.Tensor:
            return value.to(torch.float32)

        return cls(
            lr=kernel(settings.lr),
            momentum=kernel(settings.momentum),
            decay=kernel(settings.decay),
            shrink=kernel(1 - settings.lr * settings.decay),
            one_minus_beta1=kernel(1 - settings.beta1),
            beta2=kernel(settings.beta2),
            one_minus_beta2=kernel(1 - settings.beta2),
            eps=kernel(settings.eps),
            ckp1=None if settings.ckp1 is None else kernel(settings.ckp1),
            y_step=(
                None
                if settings.ckp1 is None
                else kernel(settings.lr * (settings.schedule_free_beta * (1 - settings.ckp1) - 1))
            ),
        )


@dataclass
class ScheduleFreeClock:
    """Each member's running Schedule-Free scalars, [1, A] float64 (what `SGDScheduleFree`
    and `AdamWScheduleFree` keep per parameter group): the largest lr so far and the sum of
    the averaging weights, with the package's defaults r = 0, weight_lr_power = 2 and no
    warm-up (the lr schedule is the recipe's)."""

    lr_max: torch.Tensor
    weight_sum: torch.Tensor

    @classmethod
    def of(cls, members: int, device: torch.device) -> ScheduleFreeClock:
        return cls(
            lr_max=torch.full((1, members), -1.0, dtype=torch.float64, device=device),
            weight_sum=torch.zeros((1, members), dtype=torch.float64, device=device),
        )

    def tick(self, settings: StepSettings) -> StepSettings:
        """Advance by one step at the settings' lrs ([1, A]); the settings with its ckp1."""
        self.lr_max = torch.maximum(settings.lr, self.lr_max)
        weight = self.lr_max**2
        self.weight_sum = self.weight_sum + weight
        return replace(settings, ckp1=weight / self.weight_sum)

    def keep(self, index: torch.Tensor) -> None:
        """Only the members at `index` (positions in the stack)."""
        self.lr_max, self.weight_sum = self.lr_max[:, index], self.weight_sum[:, index]

    def copy_member(self, source: int, target: int) -> None:
        """The member at position `target` takes the scalars of the one at `source`."""
        for scalars in (self.lr_max, self.weight_sum):
            scalars[:, target] = scalars[:, source]


def schedule_free_mode_weights(settings: StepSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The lerp weights towards z that switch Schedule-Free weights to training (x -> y:
    1 - beta) and to evaluation (y -> x: 1 - 1/beta), float32, shaped as the settings."""
    beta = settings.schedule_free_beta
    return (1 - beta).to(torch.float32), (1 - 1 / beta).to(torch.float32)


def update(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: Mapping[str, torch.Tensor],
    settings: StepSettings,
    step: int,
    *,
    fused: bool = False,
) -> None:
    """One optimizer step of `param` (float32) in place (`grad` may be overwritten), `step`
    counting from 1 (Adam's bias corrections). Each op is the one torch's single-tensor
    optimizer runs, with a per-member tensor where torch has a scalar, so the result is torch's
    bit for bit; `fused` folds SGD's momentum into one multiply-add (the built-in engine's hot
    path: 64 members train 11% faster), which rounds differently in the last bit."""
    scalars = settings.kernel
    if settings.kind in SCHEDULE_FREE:
        return _schedule_free_update(param, grad, state, settings, step)
    if settings.decaying and settings.kind != "adamw":  # L2: grad + decay * weight
        grad.addcmul_(param, scalars.decay)
    if settings.kind == "sgd":
        buffer = state["momentum_buffer"]
        if fused:
            torch.addcmul(grad, buffer, scalars.momentum, out=buffer)
        else:
            buffer.mul_(scalars.momentum).add_(grad)
        param.addcmul_(buffer, scalars.lr, value=-1.0)
        return
    if settings.decaying and settings.kind == "adamw":  # decoupled: weights shrink
        param.mul_(scalars.shrink)
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, scalars.one_minus_beta1)
    exp_avg_sq.mul_(scalars.beta2).addcmul_(grad * scalars.one_minus_beta2, grad)
    step_size = (settings.lr / (1 - settings.beta1**step)).to(torch.float32)
    bias_correction2_sqrt = (1 - settings.beta2**step).sqrt().to(torch.float32)
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(scalars.eps)
    param.addcdiv_(exp_avg * step_size, denom, value=-1.0)


def _schedule_free_update(
    param: torch.Tensor,
    grad: torch.Tensor,
    state: Mapping[str, torch.Tensor],
    settings: StepSettings,
    step: int,
) -> None:
    """Schedule-Free's step of y (the weights trained, `param`) and z; AdamW's first scales the
    gradient by its second moment."""
    scalars, z = settings.kernel, state["z"]
    assert scalars.ckp1 is not None and scalars.y_step is not None, "ScheduleFreeClock.tick"
    if settings.kind == "adamw_schedulefree":
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(scalars.beta2).addcmul_(grad * scalars.one_minus_beta2, grad)
        bias_correction2 = (1 - settings.beta2**step).to(torch.float32)
        grad.div_(exp_avg_sq.div(bias_correction2).sqrt_().add_(scalars.eps))
    if settings.decaying:
        grad.addcmul_(param, scalars.decay)
    param.lerp_(z, scalars.ckp1)
    param.addcmul_(grad, scalars.y_step)
    z.addcmul_(grad, scalars.lr, value=-1.0)
