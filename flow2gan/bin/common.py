"""Helpers shared by the command-line entry points."""

from __future__ import annotations

import argparse

_TRUE = frozenset({"yes", "true", "t", "y", "1"})
_FALSE = frozenset({"no", "false", "f", "n", "0"})


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


def optional_str(value: str) -> str | None:
    """Parse a string CLI value where the literal ``None`` (any case) or an empty string means ``None``."""
    return None if value.strip().lower() in {"", "none"} else value
