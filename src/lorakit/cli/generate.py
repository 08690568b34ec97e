"""`lorakit generate`: txt2img / img2img with LoRAs, A1111 settings and infotext PNGs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lorakit.cli.common import arguments_for
from lorakit.errors import LorakitError
from lorakit.fileio import check_writable_folder

FLUX_DEFAULTS = (
    "FLUX.1 (txt2img): Euler, CFG 1, no negative prompt; 20 steps and --guidance 3.5 for "
    "dev, 4 steps for schnell."
)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `generate` and `grid` (A1111 names); None = the family's default."""
    parser.add_argument("--negative", default="", help="negative prompt (SD)")
    parser.add_argument("--sampler", help="A1111 sampler name (default Euler a; FLUX.1: Euler)")
    parser.add_argument("--steps", type=int, help="denoising steps (default 20; schnell: 4)")
    parser.add_argument("--cfg", type=float, help="CFG scale (default 7; FLUX.1: 1)")
    parser.add_argument("--width", type=int, help="image width (default: the model's size)")
    parser.add_argument("--height", type=int, help="image height (default: the model's size)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")


def add_model_arguments(parser: argparse.ArgumentParser, default: str = "") -> None:
    """The FLUX.1 component files and the architecture folder (`generate` and `grid`);
    `default` tells where an unset file comes from (`grid`: the run's config.toml)."""
    flux = parser.add_argument_group("FLUX.1")
    flux.add_argument(
        "--clip-l", type=Path, help="CLIP-L file a BFL transformer file lacks" + default
    )
    flux.add_argument(
        "--t5xxl", type=Path, help="T5-XXL file a BFL transformer file lacks" + default
    )
    flux.add_argument(
        "--ae", type=Path, help="VAE file (ae.safetensors) a BFL file lacks" + default
    )
    flux.add_argument("--guidance", type=float, help="dev's distilled guidance (default 3.5)")
    parser.add_argument(
        "--config",
        type=Path,
        help="diffusers folder of a single file's architecture, when its sizes are not the "
        "released model's" + (default or " (default: the bundled configs)"),
    )


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate images with LoRAs (txt2img / img2img)",
        description="Generate images. LoRAs come from <lora:name:weight> tags in the prompt "
        "(resolved in --lora-dir) or --lora FILE:weight. Each PNG carries an A1111 infotext. "
        + FLUX_DEFAULTS,
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
    add_model_arguments(parser)
    parser.set_defaults(func=run)


def _init_image(path: Path | None) -> Any:
    """The start image, upright sRGB RGB as the dataset stage reads photos."""
    if path is None:
        return None
    if not path.is_file():
        raise LorakitError(f"cannot read --init-image {path}: no such file; check the path")
    from lorakit.dataset.images import load_rgb

    return load_rgb(path)


def given_options(target: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The options for `target` the user set (None = the target's own default)."""
    return {k: v for k, v in arguments_for(target, args).items() if v is not None}


def refuse_other_family(args: argparse.Namespace, model: Path, flux: bool) -> None:
    """One line for the first option the model's family does not take: the SD sampling
    options (and img2img) for FLUX.1, the FLUX.1 files and guidance for SD."""
    from lorakit.inference.flux_generate import CFG, MODULE_FILES, SAMPLER

    if flux:
        family = "FLUX.1"
        cfg = f"--cfg (FLUX.1 runs at CFG {CFG:g}; set dev's --guidance)"
        init_image = getattr(args, "init_image", None)  # `generate` only
        options = {
            "--negative (FLUX.1 samples without a negative pass)": bool(args.negative),
            cfg: args.cfg not in (None, CFG),
            f"--sampler (FLUX.1 samples with {SAMPLER})": args.sampler not in (None, SAMPLER),
            "--init-image (FLUX.1 img2img is not supported yet)": init_image is not None,
        }
    else:
        family = "SD"
        flux_only = (*MODULE_FILES, "guidance")
        options = {"--" + k.replace("_", "-"): getattr(args, k) is not None for k in flux_only}
    for option, given in options.items():
        if given:
            raise LorakitError(f"{model}: {option} does not apply to a {family} model; drop it")


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
    flux = detect_family(Path(args.model).expanduser()) is FLUX1  # the one fork
    refuse_other_family(args, args.model, flux)
    if flux:
        return _run_flux(args, loras)
    options = GenerateOptions(**(given_options(GenerateOptions, args) | {"init_image": init_image}))
    base = load_for_inference(args.model, args.device, args.config)
    results = generate(base, options, loras=loras, lora_dir=args.lora_dir)
    for path in save_generated(results, args.out):
        print(path)
    return 0


def _run_flux(args: argparse.Namespace, loras: list[Any]) -> int:
    """FLUX.1 txt2img (the SD-only options were refused): `generate_flux`."""
    from lorakit.inference.flux_generate import (
        FluxOptions,
        generate_flux,
        load_flux_for_inference,
        module_files,
    )
    from lorakit.inference.generate import save_generated

    files = module_files(args)
    model = load_flux_for_inference(
        args.model, args.device, config=args.config, guidance=args.guidance, **files
    )
    options = FluxOptions(**given_options(FluxOptions, args))
    results = generate_flux(model, options, loras=loras, lora_dir=args.lora_dir, modules=files)
    for path in save_generated(results, args.out):
        print(path)
    return 0
