"""One trial's training run: the tutorial's MLP, SGD with momentum (or the recipe's optimizer),
one scheduler step per epoch.

Two classes train as the tutorial does (one logit, BCE); more classes get one logit each and
cross-entropy.

Reads top to bottom like the classic tutorial: tensors (prepared once per process), model,
optimizer, scheduler, loop. After every epoch a callback sees the validation accuracy and may
stop the run (that is how pruning plugs in); a non-finite loss ends the run as diverged instead
of crashing the worker.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lrsweep.errors import InvalidInputError
from lrsweep.trainer.config import TrainConfig
from lrsweep.trainer.data import Dataset
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.preprocessing import standardized
from lrsweep.trainer.schedules import build


@dataclass(frozen=True)
class Tensors:
    """Train and validation tensors, already on the training device. Labels are float 0/1
    for one output (BCE) and class indices (int64) for several (cross-entropy)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    n_outputs: int = 1

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    @classmethod
    def from_arrays(cls, train: Dataset, validation: Dataset, device: torch.device) -> Tensors:
        """The rows of `train` to train on and of `validation` to score, standardized (when the
        schema says so) with the mean and variance of `train`'s rows only."""
        n_outputs = train.schema.n_outputs
        label_type = torch.float32 if n_outputs == 1 else torch.int64
        x_train, x_val = train.features, validation.features
        if train.schema.preprocessing.standardize:
            x_train, x_val = standardized(x_train, x_val, train.schema.n_numeric)

        def as_tensor(array: object, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(array, device=device).to(dtype)

        return cls(
            x_train=as_tensor(x_train),
            y_train=as_tensor(train.labels, label_type),
            x_val=as_tensor(x_val),
            y_val=as_tensor(validation.labels, label_type),
            n_outputs=n_outputs,
        )


@functools.lru_cache(maxsize=32)
def split_tensors(dataset: Dataset, validation_rows: tuple[int, ...], device: str) -> Tensors:
    """Validation rows and all others (for training) as device tensors, built once per process.

    The rows come from the study (`data.validation_rows` at creation), so every worker, on any
    machine, holds out exactly the same ones.
    """
    held_out = np.zeros(len(dataset), dtype=bool)
    held_out[list(validation_rows)] = True
    return Tensors.from_arrays(
        dataset.take(np.flatnonzero(~held_out)),
        dataset.take(np.flatnonzero(held_out)),
        torch.device(device),
    )


def resolve_device(name: str | None) -> torch.device:
    """CUDA when available (or asked for), else CPU; an unusable request is a user error."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidInputError(f"unknown device {name!r}: use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"unsupported device {name!r}: use cpu, cuda or cuda:N")
    return device


def initial_weights(seed: int, n_features: int, n_outputs: int) -> tuple[torch.Tensor, ...]:
    """w1 [F, F], b1 [F], w2 [O, F], b2 [O] of the built-in MLP, drawn as nn.Linear's default
    init draws them (uniform within 1/sqrt(fan_in)), from a generator of their own: seeded,
    cheap, and without touching the global RNG."""
    generator = torch.Generator().manual_seed(seed)
    hidden = n_features  # the tutorial's hidden layer is as wide as its input (34 -> 34)
    bound = 1.0 / math.sqrt(n_features)  # both layers have fan_in F
    shapes = ((hidden, n_features), (hidden,), (n_outputs, hidden), (n_outputs,))
    return tuple(
        torch.empty(shape).uniform_(-bound, bound, generator=generator) for shape in shapes
    )


def build_model(seed: int, n_features: int, n_outputs: int, device: torch.device) -> nn.Module:
    """F -> F ReLU -> O logits (ionosphere: 34 -> 34 -> 1); the sigmoid or softmax lives in
    the loss for stability."""
    model = nn.Sequential(
        nn.Linear(n_features, n_features), nn.ReLU(), nn.Linear(n_features, n_outputs)
    )
    with torch.no_grad():
        weights = initial_weights(seed, n_features, n_outputs)
        for parameter, value in zip(model.parameters(), weights, strict=True):
            parameter.copy_(value)
    return model.to(device)


def make_model(model_spec: ModelSpec | None, seed: int, tensors: Tensors) -> nn.Module:
    """The model a trial trains on `tensors`: the built-in MLP, or the user's."""
    shape = (tensors.n_features, tensors.n_outputs)
    if model_spec is None:
        return build_model(seed, *shape, tensors.x_train.device)
    return model_spec.build(seed, *shape, tensors.x_train.device)


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """BCE on one logit [N, 1] with 0/1 labels, cross-entropy on [N, C] with class indices."""
    if logits.shape[1] == 1:
        return nn.functional.binary_cross_entropy_with_logits(
            logits.squeeze(1), labels, reduction=reduction
        )
    return nn.functional.cross_entropy(logits, labels, reduction=reduction)


def correct(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many rows the logits [N, O] (or [N, O, A]: A models) classify right: an exact
    count (per model), on the device."""
    if logits.shape[1] == 1:
        return ((logits.squeeze(1) > 0).to(labels.dtype) == labels).sum(dim=0)
    return (logits.argmax(dim=1) == labels).sum(dim=0)


class RunStatus(enum.Enum):
    COMPLETED = "completed"
    STOPPED = "stopped"
    DIVERGED = "diverged"


@dataclass(frozen=True)
class EpochResult:
    """One epoch's numbers; the validation loss (mean BCE or cross-entropy) breaks ties
    between accuracies."""

    epoch: int
    validation_accuracy: float
    train_loss: float
    lr: float
    validation_loss: float


@dataclass(frozen=True)
class TrainResult:
    """How a run ended, its per-epoch history and its final weights (CPU, in the order of the
    model's `parameters()`)."""

    status: RunStatus
    history: tuple[EpochResult, ...]
    weights: tuple[torch.Tensor, ...] = ()

    @property
    def final_accuracy(self) -> float | None:
        return self.history[-1].validation_accuracy if self.history else None


EpochCallback = Callable[[EpochResult], bool]
"""Called after each epoch; returning True stops the run (status STOPPED)."""


def evaluate(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """Accuracy and mean loss on held-out rows."""
    with torch.no_grad():
        logits = model(features)
        return float(correct(logits, labels)) / len(labels), float(
            classification_loss(logits, labels)
        )


def train(
    config: TrainConfig,
    tensors: Tensors,
    *,
    seed: int,
    order_seed: int | None = None,
    on_epoch: EpochCallback | None = None,
    model_spec: ModelSpec | None = None,
) -> TrainResult:
    """Train one model (the built-in MLP, or `model_spec`'s) from seeded initial weights
    (`seed`) and mini-batch order (`order_seed`, default `seed`); see the module docstring."""
    device = tensors.x_train.device
    model = make_model(model_spec, seed, tensors)
    optimizer = config.make_optimizer(model.parameters())
    scheduler = build(optimizer, config.schedule)
    batch_order = torch.Generator().manual_seed(seed if order_seed is None else order_seed)
    n_train = len(tensors.y_train)
    history: list[EpochResult] = []

    for epoch in range(config.epochs):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        if config.schedule_free:  # the weights its steps move (y), from the averaged ones
            optimizer.train()  # type: ignore[attr-defined]
        loss_sum = torch.zeros((), device=device)
        for rows in torch.randperm(n_train, generator=batch_order).split(config.batch_size):
            rows = rows.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = classification_loss(model(tensors.x_train[rows]), tensors.y_train[rows])
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(rows)
        train_loss = float(loss_sum) / n_train
        if not math.isfinite(train_loss):
            return _result(RunStatus.DIVERGED, history, model)
        if config.schedule_free:  # the averaged weights (x): evaluated, and kept at the end
            optimizer.eval()  # type: ignore[attr-defined]
        model.eval()
        val_accuracy, val_loss = evaluate(model, tensors.x_val, tensors.y_val)
        if config.schedule.reads_metric:
            scheduler.step(val_accuracy)  # type: ignore[arg-type]
        else:
            scheduler.step()
        result = EpochResult(epoch, val_accuracy, train_loss, lr, val_loss)
        history.append(result)
        if on_epoch is not None and on_epoch(result):
            return _result(RunStatus.STOPPED, history, model)
    return _result(RunStatus.COMPLETED, history, model)


def _result(status: RunStatus, history: list[EpochResult], model: nn.Module) -> TrainResult:
    weights = tuple(p.detach().cpu().clone() for p in model.parameters())
    return TrainResult(status, tuple(history), weights)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Torch on `count` CPU threads meanwhile. The engine's ops are small: on 70,000 rows, 4
    models, 5 epochs, two threads took 1.73 s for what one did in 1.50 s on an idle 2-core
    machine, and 7.9 s against 2.1 s beside another busy process."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
