"""Command-line value parsers and argparse flags generated from frozen option dataclasses.

An options dataclass is the one definition of its flags: each field gives the flag name
(``--field-name``), the default and, in ``field(metadata=...)``, the help text (``help``), and
optionally ``choices``, ``required``, bounds (``min`` and ``max``, inclusive, or ``above``, exclusive;
checked by :func:`check_bounds` in the dataclass's ``__post_init__``) and a ``flag`` name override. The value
parser follows the annotation: ``bool`` -> :func:`str2bool` (``--use-fp16 true``, the reference's
style), ``X | None`` -> ``None``/empty means None, ``tuple[T, ...]`` -> a comma-separated list,
a nested dataclass -> its fields as flags of their own.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = frozenset({"yes", "true", "t", "y", "1"})
_FALSE = frozenset({"no", "false", "f", "n", "0"})


def prog_name(module: str) -> str:
    """Usage-line program name: the console script's name, or ``python -m <module>``.

    ``module`` is the tool's own module; run as another module of ``flow2gan.bin`` (an alias such as
    ``bin.train`` for ``bin.pretrain``), the name it was run under is shown.
    """
    path = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if path is None or path.name == "-c":
        return f"python -m {module}"
    if path.suffix != ".py":
        return path.name
    package = module.rpartition(".")[0]
    if package and path.parent.parts[-2:] == tuple(package.split("."))[-2:]:
        return f"python -m {package}.{path.stem}"
    return f"python -m {module}"


def str2bool(value: str | bool) -> bool:
    """Parse a boolean CLI value: yes/true/t/y/1 or no/false/f/n/0 (case-insensitive)."""
    if isinstance(value, bool):
        return value
    key = value.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise argparse.ArgumentTypeError(
        f"boolean value expected (yes/true/t/y/1 or no/false/f/n/0), got {value!r}"
    )


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to a flag's help unless the help says the default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, "") or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


class RawDescriptionDefaultsHelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultsHelpFormatter):
    """The description as written (a module docstring's lists and paragraphs), and each flag's default."""


def optional_str(value: str) -> str | None:
    """Parse a string CLI value where the literal ``None`` (any case) or an empty string means ``None``."""
    return None if value.strip().lower() in {"", "none"} else value


def comma_list(value: str) -> list[str]:
    """Split a comma-separated list, dropping empty entries."""
    return [v for v in (part.strip() for part in value.split(",")) if v]


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` that maps ``None``/empty to None."""

    def parse_optional(value: str) -> Any:
        return None if optional_str(value) is None else parse(value)

    parse_optional.__name__ = getattr(parse, "__name__", "value")
    return parse_optional


def _tuple_of(item: Callable[[str], Any]) -> Callable[[str], tuple]:
    """A comma-separated list parsed item by item into a tuple."""

    def parse_tuple(value: str) -> tuple:
        return tuple(item(v) for v in comma_list(value))

    parse_tuple.__name__ = f"comma-separated {getattr(item, '__name__', 'value')}"
    return parse_tuple


def _parser_for(annotation: Any) -> tuple[Callable[[str], Any], bool]:
    """(value parser, whether None is allowed) of a field annotation; ``TypeError`` if there is none."""
    optional = False
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        (annotation,) = [a for a in args if a is not type(None)]
        args = typing.get_args(annotation)
    if typing.get_origin(annotation) is tuple:
        parse: Callable[[str], Any] = _tuple_of(_parser_for(args[0])[0])
    elif annotation is bool:
        parse = str2bool
    elif annotation in (int, float, str, Path):
        parse = annotation
    else:
        raise TypeError(f"no command-line parser for {annotation!r}")
    return (_optional(parse) if optional else parse), optional


def _shown_default(value: Any) -> Any:
    """The default as it would be typed (``2,4,8`` for a tuple); argparse parses string defaults."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return value


def flag_name(field: dataclasses.Field) -> str:
    """``--field-name`` (or the field's ``flag`` metadata)."""
    return field.metadata.get("flag", "--" + field.name.replace("_", "-"))


def add_dataclass_arguments(
    parser: argparse.ArgumentParser, cls: type, defaults: dict[str, Any] | None = None
) -> None:
    """Add a flag per field of the dataclass ``cls`` (nested dataclasses flattened) to ``parser``.

    ``defaults`` overrides field defaults by field name (e.g. a stage's own ``num_epochs``).
    Raises ``TypeError`` for a field type without a parser and ``ValueError`` for a field without help.
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            add_dataclass_arguments(parser, annotation, defaults)
            continue
        if "help" not in field.metadata:
            raise ValueError(f"{cls.__name__}.{field.name} has no help text")
        default = defaults.get(field.name, field.default)
        if default is dataclasses.MISSING:
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else None
        parse, _ = _parser_for(annotation)
        kwargs: dict[str, Any] = {"type": parse, "help": field.metadata["help"]}
        if "choices" in field.metadata:
            kwargs["choices"] = field.metadata["choices"]
        if field.metadata.get("required"):
            kwargs["required"] = True
        else:
            kwargs["default"] = _shown_default(default)
        parser.add_argument(flag_name(field), dest=field.name, **kwargs)


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build ``cls`` (nested dataclasses included) from parsed arguments.

    Raises the dataclass's own ``ValueError`` for an invalid value (its message names the flag).
    """
    hints = typing.get_type_hints(cls)
    values = {}
    for field in dataclasses.fields(cls):
        annotation = hints[field.name]
        if dataclasses.is_dataclass(annotation):
            values[field.name] = dataclass_from_args(annotation, args)
        else:
            values[field.name] = getattr(args, field.name)
    return cls(**values)


def check_bounds(obj: Any) -> None:
    """Check the ``min`` / ``max`` (inclusive) and ``above`` (exclusive) bounds of every field.

    Raises ``ValueError`` naming the flag for a bounded value that is NaN, infinite or out of bounds.
    """
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        if "min" in field.metadata:
            minimum = field.metadata["min"]
            if not (math.isfinite(value) and value >= minimum):
                raise ValueError(f"{flag_name(field)} must be a finite number >= {minimum}, got {value}")
        if "above" in field.metadata:
            bound = field.metadata["above"]
            if not (math.isfinite(value) and value > bound):
                raise ValueError(f"{flag_name(field)} must be a finite number > {bound}, got {value}")
        if "max" in field.metadata and not value <= field.metadata["max"]:
            raise ValueError(f"{flag_name(field)} must be <= {field.metadata['max']}, got {value}")
