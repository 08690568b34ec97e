"""`lorakit generate`: txt2img / img2img with LoRAs, A1111 settings and infotext PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lorakit.cli.common import arguments_for
from lorakit.errors import LorakitError
from lorakit.fileio import check_writable_folder


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `generate` and `grid` (A1111 names and defaults)."""
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--sampler", default="Euler a", help="A1111 sampler name (Euler a, …)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default 20)")
    parser.add_argument("--cfg", type=float, default=7.0, help="CFG scale (default 7)")
    parser.add_argument("--width", type=int, help="image width (default: the model's size)")
    parser.add_argument("--height", type=int, help="image height (default: the model's size)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images with LoRAs (txt2img / img2img)",
        description="Generate images. LoRAs come from <lora:name:weight> tags in the prompt "
        "(resolved in --lora-dir) or --lora FILE:weight. Each PNG carries an A1111 infotext.",
    )
    parser.add_argument("prompt", help="prompt, may hold <lora:name:0.8> tags")
    parser.add_argument("--model", required=True, type=Path, help="base model file or folder")
    parser.add_argument(
        "--lora", action="append", default=[], metavar="FILE[:WEIGHT]", help="apply a LoRA"
    )
    parser.add_argument("--lora-dir", type=Path, help="folder where <lora:name> tags are looked up")
    parser.add_argument("--seed", type=int, help="seed of the first image (default: random)")
    parser.add_argument("--batch", type=int, default=1, help="images to make (seeds seed, seed+1…)")
    parser.add_argument("--init-image", type=Path, help="start image for img2img")
    parser.add_argument("--strength", type=float, default=0.75, help="img2img denoising strength")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    add_sampling_arguments(parser)
    parser.set_defaults(func=run)


def _init_image(path: Path | None) -> Any:
    """The start image, upright sRGB RGB as the dataset stage reads photos."""
    if path is None:
        return None
    if not path.is_file():
        raise LorakitError(f"cannot read --init-image {path}: no such file; check the path")
    from lorakit.dataset.images import load_rgb

    return load_rgb(path)


def run(args: argparse.Namespace) -> int:
    from lorakit.inference.generate import (
        GenerateOptions,
        generate,
        load_for_inference,
        save_generated,
    )
    from lorakit.inference.prompt import parse_lora_arg, parse_prompt
    from lorakit.inference.samplers import canonical_sampler_name

    if args.batch < 1 or not 0.0 < args.strength <= 1.0:
        raise LorakitError("--batch must be ≥ 1 and --strength in (0, 1]; e.g. --strength 0.6")
    # Check every input before the model loads (that takes minutes); `generate` checks again.
    canonical_sampler_name(args.sampler)
    loras = [parse_lora_arg(arg) for arg in args.lora]
    parse_prompt(args.prompt, args.lora_dir)
    init_image = _init_image(args.init_image)
    check_writable_folder(args.out, "--out")
    options = GenerateOptions(**(arguments_for(GenerateOptions, args) | {"init_image": init_image}))
    base = load_for_inference(args.model, args.device)
    results = generate(base, options, loras=loras, lora_dir=args.lora_dir)
    for path in save_generated(results, args.out):
        print(path)
    return 0
