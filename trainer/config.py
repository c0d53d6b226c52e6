"""A complete training recipe (schedule, optimizer, loop length) and its plain-JSON form.

The JSON written by `sweeps export` is this form plus a `source` section; `load_config` reads it
back, validating every field, so a hand-edited file is refused rather than half-used.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lrsweep.errors import InvalidInputError
from lrsweep.trainer.data import DataSchema
from lrsweep.trainer.documents import read_document
from lrsweep.trainer.models import ModelSpec
from lrsweep.trainer.schedules import SCHEDULES, ScheduleConfig

if TYPE_CHECKING:
    import torch

# name -> (its class, the per-parameter state it keeps). The Schedule-Free ones (Defazio et al.,
# 2024, the `schedulefree` package) average their iterates instead of decaying the lr: their
# weights are evaluated in `optimizer.eval()` mode and trained in `optimizer.train()` mode.
OPTIMIZERS: Mapping[str, tuple[str, tuple[str, ...]]] = MappingProxyType(
    {
        "sgd": ("torch.optim.SGD", ("momentum_buffer",)),
        "adam": ("torch.optim.Adam", ("exp_avg", "exp_avg_sq")),
        "adamw": ("torch.optim.AdamW", ("exp_avg", "exp_avg_sq")),
        "sgd_schedulefree": ("schedulefree.SGDScheduleFree", ("z",)),
        "adamw_schedulefree": ("schedulefree.AdamWScheduleFree", ("z", "exp_avg_sq")),
    }
)
SCHEDULE_FREE = ("sgd_schedulefree", "adamw_schedulefree")
WITH_MOMENTUM = ("sgd", "sgd_schedulefree")
SCHEDULE_FREE_MIN_BETA = 1e-6
FORMAT_NAME = "lrsweep.train-config"
FORMAT_VERSION = 1
DEFAULT_EPOCHS = 50
DEFAULT_BATCH_SIZE = 24


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides one training run except the data and the seed.

    Args:
        schedule: the learning-rate schedule, stepped once per epoch.
        lr: initial learning rate, > 0.
        momentum: SGD momentum in [0, 1); Schedule-Free SGD's in (0, 1) (the Adam kinds have
            beta1 instead).
        weight_decay: weight decay, >= 0 (the tutorial uses none): an L2 penalty in the
            gradient for SGD and Adam, decoupled for AdamW.
        epochs: number of epochs, >= 1 (the tutorial uses 50).
        batch_size: mini-batch size, >= 1 (the tutorial uses 24).
        optimizer: `sgd` (the tutorial's), `adam`, `adamw`, `sgd_schedulefree` or
            `adamw_schedulefree`.
        betas: Adam's and AdamW's (beta1, beta2), each in [0, 1).
        eps: Adam's and AdamW's eps, > 0.
    """

    schedule: ScheduleConfig
    lr: float
    momentum: float = 0.0
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH_SIZE
    weight_decay: float = 0.0
    optimizer: str = "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, ScheduleConfig):
            raise InvalidInputError(f"schedule must be a ScheduleConfig; got {self.schedule!r}")
        _require(_is_number(self.lr) and self.lr > 0, f"lr must be > 0; got {self.lr!r}")
        _require(
            _is_number(self.momentum) and 0.0 <= self.momentum < 1.0,
            f"momentum must be in [0, 1); got {self.momentum!r}",
        )
        _require(
            _is_number(self.weight_decay) and self.weight_decay >= 0.0,
            f"weight_decay must be >= 0; got {self.weight_decay!r}",
        )
        _require(_is_count(self.epochs), f"epochs must be an integer >= 1; got {self.epochs!r}")
        _require(
            self.optimizer in OPTIMIZERS,
            f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}",
        )
        _require(
            self.optimizer in WITH_MOMENTUM or self.momentum == 0.0,
            f"momentum is SGD's; {self.optimizer} has beta1 instead (got momentum "
            f"{self.momentum!r})",
        )
        if self.optimizer in SCHEDULE_FREE:
            name, beta = (
                ("momentum", self.momentum)
                if self.optimizer == "sgd_schedulefree"
                else ("beta1", self.betas[0])
            )
            _require(
                _is_number(beta) and SCHEDULE_FREE_MIN_BETA <= beta < 1.0,
                f"{self.optimizer}'s {name} must be in [{SCHEDULE_FREE_MIN_BETA:g}, 1) (its "
                f"evaluation weights are 1 - 1/{name}); got {beta!r}",
            )
        _require(
            isinstance(self.betas, tuple)
            and len(self.betas) == 2
            and all(_is_number(beta) and 0.0 <= beta < 1.0 for beta in self.betas),
            f"betas must be two numbers in [0, 1); got {self.betas!r}",
        )
        _require(_is_number(self.eps) and self.eps > 0, f"eps must be > 0; got {self.eps!r}")
        if self.schedule.kind == "onecycle":  # OneCycleLR refuses a step past total_steps
            steps = self.schedule.params["total_steps"]
            _require(
                steps >= self.epochs,
                f"onecycle.total_steps ({steps}) must be >= epochs ({self.epochs}): it is "
                "stepped once per epoch",
            )
        _require(
            _is_count(self.batch_size),
            f"batch_size must be an integer >= 1; got {self.batch_size!r}",
        )

    def optimizer_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of the torch optimizer (`optimizer_class`) besides the
        parameters."""
        if self.optimizer in WITH_MOMENTUM:
            return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay}
        return {
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    @property
    def optimizer_class(self) -> str:
        return OPTIMIZERS[self.optimizer][0]

    @property
    def schedule_free(self) -> bool:
        """Its optimizer needs `optimizer.train()` before training steps and `.eval()` before
        evaluating or saving the model."""
        return self.optimizer in SCHEDULE_FREE

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The optimizer this recipe trains with (torch's SGD, Adam or AdamW, or a Schedule-Free
        one from `schedulefree`)."""
        import importlib

        kwargs = self.optimizer_kwargs()
        if "betas" in kwargs:
            kwargs["betas"] = tuple(kwargs["betas"])
        module, name = self.optimizer_class.rsplit(".", 1)
        optimizer_class: type[torch.optim.Optimizer] = getattr(
            importlib.import_module(module), name
        )
        return optimizer_class(parameters, **kwargs)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "scheduler": {
                "kind": self.schedule.kind,
                "params": dict(self.schedule.params),
                "class": f"torch.optim.lr_scheduler.{self.schedule.torch_class_name}",
                "kwargs": self.schedule.torch_kwargs(self.lr),
                **(
                    {"step": "scheduler.step(val_accuracy) after each epoch's validation"}
                    if self.schedule.reads_metric
                    else {}
                ),
            },
            "optimizer": {
                "class": self.optimizer_class,
                **self.optimizer_kwargs(),
                **(
                    {
                        "mode": "optimizer.train() before each epoch's steps, optimizer.eval() "
                        "before validation and before saving the weights"
                    }
                    if self.schedule_free
                    else {}
                ),
            },
            "training": {"epochs": self.epochs, "batch_size": self.batch_size},
        }

    @classmethod
    def from_json_dict(cls, document: object) -> TrainConfig:
        """Parse the JSON form; every problem is an InvalidInputError naming the field."""
        doc = _mapping(document, "config")
        if doc.get("format") != FORMAT_NAME or doc.get("version") != FORMAT_VERSION:
            raise InvalidInputError(
                f"not an lrsweep config: expected format {FORMAT_NAME!r} version "
                f"{FORMAT_VERSION}, got {doc.get('format')!r} version {doc.get('version')!r}"
            )
        scheduler = _mapping(doc.get("scheduler"), "scheduler")
        optimizer = _mapping(doc.get("optimizer"), "optimizer")
        training = _mapping(doc.get("training"), "training")
        kind = scheduler.get("kind")
        optimizer_kind = _optimizer_kind(optimizer.get("class", "torch.optim.SGD"))
        given_kwargs = scheduler.get("kwargs", None if "params" in scheduler else {})
        kwargs = None if given_kwargs is None else dict(_mapping(given_kwargs, "scheduler.kwargs"))
        if "params" in scheduler:  # lrsweep's own arguments; kwargs must agree with them
            params = dict(_mapping(scheduler["params"], "scheduler.params"))
        else:  # an export from before params were written: kwargs are the params
            params = dict(kwargs or {})
            if isinstance(kind, str) and kind in SCHEDULES:
                for name, value in SCHEDULES[kind].fixed_kwargs.items():
                    if params.pop(name, value) != value:
                        raise InvalidInputError(
                            f"scheduler.kwargs.{name} of {kind} must be {value}"
                        )
        config = cls(
            schedule=ScheduleConfig(str(kind), params),
            lr=optimizer.get("lr"),  # type: ignore[arg-type]
            momentum=optimizer.get("momentum", 0.0),  # type: ignore[arg-type]
            epochs=training.get("epochs", DEFAULT_EPOCHS),  # type: ignore[arg-type]
            batch_size=training.get("batch_size", DEFAULT_BATCH_SIZE),  # type: ignore[arg-type]
            weight_decay=optimizer.get("weight_decay", 0.0),  # type: ignore[arg-type]
            optimizer=optimizer_kind,
            betas=_betas(optimizer.get("betas", [0.9, 0.999])),
            eps=optimizer.get("eps", 1e-8),  # type: ignore[arg-type]
        )
        if "params" in scheduler and kwargs not in (None, config.schedule.torch_kwargs(config.lr)):
            raise InvalidInputError(
                "scheduler.kwargs disagree with scheduler.params and optimizer.lr: edit params "
                "and delete kwargs (they are rebuilt from params)"
            )
        return config


def load_config(path: str | os.PathLike[str]) -> TrainConfig:
    """Read an exported config file (JSON or YAML) and validate it.

    Example (in your own training code):
        >>> cfg = load_config("best.json")                          # doctest: +SKIP
        >>> optimizer = cfg.make_optimizer(model.parameters())      # doctest: +SKIP
        >>> scheduler = trainer.build(optimizer, cfg.schedule)      # doctest: +SKIP
    """
    return load_export(path).config


@dataclass(frozen=True)
class Export:
    """An exported (or hand-written) config file: the recipe, and what the sweep recorded
    beside it, so `sweeps train` reads the CSV and builds the model as the sweep did.

    Args:
        config: the training recipe.
        schema: the `data` section (None in a hand-written file).
        model: the user's model from `model.factory` (None: the built-in MLP).
        data_path: the file the sweep read (`data.path`; None in a hand-written file or one
            from before it was recorded).
        data_sha256: the digest of its values (`source.data_sha256`), to tell it unchanged.
    """

    config: TrainConfig
    schema: DataSchema | None
    model: ModelSpec | None
    data_path: str | None = None
    data_sha256: str | None = None


def load_export(path: str | os.PathLike[str]) -> Export:
    """Read and validate a config file (JSON or YAML), once; problems name the file."""
    document = read_document(path, "config", (".json", ".yaml", ".yml"))
    try:
        config = TrainConfig.from_json_dict(document)
        doc = _mapping(document, "config")
        data = doc.get("data")
        data_path = data.get("path") if isinstance(data, Mapping) else None
        if data_path is not None and not isinstance(data_path, str):
            raise InvalidInputError(f"data.path must be a file path; got {data_path!r}")
        schema, model = _recorded_schema(data), _recorded_model(doc.get("model"))
        source = doc.get("source")
        digest = source.get("data_sha256") if isinstance(source, Mapping) else None
        digest = digest if isinstance(digest, str) else None
        return Export(config, schema, model, data_path, digest)
    except InvalidInputError as exc:
        raise InvalidInputError(f"config {path}: {exc}") from exc


def _recorded_schema(data: object) -> DataSchema | None:
    if data is None:
        return None
    try:
        return DataSchema.from_dict(dict(_mapping(data, "data")))
    except (KeyError, TypeError) as exc:
        raise InvalidInputError(f"its data section is malformed ({exc})") from exc


def _recorded_model(model: object) -> ModelSpec | None:
    factory = _mapping(model, "model").get("factory") if model is not None else None
    if factory in (None, "builtin:mlp"):
        return None
    if not isinstance(factory, str):
        raise InvalidInputError("model.factory must be module:function")
    return ModelSpec(factory)


def _optimizer_kind(class_name: object) -> str:
    """`torch.optim.Adam` -> `adam`; an optimizer lrsweep does not train with is refused."""
    by_class = {class_name: kind for kind, (class_name, _) in OPTIMIZERS.items()}
    if not isinstance(class_name, str) or class_name not in by_class:
        raise InvalidInputError(
            f"optimizer.class must be one of {', '.join(by_class)}; got {class_name!r}"
        )
    return by_class[class_name]


def _betas(value: object) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidInputError(f"optimizer.betas must be [beta1, beta2]; got {value!r}")
    return (value[0], value[1])


def _mapping(value: object, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidInputError(f"{name} must be an object; got {value!r}")
    return value


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InvalidInputError(message)
