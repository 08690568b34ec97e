"""Entry point of the `lorakit` command.

Each stage registers its own sub-commands from a module in this folder, so adding a
command never touches another stage's code. Expected failures (`LorakitError`) print one
line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lorakit import __version__, thirdparty
from lorakit.errors import LorakitError

thirdparty.configure()

# Modules under lorakit.cli that expose `register(subparsers)`.
COMMAND_MODULES = (
    "dataset",
    "caption",
    "tags",
    "lora",
    "train",
    "generate",
    "grid",
    "pick",
    "pnginfo",
    "ui",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorakit",
        description="Turn a folder of photos into a LoRA for Stable Diffusion, offline.",
    )
    parser.add_argument("--version", action="version", version=f"lorakit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"lorakit.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"lorakit.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LorakitError as exc:
        print(f"lorakit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lorakit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `lorakit … | head` closed the pipe: not an error, and no traceback on exit.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
