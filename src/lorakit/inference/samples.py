"""Sample images during training, from a prompt file in kohya sd-scripts' syntax.

One prompt per line, options after ` --`: `--n` negative, `--w`/`--h` size, `--s` steps,
`--d` seed, `--l` CFG scale, `--ss` sampler; `#` lines are comments. As in sd-scripts,
keys are case-insensitive, options it has for other models (`--f`, `--cn`, …) are
dropped, steps are capped at 1000 and sizes rounded down to a multiple of 8. Guides paste
lines such as `photo --w 512--h 512--s 35 --n blurry`, so a known option may also follow
a number with no space. A prompt without `--d` gets a fixed seed: the same noise every
epoch is what makes samples comparable from epoch to epoch (and lets `lorakit pick` see
them stop changing).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.inference.generate import GenerateOptions, generation_info, render
from lorakit.inference.metadata import save_png
from lorakit.inference.samplers import canonical_sampler_name
from lorakit.models.base import BaseModel
from lorakit.progress import shown

# sd-scripts' sampler names, so its prompt files and `--sample_sampler` values still work.
SD_SCRIPTS_SAMPLERS = {
    "ddim": "DDIM",
    "pndm": "PLMS",
    "lms": "LMS",
    "k_lms": "LMS",
    "euler": "Euler",
    "k_euler": "Euler",
    "euler_a": "Euler a",
    "k_euler_a": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "k_dpm_2": "DPM2",
    "dpm_2_a": "DPM2 a",
    "k_dpm_2_a": "DPM2 a",
    "dpmsolver": "DPM++ 2M",
    "dpmsolver++": "DPM++ 2M",
    "dpmsingle": "DPM++ 2S a",
}
DEFAULT_SEED = 42
# ` --key value` as sd-scripts splits it; a known key may also follow a number directly.
_OPTION = re.compile(r"\s+--(?=[a-z]+\s)|\s*--(?=(?:ss|n|w|h|s|d|l)\s)", re.IGNORECASE)
MAX_STEPS = 1000  # sd-scripts clamps `--s` to 1..1000


@dataclass
class SamplePrompt(GenerateOptions):
    """One sample image to render: `GenerateOptions` with sd-scripts' defaults (512 px)."""

    width: int | None = 512
    height: int | None = 512


def sampler_name(name: str) -> str:
    """An A1111 or sd-scripts sampler name, as lorakit's A1111 spelling."""
    return SD_SCRIPTS_SAMPLERS.get(name.strip().lower()) or canonical_sampler_name(name)


def _apply_option(sample: SamplePrompt, key: str, value: str) -> None:
    """Set one option; keys sd-scripts has for other models (`--f`, `--cn`…) are ignored."""
    fields = {"w": "width", "h": "height", "d": "seed"}
    if key == "n":
        sample.negative = value
    elif key == "l":
        sample.cfg = float(value)
    elif key == "ss":
        sample.sampler = sampler_name(value)
    elif key == "s":
        sample.steps = max(1, min(MAX_STEPS, int(value)))
    elif key in fields:
        setattr(sample, fields[key], int(value))


def parse_prompt_line(line: str, where: str = "prompt") -> SamplePrompt:
    """One sd-scripts prompt line; a malformed option is a one-line error naming `where`."""
    prompt, *options = _OPTION.split(line.strip())
    sample = SamplePrompt(prompt=prompt.strip())
    for option in options:
        key, _, value = option.partition(" ")
        try:
            _apply_option(sample, key.lower(), value.strip())
        except ValueError:
            raise LorakitError(
                f"{where}: option --{key} has a bad value {value.strip()!r}; "
                "write e.g. --w 512 --s 20 --l 7.5"
            ) from None
        except LorakitError as exc:
            raise LorakitError(f"{where}: {exc}") from None
    if not sample.prompt:
        raise LorakitError(f"{where}: the line has options but no prompt text")
    # sd-scripts rounds sizes down to the VAE's stride of 8, at least 64 px.
    sample.width = max(64, sample.width - sample.width % 8)
    sample.height = max(64, sample.height - sample.height % 8)
    return sample


def parse_prompt_file(path: Path) -> list[SamplePrompt]:
    """All prompts of an sd-scripts prompt file (blank and `#` lines skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LorakitError(f"cannot read sample prompt file {path}: {exc}") from None
    prompts = [
        parse_prompt_line(line, f"{path}:{number}")
        for number, line in enumerate(lines, start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not prompts:
        raise LorakitError(f"sample prompt file {path} has no prompts; write one prompt per line")
    return prompts


@contextmanager
def eval_mode(*roots: nn.Module) -> Iterator[None]:
    """Put every module in eval mode and restore each one's own train/eval flag afterwards.

    Restoring per submodule keeps whatever mix the trainer set (a frozen text encoder in
    eval beside LoRA layers in train mode).
    """
    saved = [(module, module.training) for root in roots for module in root.modules()]
    try:
        for root in roots:
            root.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


def sample_file_name(name: str, epoch: int, step: int, index: int) -> str:
    """`<name>_e000002_s000040_00.png`: sortable by epoch, then step, then prompt."""
    return f"{name}_e{epoch:06d}_s{step:06d}_{index:02d}.png"


def generate_samples(
    base: BaseModel,
    prompts: Sequence[SamplePrompt],
    out_dir: Path,
    *,
    step: int,
    epoch: int,
    device: torch.device | str = "cpu",
    name: str = "sample",
) -> list[Path]:
    """Render `prompts` with the LoRA networks now injected into `base`; return the PNGs.

    Training state is left as found: module train/eval flags are restored and the global
    RNG is forked, so sampling does not change the training run's random stream. Each
    prompt and its denoising steps show as progress: on a CPU a full-size image takes
    minutes.
    """
    device = torch.device(device)
    low_precision = device.type == "cuda" and base.unet.dtype != torch.float32
    rng_devices = [device] if device.type == "cuda" else []
    paths: list[Path] = []
    with (
        torch.random.fork_rng(devices=rng_devices),
        eval_mode(base.unet, base.vae, *base.text_encoders),
        shown() as board,
    ):
        samples = board.add_task("samples", total=len(prompts))
        for index, sample in enumerate(prompts):
            seed = sample.seed if sample.seed is not None else DEFAULT_SEED + index
            options = dataclasses.replace(sample, sampler=sampler_name(sample.sampler), batch=1)
            with torch.autocast(device.type, dtype=base.unet.dtype, enabled=low_precision):
                image = render(base, options, seed, board)[0]
            path = Path(out_dir) / sample_file_name(name, epoch, step, index)
            paths.append(save_png(image, path, generation_info(base, options, seed)))
            board.advance(samples)
        board.remove_task(samples)
    return paths
