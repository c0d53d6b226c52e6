"""Both engines train SGD, Adam and AdamW members as torch.optim trains each model alone:
the optimizer's arithmetic bit for bit over generated cases (hypothesis), whole runs of both
engines up to float32 rounding."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import REPO
from lrsweep.trainer import (
    EpochResult,
    ScheduleConfig,
    Tensors,
    TrainConfig,
    load_dataset,
    split_tensors,
    train,
    validation_rows,
)
from lrsweep.trainer.config import OPTIMIZERS, SCHEDULE_FREE, WITH_MOMENTUM
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.optimizers import (
    ScheduleFreeClock,
    StepSettings,
    new_state,
    schedule_free_mode_weights,
    update,
)
from lrsweep.trainer.vectorized import BatchMember, train_batch

EPOCHS = 4
SCHEDULES = (
    ScheduleConfig("constant"),
    ScheduleConfig("step", {"step_size": 2, "gamma": 0.5}),
    ScheduleConfig("cosine", {"T_max": EPOCHS, "eta_min": 0.0}),
    ScheduleConfig(
        "warmup_cosine", {"warmup_iters": 2, "start_factor": 0.1, "T_max": 2, "eta_min": 0.0}
    ),
)


@pytest.fixture(scope="module")
def tensors(data_path: Path) -> Tensors:
    torch.set_num_threads(1)
    data = load_dataset(data_path)
    return split_tensors(data, validation_rows(data), "cpu")


MEMBERS = (  # one batch: each optimizer, with and without weight decay, several schedules
    # (Schedule-Free's lr follows the recipe's schedule too, as torch's scheduler sets it)
    TrainConfig(SCHEDULES[0], lr=0.1, momentum=0.9, weight_decay=0.01, epochs=EPOCHS),
    TrainConfig(SCHEDULES[1], lr=0.01, epochs=EPOCHS, optimizer="adam"),
    TrainConfig(
        SCHEDULES[2], lr=0.003, epochs=EPOCHS, optimizer="adam", betas=(0.8, 0.99),
        weight_decay=1e-3,
    ),
    TrainConfig(SCHEDULES[3], lr=0.01, epochs=EPOCHS, optimizer="adamw", weight_decay=0.05),
    TrainConfig(
        SCHEDULES[0], lr=0.005, epochs=EPOCHS, optimizer="adamw", betas=(0.95, 0.999),
        eps=1e-6, weight_decay=0.01,
    ),
    TrainConfig(SCHEDULES[0], lr=0.1, momentum=0.9, epochs=EPOCHS, optimizer="sgd_schedulefree"),
    TrainConfig(
        SCHEDULES[2], lr=0.3, momentum=0.5, weight_decay=0.01, epochs=EPOCHS,
        optimizer="sgd_schedulefree",
    ),
    TrainConfig(
        SCHEDULES[0], lr=0.005, epochs=EPOCHS, optimizer="adamw_schedulefree", weight_decay=0.01,
    ),
    TrainConfig(
        SCHEDULES[3], lr=0.01, betas=(0.95, 0.99), epochs=EPOCHS, optimizer="adamw_schedulefree",
    ),
)  # fmt: skip


@pytest.mark.parametrize("model", [None, "tanh_net", "branching"])
def test_each_member_trains_as_torch_optim_trains_it_alone(
    tensors: Tensors, model: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The built-in MLP (hand-written engine), a user model under vmap, and one that trains
    its members one at a time (`branching`), against `training.train` stepping the torch
    optimizer `TrainConfig.make_optimizer` builds. Up to float32 rounding: the engines'
    gradients are not autograd's bit for bit, and Adam amplifies that where a gradient is near
    zero, so these are fixed cases; the optimizer's own arithmetic is held bit for bit over
    generated cases below."""
    monkeypatch.chdir(REPO)  # `tests.user_models` imports from the repository root
    spec = None if model is None else ModelSpec(f"tests.user_models:{model}")
    batch = [BatchMember(config, seed=seed) for seed, config in enumerate(MEMBERS)]
    together = train_batch(batch, [tensors], order_seed=3, model_spec=spec)
    for member, result in zip(batch, together, strict=True):
        alone = train(member.config, tensors, seed=member.seed, order_seed=3, model_spec=spec)
        assert result.status is alone.status
        assert [r.train_loss for r in result.history] == pytest.approx(
            [r.train_loss for r in alone.history], rel=1e-4, abs=1e-6
        )
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@st.composite
def member_settings(draw: st.DrawFn, kind: str) -> dict[str, float]:
    return {
        "lr": draw(st.floats(1e-5, 1.0)),
        "momentum": draw(st.floats(0.0 if kind == "sgd" else 1e-6, 0.99))
        if kind in WITH_MOMENTUM
        else 0.0,
        "weight_decay": draw(st.sampled_from([0.0, 1e-4, 0.01, 0.3])),
        "beta1": draw(st.floats(1e-6 if kind in SCHEDULE_FREE else 0.0, 0.99)),
        "beta2": draw(st.floats(0.0, 0.9999)),
        "eps": draw(st.sampled_from([1e-12, 1e-10, 1e-8, 1e-6, 1e-3])),
    }


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from(list(OPTIMIZERS)),
    members=st.integers(1, 4),
    steps=st.integers(1, 12),
    members_first=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_the_update_is_torch_optim_s_bit_for_bit(
    data: st.DataObject, kind: str, members: int, steps: int, members_first: bool, seed: int
) -> None:
    """Members with settings of their own stacked in one tensor (as `_Stack` holds them,
    [P, A], or `ModuleStack`, [A, P]) step exactly as torch.optim (or `schedulefree`) steps
    each alone, given the same gradients, some of them tiny (where Adam's eps matters); the
    built-in engine's fused SGD to within a rounding a step. Schedule-Free weights are
    compared after both switch to evaluation (`optimizer.eval()`)."""
    drawn = [data.draw(member_settings(kind)) for _ in range(members)]
    generator = torch.Generator().manual_seed(seed)
    start = torch.randn(members, 7, generator=generator)
    grads = [
        torch.randn(members, 7, generator=generator)
        * torch.rand(members, 7, generator=generator) ** 8  # many near zero
        for _ in range(steps)
    ]
    torch_params = [torch.nn.Parameter(start[m].clone()) for m in range(members)]
    optimizers = [
        TrainConfig(
            ScheduleConfig("constant"),
            lr=s["lr"],
            momentum=s["momentum"],
            weight_decay=s["weight_decay"],
            optimizer=kind,
            betas=(s["beta1"], s["beta2"]),
            eps=s["eps"],
        ).make_optimizer([param])
        for s, param in zip(drawn, torch_params, strict=True)
    ]

    # a schedule of each member's own: each step's lr a fraction of its lr (Schedule-Free's
    # lr_max and averaging weights follow it)
    fractions = torch.rand(steps, members, generator=generator, dtype=torch.float64).tolist()

    def per_member(name: str, fraction: list[float] | None = None) -> torch.Tensor:
        values = [s[name] for s in drawn]
        if fraction is not None:
            values = [value * part for value, part in zip(values, fraction, strict=True)]
        return torch.tensor([values], dtype=torch.float64)  # [1, A]

    def settings_at(fraction: list[float]) -> StepSettings:
        return StepSettings(
            kind,
            per_member("lr", fraction),
            *map(per_member, ("momentum", "weight_decay", "beta1", "beta2", "eps")),
            decaying=any(s["weight_decay"] for s in drawn),
        )

    clock = ScheduleFreeClock.of(members, torch.device("cpu")) if kind in SCHEDULE_FREE else None
    for optimizer in optimizers if clock else ():
        optimizer.train()  # type: ignore[attr-defined]
    exact, fused = ((start if members_first else start.T).contiguous().clone() for _ in "ab")
    exact_state, fused_state = new_state(kind, exact), new_state(kind, fused)

    def layout(settings: StepSettings) -> StepSettings:
        return settings.shaped((-1, 1)) if members_first else settings

    for step, (grad, fraction) in enumerate(zip(grads, fractions, strict=True), start=1):
        for param, optimizer, member_grad, s, part in zip(
            torch_params, optimizers, grad, drawn, fraction, strict=True
        ):
            optimizer.param_groups[0]["lr"] = s["lr"] * part  # as a scheduler sets it
            param.grad = member_grad.clone()
            optimizer.step()
        stacked_grad = grad if members_first else grad.T
        step_settings = settings_at(fraction)
        now = layout(clock.tick(step_settings) if clock else step_settings)
        update(exact, stacked_grad.clone(), exact_state, now, step)
        update(fused, stacked_grad.clone(), fused_state, now, step, fused=True)
    if clock is not None:
        for optimizer in optimizers:
            optimizer.eval()  # type: ignore[attr-defined]
        for stacked, state in ((exact, exact_state), (fused, fused_state)):
            stacked.lerp_(state["z"], schedule_free_mode_weights(layout(step_settings))[1])
    for member, param in enumerate(torch_params):
        ours = exact[member] if members_first else exact[:, member]
        assert torch.equal(ours, param.detach())
        # the fused form: one rounding per step apart at most
        theirs = fused[member] if members_first else fused[:, member]
        torch.testing.assert_close(theirs, param.detach(), rtol=1e-5, atol=1e-6)


def test_an_adam_member_beside_sgd_members_is_untouched_by_them(tensors: Tensors) -> None:
    """Members of different optimizers train in stacks of their own: adding SGD members to a
    batch leaves an Adam member's weights bit for bit as they were."""
    adam = BatchMember(
        TrainConfig(ScheduleConfig("constant"), lr=0.01, epochs=EPOCHS, optimizer="adam"), 0
    )
    sgd = [
        BatchMember(TrainConfig(ScheduleConfig("constant"), lr=lr, momentum=0.9, epochs=EPOCHS), 1)
        for lr in (0.1, 0.5)
    ]
    alone = train_batch([adam], [tensors], order_seed=3)[0]
    mixed = train_batch([sgd[0], adam, sgd[1]], [tensors], order_seed=3)[1]
    for ours, theirs in zip(mixed.weights, alone.weights, strict=True):
        assert torch.equal(ours, theirs)


def test_members_leaving_a_stack_take_their_optimizer_state_with_them(tensors: Tensors) -> None:
    """Adam's moments, Schedule-Free's z and running scalars are dropped with the member that
    stops: the members that stay train as they do when nobody leaves."""
    batch = [BatchMember(config, seed=seed) for seed, config in enumerate(MEMBERS)]
    stop_after = {1: 0, 5: 1, 7: 2}  # an Adam, a Schedule-Free SGD, a Schedule-Free AdamW

    def stop_some(results: Mapping[int, EpochResult]) -> set[int]:
        return {m for m, r in results.items() if stop_after.get(m) == r.epoch}

    stopping = train_batch(batch, [tensors], order_seed=3, on_epoch=stop_some)
    staying = train_batch(batch, [tensors], order_seed=3)
    for member, (ours, theirs) in enumerate(zip(stopping, staying, strict=True)):
        if member in stop_after:
            assert len(ours.history) == stop_after[member] + 1
            continue
        for a, b in zip(ours.weights, theirs.weights, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
