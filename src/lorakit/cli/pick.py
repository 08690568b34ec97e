"""`lorakit pick RUN_DIR`: the best epoch and the over/undertraining signs of a run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pick",
        help="pick the best epoch of a training run",
        description="Find the epoch with the lowest validation loss, check for overfitting, "
        "undertraining and samples that stop changing; store the result in summary.json "
        "under 'pick' and draw loss.png.",
    )
    parser.add_argument("run_dir", type=Path, help="training output folder (with summary.json)")
    parser.add_argument(
        "--still-threshold",
        type=float,
        default=2.0,
        help="mean pixel change (0-255) below which samples count as unchanged (default 2)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorakit.inference.lossplot import plot_loss
    from lorakit.inference.pick import pick
    from lorakit.inference.run import load_summary

    report = pick(args.run_dir, args.still_threshold)
    for line in report.advice:
        print(line)
    print(plot_loss(load_summary(args.run_dir), args.run_dir / "loss.png", report.best_epoch))
    return 0
