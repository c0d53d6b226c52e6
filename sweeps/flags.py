"""Command-line flags declared on the frozen dataclasses they fill, so that an option is one
field: the parser (`add_flags`), the dataclass from parsed values (`from_flags`) and the argv a
launched worker gets (`to_argv`) all read the same declaration, with the default it has there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance


@dataclass(frozen=True)
class Flag:
    """How one dataclass field reads from the command line and is written back to it.

    Args:
        names: the flag and its aliases ("--trials-per-batch", "--batch-size-trials").
        help: one line for --help; "{default}" is replaced by the field's default.
        metavar: the value's name in --help.
        parse: turns the typed text into the field's value (argparse's `type`).
        show: turns the value back into text for `to_argv` (default `str`).
        choices: the texts accepted, when there are few.
        negatable: a bool flag with a --no- form (`argparse.BooleanOptionalAction`).
    """

    names: tuple[str, ...]
    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    show: Callable[[Any], str] = str
    choices: tuple[str, ...] | None = None
    negatable: bool = False


def option(default: Any, *names: str, help: str, **how: Any) -> Any:
    """A dataclass field with `default` that the command line sets with `names`."""
    return field(default=default, metadata={"flag": Flag(names, help, **how)})


Config = TypeVar("Config", bound="DataclassInstance")
Options: TypeAlias = "type[DataclassInstance] | DataclassInstance"


def nested(config: type[DataclassInstance]) -> Any:
    """A dataclass field holding another flagged dataclass, whose flags are this one's too."""
    return field(default_factory=config, metadata={"nested": config})


def flagged_fields(
    config: Options,
) -> list[tuple[Field[Any], Flag]]:
    """The fields of a dataclass (or of its instance) that have a flag."""
    return [(item, item.metadata["flag"]) for item in fields(config) if "flag" in item.metadata]


def _nested_fields(
    config: Options,
) -> list[tuple[str, type[DataclassInstance]]]:
    return [
        (item.name, item.metadata["nested"])
        for item in fields(config)
        if "nested" in item.metadata
    ]


def add_flags(parser: Any, config: type[DataclassInstance]) -> None:
    """Add `config`'s flags to an argparse parser (or group)."""
    import argparse

    for item, flag in flagged_fields(config):
        kwargs: dict[str, Any] = {"dest": item.name, "default": None}
        if flag.negatable:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif item.default is False:
            kwargs["action"] = "store_true"
        else:
            parse = flag.parse and _said_by_argparse(flag.parse)
            kwargs |= {"type": parse, "metavar": flag.metavar, "choices": flag.choices}
        help_text = flag.help.replace("{default}", str(item.default))
        parser.add_argument(*flag.names, help=help_text, **kwargs)
    for _, inner in _nested_fields(config):
        add_flags(parser, inner)


def _said_by_argparse(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` with its refusal (InvalidInputError) in argparse's own one line, which names
    the flag; argparse would otherwise say only "invalid value"."""
    from lrsweep.errors import InvalidInputError

    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except InvalidInputError as exc:
            import argparse

            raise argparse.ArgumentTypeError(str(exc)) from None

    return parsed


def from_flags(config: type[Config], values: Mapping[str, Any], **unflagged: Any) -> Config:
    """`config` from parsed flag values (a flag not given keeps the field's default), and the
    fields without a flag from `unflagged`."""
    given = {
        item.name: values[item.name]
        for item, _ in flagged_fields(config)
        if values.get(item.name) is not None
    }
    inner = {name: from_flags(kind, values) for name, kind in _nested_fields(config)}
    return config(**{**unflagged, **given, **inner})


def to_argv(config: DataclassInstance) -> list[str]:
    """The flags that rebuild `config` in another process: every value not at its default."""
    argv: list[str] = []
    for item, flag in flagged_fields(config):
        value = getattr(config, item.name)
        if item.default is not MISSING and value == item.default:
            continue
        if flag.negatable:
            argv.append(flag.names[0] if value else f"--no-{flag.names[0][2:]}")
        elif isinstance(value, bool) and item.default is False:
            argv.append(flag.names[0])
        else:
            argv.append(f"{flag.names[0]}={flag.show(value)}")  # a value may start with -
    for name, _ in _nested_fields(config):
        argv += to_argv(getattr(config, name))
    return argv
