"""`lorakit png-info FILE`: print the A1111 parameters stored in an image."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "png-info",
        help="show the generation parameters stored in a PNG",
        description="Print the A1111 'parameters' text of a PNG made by lorakit or A1111.",
    )
    parser.add_argument("image", type=Path, help="PNG file")
    parser.add_argument("--json", action="store_true", help="print the parsed fields as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lorakit.inference.metadata import parse_parameters, read_parameters

    text = read_parameters(args.image)
    if args.json:
        print(json.dumps(asdict(parse_parameters(text, str(args.image))), indent=2))
    else:
        print(text)
    return 0
