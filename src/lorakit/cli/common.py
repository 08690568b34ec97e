"""Helpers shared by the sub-command modules (stdlib only: they run on every start)."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any


def arguments_for(target: Callable[..., Any], args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options named like the parameters of `target` (a function or dataclass).

    Sub-commands hand most options straight to a stage function or options dataclass under
    the same name; taking them by name keeps a new option to one argparse line and one
    parameter, instead of a third line in the CLI that copies it across.
    """
    names = inspect.signature(target).parameters
    return {name: getattr(args, name) for name in names if hasattr(args, name)}
