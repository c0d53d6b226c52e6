"""K trials trained in lock-step as one vectorized model.

The tutorial's network is tiny (34 -> 34 -> 1), so one trial per Python loop spends its time in
interpreter and dispatch overhead. Here K trials' weights are stacked ([K, 34, 34], ...), every
step is a few large matmuls over the shared mini-batch, with per-trial learning rate, momentum
and weight decay as tensors. Members may train on different folds of the data (cross-validated
trials): each fold's members share that fold's mini-batch order. Each member keeps its own
seeded initial weights, so it computes what `training.train` computes for it (see
`train_batch`), up to float32 rounding; tests hold the two to each other. Members that diverge
or are stopped leave the batch without touching the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional

from trainer.config import TrainConfig
from trainer.schedules import lr_curve
from trainer.training import (
    EpochResult,
    RunStatus,
    Tensors,
    TrainResult,
    initial_weights,
)


@dataclass(frozen=True)
class BatchMember:
    """One model of a batch: what to train, the seed of its weights, and which fold's data
    (an index into the batch's folds) it trains and is validated on."""

    config: TrainConfig
    seed: int
    fold: int = 0


FOLD_ORDER_STRIDE = 7919


def fold_order_seed(order_seed: int, fold: int) -> int:
    """The mini-batch order seed of one fold's members (fold 0 keeps `order_seed`)."""
    return order_seed + FOLD_ORDER_STRIDE * fold


BatchCallback = Callable[[Mapping[int, EpochResult]], set[int]]
"""Called after each epoch with {member index: result} for members still running; returns the
indices to stop (they end with status STOPPED)."""


@dataclass
class _Stack:
    """Parameters and momentum buffers of the members still running (rows = members)."""

    members: torch.Tensor  # [A] member indices
    w1: torch.Tensor  # [A, 34, 34] (out, in), as nn.Linear stores it
    b1: torch.Tensor  # [A, 34]
    w2: torch.Tensor  # [A, 1, 34]
    b2: torch.Tensor  # [A, 1]
    buffers: list[torch.Tensor]

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.w1, self.b1, self.w2, self.b2]

    def weights_of(self, position: int) -> tuple[torch.Tensor, ...]:
        return tuple(p.detach()[position].cpu().clone() for p in self.params)

    def keep(self, rows: torch.Tensor) -> None:
        """Drop every member not in `rows` (positions in the current stack)."""
        self.members = self.members[rows]
        self.w1, self.b1, self.w2, self.b2 = (
            p.detach()[rows].requires_grad_() for p in self.params
        )
        self.buffers = [b[rows] for b in self.buffers]


def _stack_initial_weights(
    indices: Sequence[int], members: Sequence[BatchMember], device: torch.device
) -> _Stack:
    """The members at `indices`, stacked (rows keep their member index)."""
    weights = [initial_weights(members[index].seed) for index in indices]
    w1, b1, w2, b2 = (
        torch.stack([w[i] for w in weights]).to(device).requires_grad_()
        if weights
        else torch.empty(0)
        for i in range(4)
    )
    stack = _Stack(
        torch.tensor(list(indices), dtype=torch.long, device=device), w1, b1, w2, b2, []
    )
    stack.buffers = [torch.zeros_like(p) for p in stack.params]
    return stack


def _logits(stack: _Stack, features: torch.Tensor) -> torch.Tensor:
    """[B, 34] rows shared by all members -> [A, B] logits.

    Layer 1 of all A members is one [B, 34] x [34, A*34] matmul (one GEMM, not A small ones).
    """
    running, hidden_units, inputs = stack.w1.shape
    pre = torch.addmm(stack.b1.reshape(1, -1), features, stack.w1.reshape(-1, inputs).T)
    hidden = torch.relu(pre.view(-1, running, hidden_units))  # [B, A, 34]
    return (torch.einsum("bah,ah->ab", hidden, stack.w2.squeeze(1)) + stack.b2).contiguous()


def train_batch(
    members: Sequence[BatchMember],
    folds: Sequence[Tensors],
    *,
    order_seed: int,
    on_epoch: BatchCallback | None = None,
) -> list[TrainResult]:
    """Train all members together; see the module docstring. Results are in member order.

    Members of one fold see the same mini-batch order (seeded by `fold_order_seed`), so every
    step's inputs are shared and layer 1 is one large matmul per fold; member k computes what
    `training.train(config, folds[fold], seed=seed, order_seed=fold_order_seed(...))` does.
    """
    if not members:
        return []
    epochs, batch_size = members[0].config.epochs, members[0].config.batch_size
    if any((m.config.epochs, m.config.batch_size) != (epochs, batch_size) for m in members):
        raise ValueError("members of one batch must share epochs and batch_size")
    if any(not 0 <= m.fold < len(folds) for m in members):
        raise ValueError(f"a member's fold is outside the batch's {len(folds)} folds")
    device = folds[0].x_train.device
    lrs = torch.tensor(
        [lr_curve(m.config.schedule, m.config.lr, epochs) for m in members],
        dtype=torch.float32,
        device=device,
    )  # [K, epochs]
    momenta = torch.tensor([m.config.momentum for m in members], device=device)
    decays = torch.tensor([m.config.weight_decay for m in members], device=device)
    groups = [
        _FoldGroup(
            tensors,
            _stack_initial_weights(
                [i for i, m in enumerate(members) if m.fold == fold], members, device
            ),
            torch.Generator().manual_seed(fold_order_seed(order_seed, fold)),
        )
        for fold, tensors in enumerate(folds)
    ]
    histories: list[list[EpochResult]] = [[] for _ in members]
    statuses = [RunStatus.COMPLETED] * len(members)
    weights: list[tuple[torch.Tensor, ...]] = [() for _ in members]

    for epoch in range(epochs):
        results: dict[int, EpochResult] = {}
        for group in groups:
            if len(group.stack.members):
                results.update(
                    group.train_epoch(epoch, lrs, momenta, decays, batch_size, statuses)
                )
        for member, result in results.items():
            histories[member].append(result)
        stopped = on_epoch(results) if on_epoch is not None else set()
        for member in stopped:
            statuses[member] = RunStatus.STOPPED
        last_epoch = epoch == epochs - 1
        for group in groups:
            group.drop(lambda m: m not in results or m in stopped, last_epoch, weights)
        if not any(len(group.stack.members) for group in groups):
            break
    return [
        TrainResult(status, tuple(history), final)
        for status, history, final in zip(statuses, histories, weights, strict=True)
    ]


@dataclass
class _FoldGroup:
    """The members that train on one fold: its data, their stacked weights, its batch order."""

    tensors: Tensors
    stack: _Stack
    batch_order: torch.Generator

    def train_epoch(
        self,
        epoch: int,
        lrs: torch.Tensor,
        momenta: torch.Tensor,
        decays: torch.Tensor,
        batch_size: int,
        statuses: list[RunStatus],
    ) -> dict[int, EpochResult]:
        """One epoch of SGD for every member; their results (diverged ones are marked)."""
        stack, tensors = self.stack, self.tensors
        device = tensors.x_train.device
        running = stack.members.tolist()
        n_train = len(tensors.y_train)
        order = torch.randperm(n_train, generator=self.batch_order).to(device)
        lr = lrs[stack.members, epoch]
        momentum = momenta[stack.members]
        decay = decays[stack.members]
        loss_sum = torch.zeros(len(running), device=device)
        for rows in order.split(batch_size):
            logits = _logits(stack, tensors.x_train[rows])
            losses = functional.binary_cross_entropy_with_logits(
                logits, tensors.y_train[rows].expand_as(logits), reduction="none"
            ).mean(dim=1)
            grads = torch.autograd.grad(losses.sum(), stack.params)
            with torch.no_grad():
                for param, buffer, grad in zip(stack.params, stack.buffers, grads, strict=True):
                    shape = (-1,) + (1,) * (param.dim() - 1)
                    grad = grad + decay.view(shape) * param  # as SGD's weight_decay adds it
                    buffer.mul_(momentum.view(shape)).add_(grad)
                    param.sub_(lr.view(shape) * buffer)
            loss_sum += losses.detach() * len(rows)
        with torch.no_grad():
            train_loss = loss_sum / n_train
            val_logits = _logits(stack, tensors.x_val)
            targets = tensors.y_val.expand_as(val_logits)
            hits = ((val_logits > 0).float() == targets).float().sum(dim=1)  # exact counts
            val_loss = functional.binary_cross_entropy_with_logits(
                val_logits, targets, reduction="none"
            ).mean(dim=1)
        finite = torch.isfinite(train_loss).tolist()
        results = {}
        for position, member in enumerate(running):
            if not finite[position]:
                statuses[member] = RunStatus.DIVERGED
                continue
            results[member] = EpochResult(
                epoch,
                float(hits[position]) / len(tensors.y_val),
                float(train_loss[position]),
                float(lrs[member, epoch]),
                float(val_loss[position]),
            )
        return results

    def drop(
        self,
        leaves: Callable[[int], bool],
        last_epoch: bool,
        weights: list[tuple[torch.Tensor, ...]],
    ) -> None:
        """Keep the final weights of members that leave (or of all, after the last epoch)."""
        stack = self.stack
        running = stack.members.tolist()
        keep = [position for position, member in enumerate(running) if not leaves(member)]
        for position, member in enumerate(running):
            if last_epoch or position not in keep:
                weights[member] = stack.weights_of(position)
        if len(keep) < len(running):
            stack.keep(torch.tensor(keep, dtype=torch.long, device=stack.members.device))
