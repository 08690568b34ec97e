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
        "(resolved in --lora-dir) or --lora FILE:weight. Each PNG carries an A1111 infotext. "
        "FLUX.1 (txt2img): Euler, CFG 1, no negative prompt; 20 steps and --guidance 3.5 for "
        "dev, 4 steps for schnell.",
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
    flux = parser.add_argument_group("FLUX.1")
    flux.add_argument("--clip-l", type=Path, help="CLIP-L file a BFL transformer file lacks")
    flux.add_argument("--t5xxl", type=Path, help="T5-XXL file a BFL transformer file lacks")
    flux.add_argument("--ae", type=Path, help="VAE file (ae.safetensors) a BFL file lacks")
    flux.add_argument("--guidance", type=float, help="dev's distilled guidance (default 3.5)")
    parser.add_argument(
        "--config",
        type=Path,
        help="diffusers folder of a single file's architecture, when its "
        "sizes are not the released model's (default: the bundled configs)",
    )
    # None = the family's default (SD: 20 steps, CFG 7, Euler a; FLUX.1: see the description).
    parser.set_defaults(func=run, steps=None, cfg=None, sampler=None)


def _init_image(path: Path | None) -> Any:
    """The start image, upright sRGB RGB as the dataset stage reads photos."""
    if path is None:
        return None
    if not path.is_file():
        raise LorakitError(f"cannot read --init-image {path}: no such file; check the path")
    from lorakit.dataset.images import load_rgb

    return load_rgb(path)


def _given(target: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The options for `target` the user set (None = the target's own default)."""
    return {k: v for k, v in arguments_for(target, args).items() if v is not None}


def _refuse_options(args: argparse.Namespace, options: dict[str, bool], family: str) -> None:
    """One line for the first option that does not apply to the model's family."""
    for option, given in options.items():
        if given:
            raise LorakitError(
                f"{args.model}: {option} does not apply to a {family} model; drop it"
            )


def run(args: argparse.Namespace) -> int:
    from lorakit.families import FLUX1
    from lorakit.inference.generate import (
        GenerateOptions,
        generate,
        load_for_inference,
        save_generated,
    )
    from lorakit.inference.prompt import parse_lora_arg, parse_prompt
    from lorakit.inference.samplers import canonical_sampler_name
    from lorakit.models.family import detect_family

    if args.batch < 1 or not 0.0 < args.strength <= 1.0:
        raise LorakitError("--batch must be ≥ 1 and --strength in (0, 1]; e.g. --strength 0.6")
    # Check every input before the model loads (that takes minutes); `generate` checks again.
    if args.sampler is not None:
        canonical_sampler_name(args.sampler)
    loras = [parse_lora_arg(arg) for arg in args.lora]
    parse_prompt(args.prompt, args.lora_dir)
    init_image = _init_image(args.init_image)
    check_writable_folder(args.out, "--out")
    if detect_family(Path(args.model).expanduser()) is FLUX1:  # the one fork between families
        return _run_flux(args, loras)
    flux_only = {
        "--clip-l": args.clip_l,
        "--t5xxl": args.t5xxl,
        "--ae": args.ae,
        "--guidance": args.guidance,
    }
    _refuse_options(args, {option: v is not None for option, v in flux_only.items()}, "SD")
    options = GenerateOptions(**(_given(GenerateOptions, args) | {"init_image": init_image}))
    base = load_for_inference(args.model, args.device, args.config)
    results = generate(base, options, loras=loras, lora_dir=args.lora_dir)
    for path in save_generated(results, args.out):
        print(path)
    return 0


def _run_flux(args: argparse.Namespace, loras: list[Any]) -> int:
    """FLUX.1 txt2img: the SD-only options refused, then `generate_flux`."""
    from lorakit.inference.flux_generate import (
        CFG,
        SAMPLER,
        FluxOptions,
        check_flux_files,
        generate_flux,
        load_flux_for_inference,
        refuse_guidance,
    )
    from lorakit.inference.generate import save_generated

    sd_only = {
        "--negative (FLUX.1 samples without a negative pass)": bool(args.negative),
        f"--cfg (FLUX.1 runs at CFG {CFG:g}; set dev's --guidance)": args.cfg not in (None, CFG),
        f"--sampler (FLUX.1 samples with {SAMPLER})": args.sampler not in (None, SAMPLER),
        "--init-image (FLUX.1 img2img is not supported yet)": args.init_image is not None,
    }
    _refuse_options(args, sd_only, "FLUX.1")
    files = {"ae": args.ae, "clip_l": args.clip_l, "t5xxl": args.t5xxl}
    refuse_guidance(check_flux_files(Path(args.model), **files), args.guidance, args.model)
    model = load_flux_for_inference(args.model, args.device, config=args.config, **files)
    options = FluxOptions(**_given(FluxOptions, args))
    results = generate_flux(model, options, loras=loras, lora_dir=args.lora_dir, modules=files)
    for path in save_generated(results, args.out):
        print(path)
    return 0
