"""Entry point of the `lorakit` command.

Each stage registers its own sub-commands from a module in this folder, so adding a
command never touches another stage's code. Expected failures (`LorakitError`) print one
line and exit 2; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lorakit import __version__
from lorakit.errors import LorakitError

# lorakit never downloads: make every Hugging Face library fail fast instead of reaching for
# the hub, and keep transformers' optional-backend chatter (torchvision) and its per-file
# loading/saving bars off the terminal: lorakit shows its own progress.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

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
