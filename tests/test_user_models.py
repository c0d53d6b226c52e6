"""`--model module:function`: a user's model trains K trials at a time through torch.func
(or one at a time when vmap cannot run it) and computes what it computes trained alone."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from conftest import REPO, assert_refused, run_sweeps
from lrsweep.trainer import (
    ScheduleConfig,
    TrainConfig,
    load_dataset,
    split_tensors,
    train,
    validation_rows,
)
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.module_stack import ModuleStack
from lrsweep.trainer.vectorized import BatchMember, train_batch

KINDS = [
    ScheduleConfig("step", {"step_size": 2, "gamma": 0.5}),
    ScheduleConfig("onecycle", {"total_steps": 6, "pct_start": 0.3, "div_factor": 10.0,
                                "final_div_factor": 100.0}),
    ScheduleConfig("cosine_warm_restarts", {"T_0": 2, "T_mult": 2, "eta_min": 0.0}),
    ScheduleConfig("plateau", {"factor": 0.5, "patience": 0, "threshold": 0.0, "min_lr": 0.0}),
]  # fmt: skip


@pytest.fixture(autouse=True)
def _repo_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # `tests.user_models` imports from the repository root


ONE_AT_A_TIME = ("branching", "gated")  # data-dependent control flow: no vmap


@pytest.mark.parametrize(
    "name",
    ["tanh_net", "branching", "batchnorm_net", "frozen_first_layer", "spare_head", "gated"],
)
@pytest.mark.parametrize("dataset", ["ionosphere", "wine"])
def test_a_user_model_in_a_batch_equals_it_trained_alone(
    name: str,
    dataset: str,
    data_path: Path,
    sklearn_csv: Callable[[str], Path],
    capfd: pytest.CaptureFixture[str],
) -> None:
    torch.set_num_threads(1)
    data = load_dataset(data_path if dataset == "ionosphere" else sklearn_csv("wine"))
    tensors = split_tensors(data, validation_rows(data), "cpu")
    spec = ModelSpec(f"tests.user_models:{name}")
    scale = 1.0 if dataset == "ionosphere" else 1e-3  # wine's raw features reach 1680
    members = [
        BatchMember(TrainConfig(kind, lr=lr, momentum=m, epochs=6, weight_decay=decay), seed)
        for seed, kind in enumerate(KINDS)
        for lr, m, decay in ((0.05 * scale, 0.9, 0.0), (0.2 * scale, 0.0, 0.01))
    ]
    batched = train_batch(members, [tensors], order_seed=5, model_spec=spec)
    for member, result in zip(members, batched, strict=True):
        alone = train(member.config, tensors, seed=member.seed, order_seed=5, model_spec=spec)
        assert [r.lr for r in result.history] == pytest.approx([r.lr for r in alone.history])
        assert [r.train_loss for r in result.history] == pytest.approx(
            [r.train_loss for r in alone.history], rel=1e-4, abs=1e-6
        )
        # Validation runs in eval mode: BatchNorm's running statistics, stacked per member,
        # must have followed the same updates as the model's own.
        assert [r.validation_loss for r in result.history] == pytest.approx(
            [r.validation_loss for r in alone.history], rel=1e-4, abs=1e-6
        )
        assert [r.validation_accuracy for r in result.history] == pytest.approx(
            [r.validation_accuracy for r in alone.history], abs=1.5 / len(tensors.y_val)
        )
        for ours, theirs in zip(result.weights, alone.weights, strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)  # float32 sums
    # Only data-dependent control flow keeps vmap out: its members run one after another.
    stack = ModuleStack.of([0], [0], tensors, spec)
    assert stack.vmapped is (name not in ONE_AT_A_TIME)
    if name not in ONE_AT_A_TIME:
        assert "cannot run under torch.func.vmap" not in capfd.readouterr().err
    untouched = {"frozen_first_layer": 0, "spare_head": 4}  # a weight SGD leaves alone
    if name in untouched:  # as torch.optim.SGD leaves a frozen or unused parameter
        initial = spec.build(members[0].seed, tensors.n_features, tensors.n_outputs, "cpu")
        weight = list(initial.parameters())[untouched[name]].detach()
        torch.testing.assert_close(batched[0].weights[untouched[name]], weight)


NETS = """
from torch import nn


def build(n_features, n_outputs):
    return nn.Sequential(nn.Linear(n_features, 8), nn.Tanh(), nn.Linear(8, n_outputs))


def wide(n_features, n_outputs):
    return nn.Sequential(nn.Linear(n_features, 64), nn.ReLU(), nn.Linear(64, n_outputs))


def broken(n_features, n_outputs):
    return "not a module"


def flat(n_features, n_outputs):
    return nn.Sequential(nn.Linear(n_features, n_outputs), nn.Flatten(0))
"""


@pytest.mark.slow
def test_a_user_model_sweeps_exports_and_retrains(
    sklearn_csv: Callable[[str], Path], tmp_path: Path
) -> None:
    os.chdir(tmp_path)
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(NETS)
    wine = str(sklearn_csv("wine"))
    result = run_sweeps(
        *("run", "--data", wine, "--model", "mypkg.nets:build", "--trials", "12"),
        *("--epochs", "4", "--workers", "1", "--quiet", "--top", "2", "--seeds", "1"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "cannot run under torch.func.vmap" not in result.stderr
    document = json.loads((tmp_path / "best.json").read_text())
    assert document["model"] == {"factory": "mypkg.nets:build"}
    retrained = run_sweeps(
        "train", "--config", "best.json", "--data", wine, "--seeds", "1", cwd=tmp_path
    )
    assert retrained.returncode == 0, retrained.stderr
    # Joining with another model is refused; a bad model is refused before any study exists.
    other = run_sweeps(
        *("worker", "--study", "lrsweep", "--data", wine, "--model", "mypkg.nets:wide"),
        cwd=tmp_path,
    )
    assert other.returncode == 2 and "already exists with model='mypkg.nets:build'" in other.stderr
    for target, message in (
        ("nope.nets:build", "cannot import 'nope.nets': ModuleNotFoundError"),
        ("mypkg.nets:missing", "mypkg.nets has no function 'missing'"),
        ("mypkg.nets:broken", "returned str, not a torch.nn.Module"),
        ("mypkg.nets:flat", "gave logits of shape (6,); expected (2, 3)"),
        ("no-colon", "--model must be module:function"),
    ):
        refused = run_sweeps(
            *("worker", "--study", "fresh", "--data", wine, "--model", target, "--trials", "2"),
            cwd=tmp_path,
        )
        assert_refused(refused, message)
