"""K trials trained in lock-step as one vectorized model.

The tutorial's network is tiny (34 -> 34 -> 1), so one trial per Python loop spends its time in
interpreter and dispatch overhead. Here K trials' weights are stacked ([K, 34, 34], ...), every
step is a few large matmuls over the shared mini-batch, with per-trial learning rate, momentum
(or Adam's betas) and weight decay as tensors. Members may train on different folds of the data
(cross-validated trials): each fold's members share that fold's mini-batch order. Each member
keeps its own seeded initial weights and optimizer state, so it computes what `training.train`
computes for it (see `train_batch`), up to float32 rounding; tests hold the two to each other.
Members that diverge or are stopped leave the batch without touching the rest.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from lrsweep.trainer.config import SCHEDULE_FREE, TrainConfig
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.module_stack import ModuleStack
from lrsweep.trainer.optimizers import (
    ScheduleFreeClock,
    StepSettings,
    new_state,
    schedule_free_mode_weights,
    update,
)
from lrsweep.trainer.schedules import PlateauTracker, lr_curve
from lrsweep.trainer.stack import Stack
from lrsweep.trainer.training import (
    EpochResult,
    RunStatus,
    Tensors,
    TrainResult,
    classification_loss,
    correct,
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
LOSS_CHUNK_STEPS = 64  # steps whose logits are kept for one train-loss op


def fold_order_seed(order_seed: int, fold: int) -> int:
    """The mini-batch order seed of one fold's members (fold 0 keeps `order_seed`)."""
    return order_seed + FOLD_ORDER_STRIDE * fold


BatchCallback = Callable[[Mapping[int, EpochResult]], set[int]]
"""Called after each epoch with {member index: result} for members still running; returns the
indices to stop (they end with status STOPPED)."""


@dataclass
class _Stack:
    """Parameters, gradients and optimizer state of the members still running, one column per
    member: rows are w1 transposed ([F in, H hidden], row-major), b1 [H], w2 transposed
    ([H, O outputs]), b2 [O] (ionosphere: F = H = 34, O = 1).

    With members as columns every parameter is a contiguous block of rows, so layer 1 of all A
    members is one [B, F] x [F, H*A] matmul, its gradient is one matmul written in place, and
    an optimizer step is a few elementwise ops over the whole stack.
    """

    members: list[int]  # member indices, host side: reading them costs no device sync
    columns: torch.Tensor  # the same indices on the device, to gather per-member settings
    theta: torch.Tensor  # [P, A]
    grad: torch.Tensor  # [P, A]
    state: dict[str, torch.Tensor]  # [P, A] each: momentum buffer, or Adam's moments
    inputs: int
    hidden: int
    outputs: int
    steps: int = 0  # optimizer steps taken (Adam's bias corrections)
    clock: ScheduleFreeClock | None = None  # a Schedule-Free optimizer's running scalars
    # Views of theta and grad, made once per set of members: slicing them every step cost
    # about a fifth of a step's dispatch at mini-batch 24.
    _weights: tuple[torch.Tensor, ...] = field(init=False, repr=False)
    _grads: tuple[torch.Tensor, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._weights, self._grads = self.views(self.theta), self.views(self.grad)

    @classmethod
    def of(
        cls,
        indices: Sequence[int],
        seeds: Sequence[int],
        tensors: Tensors,
        optimizer: str = "sgd",
    ) -> _Stack:
        """Members at `indices` (at least one) with the initial weights of their seeds, as
        `nn.Linear`s, and a zeroed state of `optimizer`."""
        inputs, outputs, device = tensors.n_features, tensors.n_outputs, tensors.x_train.device
        hidden = inputs  # the shapes `initial_weights` draws
        columns = [
            torch.cat([w1.T.reshape(-1), b1, w2.T.reshape(-1), b2])
            for w1, b1, w2, b2 in (initial_weights(seed, inputs, outputs) for seed in seeds)
        ]
        theta = torch.stack(columns, dim=1).to(device)
        member_index = torch.tensor(list(indices), dtype=torch.long, device=device)
        clock = ScheduleFreeClock.of(len(indices), device) if optimizer in SCHEDULE_FREE else None
        return cls(
            list(indices), member_index, theta, torch.empty_like(theta),
            new_state(optimizer, theta), inputs, hidden, outputs, clock=clock,
        )  # fmt: skip

    @property
    def _row_ends(self) -> tuple[int, int, int]:
        """Where the w1, b1 and w2 rows end (b2 is the last row)."""
        w1_end = self.inputs * self.hidden
        b1_end = w1_end + self.hidden
        return w1_end, b1_end, b1_end + self.hidden * self.outputs

    def train(self) -> None:
        """No mode to set: the built-in MLP has no dropout or normalisation."""

    eval = train

    def views(self, flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """w1 [in, hidden*A], b1 [1, hidden*A], w2 [hidden, out, A], b2 [out, A] of a [P, A]
        tensor."""
        a, n_in, n_hidden = flat.shape[1], self.inputs, self.hidden
        w1_end, b1_end, w2_end = self._row_ends
        return (
            flat[:w1_end].view(n_in, n_hidden * a),
            flat[w1_end:b1_end].view(1, n_hidden * a),
            flat[b1_end:w2_end].view(n_hidden, self.outputs, a),
            flat[w2_end:],
        )

    def weights_of(self, positions: Sequence[int]) -> list[tuple[torch.Tensor, ...]]:
        """Final weights of the members at `positions`, CPU, in `nn.Linear` layout."""
        columns = self.theta.T[list(positions)].cpu()
        w1_end, b1_end, w2_end = self._row_ends
        return [
            (
                column[:w1_end].view(self.inputs, self.hidden).T.contiguous(),
                column[w1_end:b1_end].clone(),
                column[b1_end:w2_end].view(self.hidden, self.outputs).T.contiguous(),
                column[w2_end:].clone(),
            )
            for column in columns
        ]

    def keep(self, positions: Sequence[int]) -> None:
        """Drop every member not at `positions` (positions in the current stack)."""
        index = torch.tensor(list(positions), dtype=torch.long, device=self.theta.device)
        self.members = [self.members[p] for p in positions]
        self.columns = self.columns[index]
        self.theta = self.theta[:, index]
        self.state = {name: value[:, index] for name, value in self.state.items()}
        if self.clock is not None:
            self.clock.keep(index)
        self.grad = torch.empty_like(self.theta)
        self.__post_init__()

    def optimizer_step(
        self, x: torch.Tensor, y: torch.Tensor, step: StepSettings, logits_out: torch.Tensor
    ) -> None:
        """One mini-batch of the optimizer for every member, its logits before the update
        written to `logits_out` [B, O, A] (the epoch's train loss is computed from them at its
        end)."""
        hidden = self.forward(x, logits_out)
        self.backward(x, hidden, _loss_gradient(logits_out, y).div_(len(x)))
        self.steps += 1
        if self.clock is not None:
            step = self.clock.tick(step)
        update(self.theta, self.grad, self.state, step, self.steps, fused=True)

    def lerp_to_state(self, name: str, weight: torch.Tensor) -> None:
        self.theta.lerp_(self.state[name], weight)

    def copy_member(self, source: int, target: int) -> None:
        for tensor in (self.theta, *self.state.values()):
            tensor[:, target] = tensor[:, source]
        if self.clock is not None:
            self.clock.copy_member(source, target)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] rows shared by all members -> logits [B, O, A]."""
        logits = features.new_empty(len(features), self.outputs, len(self.members))
        self.forward(features, logits)
        return logits

    def forward(self, features: torch.Tensor, logits_out: torch.Tensor) -> torch.Tensor:
        """[B, F] rows shared by all members -> hidden activations [B, H, A]; the logits
        [B, O, A] are written to `logits_out`."""
        w1, b1, w2, b2 = self._weights
        hidden = torch.addmm(b1, features, w1).relu_().view(len(features), self.hidden, -1)
        if self.outputs == 1:  # the tutorial's one logit: a product and a sum, no matmul
            torch.sum(hidden * w2[:, 0], dim=1, keepdim=True, out=logits_out)
        else:
            logits_out.copy_(torch.einsum("bha,hoa->boa", hidden, w2))
        logits_out.add_(b2)
        return hidden

    def backward(
        self, features: torch.Tensor, hidden: torch.Tensor, dlogits: torch.Tensor
    ) -> None:
        """Gradients of the mean losses into `grad`, given d(loss)/d(logits) [B, O, A]."""
        w1_grad, b1_grad, w2_grad, b2_grad = self._grads
        w2 = self._weights[2]
        torch.sum(dlogits, dim=0, out=b2_grad)
        if self.outputs == 1:  # the tutorial's shape: no einsum
            torch.sum(hidden * dlogits, dim=0, out=w2_grad[:, 0])
            dhidden = w2[:, 0] * dlogits
        else:
            w2_grad.copy_(torch.einsum("bha,boa->hoa", hidden, dlogits))
            dhidden = torch.einsum("hoa,boa->bha", w2, dlogits)
        # ReLU's own backward: the gradient where the activation was positive, in one op
        dpre = torch.ops.aten.threshold_backward(dhidden, hidden, 0).view(len(features), -1)
        torch.mm(features.T, dpre, out=w1_grad)
        torch.sum(dpre, dim=0, keepdim=True, out=b1_grad)


def train_batch(
    members: Sequence[BatchMember],
    folds: Sequence[Tensors],
    *,
    order_seed: int,
    on_epoch: BatchCallback | None = None,
    model_spec: ModelSpec | None = None,
) -> list[TrainResult]:
    """`BatchTraining` run to its end, `on_epoch` choosing after each epoch whom to stop."""
    training = BatchTraining(members, folds, order_seed=order_seed, model_spec=model_spec)
    for results in training.epochs():
        if on_epoch is not None:
            training.stop(on_epoch(results))
    return training.results()


class BatchTraining:
    """All members trained together, epoch by epoch; see the module docstring.

        training = BatchTraining(members, folds, order_seed=7)
        for results in training.epochs():  # {member index: EpochResult} of members running
            training.stop(members_to_stop)  # they end STOPPED, after this epoch
        training.results()  # one TrainResult per member, in member order

    A user's model (`model_spec`) trains through `ModuleStack` (torch.func) instead of the
    hand-written built-in MLP. Members of one fold see the same mini-batch order (seeded by
    `fold_order_seed`), so every step's inputs are shared and layer 1 is one large matmul per
    fold, mini-batch size and optimizer (a searched `batch_size` or `optimizer` splits a fold's
    members into groups);
    member k computes what `training.train(config, folds[fold], seed=seed,
    order_seed=fold_order_seed(...))` does. Forward and backward passes are written out (no
    autograd), and each epoch reads its numbers back from the device once.
    """

    def __init__(
        self,
        members: Sequence[BatchMember],
        folds: Sequence[Tensors],
        *,
        order_seed: int,
        model_spec: ModelSpec | None = None,
    ) -> None:
        self._epochs = members[0].config.epochs if members else 0
        if any(m.config.epochs != self._epochs for m in members):
            raise ValueError("members of one batch must share epochs")
        if any(not 0 <= m.fold < len(folds) for m in members):
            raise ValueError(f"a member's fold is outside the batch's {len(folds)} folds")
        epochs = self._epochs
        self._curves = [lr_curve(m.config.schedule, m.config.lr, epochs) for m in members]
        self._plateaus = {
            index: PlateauTracker.of(m.config.schedule, m.config.lr)
            for index, m in enumerate(members)
            if m.config.schedule.reads_metric
        }
        self._groups: list[_FoldGroup] = []
        self._settings: _MemberSettings | None = None
        if members:
            device = folds[0].x_train.device
            self._settings = _MemberSettings.of(members, self._curves, device)
        for key in sorted({_group_key(m) for m in members}):
            fold, batch_size, optimizer = key
            tensors = folds[fold]
            indices = [i for i, m in enumerate(members) if _group_key(m) == key]
            seeds = [members[i].seed for i in indices]
            stack: Stack = (
                _Stack.of(indices, seeds, tensors, optimizer)
                if model_spec is None
                else ModuleStack.of(indices, seeds, tensors, model_spec, optimizer)
            )
            order = torch.Generator().manual_seed(fold_order_seed(order_seed, fold))
            self._groups.append(_FoldGroup(tensors, stack, order, batch_size, optimizer))
        self._histories: list[list[EpochResult]] = [[] for _ in members]
        self._statuses = [RunStatus.COMPLETED] * len(members)
        self._weights: list[tuple[torch.Tensor, ...]] = [() for _ in members]
        self._stopping: set[int] = set()
        self._exploits: list[tuple[int, int, float]] = []

    def epochs(self) -> Iterator[Mapping[int, EpochResult]]:
        """Train one epoch per step of the loop and yield its results; members that diverged
        are missing from them (and end DIVERGED)."""
        epochs, curves, settings = self._epochs, self._curves, self._settings
        for epoch in range(epochs):
            assert settings is not None  # a batch with epochs has members
            results: dict[int, EpochResult] = {}
            for group in self._groups:
                if group.stack.members:
                    for member, numbers in group.train_epoch(epoch, settings).items():
                        if numbers is None:
                            self._statuses[member] = RunStatus.DIVERGED
                            continue
                        accuracy, train_loss, val_loss = numbers
                        results[member] = EpochResult(
                            epoch, accuracy, train_loss, curves[member][epoch], val_loss
                        )
            for member, result in results.items():
                self._histories[member].append(result)
                if member in self._plateaus and epoch + 1 < epochs:  # next lr follows accuracy
                    self._set_lr_from(member, epoch + 1, self._plateaus[member].step(
                        result.validation_accuracy
                    ))  # fmt: skip
            self._stopping, self._exploits = set(), []
            yield results
            for target, source, lr in self._exploits:
                self._copy_member(target, source, results)
                if epoch + 1 < epochs:
                    self._set_lr_from(target, epoch + 1, lr)
            stopped = self._stopping
            for member in stopped:
                self._statuses[member] = RunStatus.STOPPED
            last_epoch = epoch == epochs - 1
            for group in self._groups:
                group.drop(lambda m: m not in results or m in stopped, last_epoch, self._weights)
            if not any(group.stack.members for group in self._groups):
                break

    def stop(self, members: Iterable[int]) -> None:
        """End these members after the epoch just yielded (status STOPPED)."""
        self._stopping.update(members)

    def exploit(self, target: int, source: int, lr: float) -> None:
        """After the epoch just yielded, `target` goes on from `source`'s weights, optimizer
        state and settings, at a constant `lr` from the next epoch (Population Based
        Training's exploit and explore). Both must still be running in one stack (one fold,
        mini-batch size and optimizer); targets of one epoch should not be its sources."""
        self._exploits.append((target, source, lr))

    def _copy_member(self, target: int, source: int, running: Mapping[int, EpochResult]) -> None:
        if target not in running or source not in running:
            raise ValueError(f"exploit of {target} from {source}: both must be running")
        group = next(g for g in self._groups if target in g.stack.members)
        if source not in group.stack.members:
            raise ValueError(f"exploit of {target} from {source}: not in one stack")
        members = group.stack.members
        group.stack.copy_member(members.index(source), members.index(target))
        assert self._settings is not None  # a batch with running members has settings
        self._settings.copy_member(source, target)
        self._plateaus.pop(target, None)  # its lr is the exploit's from now on

    def _set_lr_from(self, member: int, epoch: int, lr: float) -> None:
        """`member`'s lr is `lr` from `epoch` to the end."""
        assert self._settings is not None
        self._curves[member][epoch:] = [lr] * (self._epochs - epoch)
        self._settings.lrs[member, epoch:] = lr

    def results(self) -> list[TrainResult]:
        """Each member's status, epochs and final weights, in member order."""
        return [
            TrainResult(status, tuple(history), final)
            for status, history, final in zip(
                self._statuses, self._histories, self._weights, strict=True
            )
        ]


def _group_key(member: BatchMember) -> tuple[int, int, str]:
    """Members train in one stack when they share a fold, a mini-batch size and an optimizer."""
    return member.fold, member.config.batch_size, member.config.optimizer


@dataclass(frozen=True)
class _MemberSettings:
    """Per-member optimizer settings on the device (rows = member index)."""

    lrs: torch.Tensor  # [K, epochs]; these and the rest float64, as torch.optim's floats
    momenta: torch.Tensor  # [K]
    decays: torch.Tensor  # [K]
    beta1: torch.Tensor  # [K]
    beta2: torch.Tensor  # [K]
    eps: torch.Tensor  # [K]
    decaying: bool

    @classmethod
    def of(
        cls, members: Sequence[BatchMember], curves: list[list[float]], device: torch.device
    ) -> _MemberSettings:
        configs = [m.config for m in members]

        def per_member(values: list[float]) -> torch.Tensor:  # float64: torch.optim's floats
            return torch.tensor(values, dtype=torch.float64, device=device)

        return cls(
            lrs=per_member(curves),  # type: ignore[arg-type]
            momenta=per_member([c.momentum for c in configs]),
            decays=per_member([c.weight_decay for c in configs]),
            beta1=per_member([c.betas[0] for c in configs]),
            beta2=per_member([c.betas[1] for c in configs]),
            eps=per_member([c.eps for c in configs]),
            decaying=any(c.weight_decay for c in configs),
        )

    def copy_member(self, source: int, target: int) -> None:
        """`target` takes `source`'s settings (all but its lrs)."""
        for row in (self.momenta, self.decays, self.beta1, self.beta2, self.eps):
            row[target] = row[source]

    def step(self, optimizer: str, columns: torch.Tensor, epoch: int) -> StepSettings:
        """The epoch's settings of the members in `columns`, each [1, A]."""
        return StepSettings(
            kind=optimizer,
            lr=self.lrs[columns, epoch].unsqueeze(0),
            momentum=self.momenta[columns].unsqueeze(0),
            decay=self.decays[columns].unsqueeze(0),
            beta1=self.beta1[columns].unsqueeze(0),
            beta2=self.beta2[columns].unsqueeze(0),
            eps=self.eps[columns].unsqueeze(0),
            decaying=self.decaying,
        )


@dataclass
class _FoldGroup:
    """The members that train on one fold with one mini-batch size and one optimizer: the
    fold's data, their stacked weights and optimizer state, the fold's batch order."""

    tensors: Tensors
    stack: Stack
    batch_order: torch.Generator
    batch_size: int
    optimizer: str

    def train_epoch(
        self, epoch: int, settings: _MemberSettings
    ) -> dict[int, tuple[float, float, float] | None]:
        """One epoch of training for every member: {member: (validation accuracy, train loss,
        validation loss)}, or None for a member whose train loss is not finite (diverged)."""
        stack, tensors = self.stack, self.tensors
        n_train = len(tensors.y_train)
        order = torch.randperm(n_train, generator=self.batch_order).to(tensors.x_train.device)
        features, labels = tensors.x_train[order], tensors.y_train[order]
        step = settings.step(self.optimizer, stack.columns, epoch)
        to_training, to_evaluation = (
            schedule_free_mode_weights(step) if self.optimizer in SCHEDULE_FREE else (None, None)
        )
        members = len(stack.members)
        labels = _per_member(labels, members)
        # The steps' logits, a chunk of steps at a time: the train loss is one op per chunk
        # instead of two per step, in memory bounded whatever the rows.
        chunk_rows = min(n_train, LOSS_CHUNK_STEPS * self.batch_size)
        chunk_logits = features.new_empty(chunk_rows, tensors.n_outputs, members)
        loss_sum = features.new_zeros(members)
        stack.train()
        if to_training is not None:  # Schedule-Free trains y, from the averaged x
            stack.lerp_to_state("z", to_training)
        for chunk_start in range(0, n_train, chunk_rows):
            chunk_end = min(chunk_start + chunk_rows, n_train)
            for start in range(chunk_start, chunk_end, self.batch_size):
                end = min(start + self.batch_size, chunk_end)
                logits_out = chunk_logits[start - chunk_start : end - chunk_start]
                stack.optimizer_step(features[start:end], labels[start:end], step, logits_out)
            chunk = slice(0, chunk_end - chunk_start)
            loss_sum += classification_loss(
                chunk_logits[chunk], labels[chunk_start:chunk_end], reduction="none"
            ).sum(dim=0)
        if to_evaluation is not None:  # and evaluates (and keeps, at the end) x
            stack.lerp_to_state("z", to_evaluation)
        stack.eval()
        with torch.no_grad():
            val_logits = stack.logits(tensors.x_val)
            targets = _per_member(tensors.y_val, members)
            numbers = torch.stack(
                [
                    correct(val_logits, targets).float(),  # exact hit counts
                    loss_sum / n_train,
                    classification_loss(val_logits, targets, reduction="none").mean(dim=0),
                ]
            ).T.tolist()  # the epoch's one read from the device
        n_val = len(tensors.y_val)
        return {
            member: (hits / n_val, train_loss, val_loss) if math.isfinite(train_loss) else None
            for member, (hits, train_loss, val_loss) in zip(stack.members, numbers, strict=True)
        }

    def drop(
        self,
        leaves: Callable[[int], bool],
        last_epoch: bool,
        weights: list[tuple[torch.Tensor, ...]],
    ) -> None:
        """Keep the final weights of members that leave (or of all, after the last epoch)."""
        stack = self.stack
        members = stack.members
        keep = [position for position, member in enumerate(members) if not leaves(member)]
        leaving = (
            range(len(members)) if last_epoch else sorted(set(range(len(members))) - set(keep))
        )
        for position, final in zip(leaving, stack.weights_of(leaving), strict=True):
            weights[members[position]] = final
        if len(keep) < len(members):
            stack.keep(keep)


def _per_member(labels: torch.Tensor, members: int) -> torch.Tensor:
    """[B] labels as [B, A] (the shape the losses take beside [B, O, A] logits)."""
    return labels.unsqueeze(1).expand(len(labels), members)


def _loss_gradient(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d(summed loss)/d(logits) [B, O, A]: sigmoid - y for one logit, softmax - one-hot."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits).sub_(labels.unsqueeze(1))
    return torch.softmax(logits, dim=1).scatter_add_(
        1, labels.unsqueeze(1), torch.full_like(logits[:, :1], -1.0)
    )
