"""Generate images for scenes with a base model (and any LoRA applied to it) and score them.

Scoring is the classifier's verdict against the prompt: per attribute, the share of images
where it sees what the prompt asked for. Generation is batched and seeded per prompt index,
so two runs with the same model give the same figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler
from PIL import Image

from lorakit.models.base import BaseModel
from lorakit.synthetic.classifier import AttributeClassifier, Verdict, judge
from lorakit.synthetic.scenes import ATTRIBUTES, Scene

STEPS = 15
GUIDANCE = 5.0


@torch.no_grad()
def generate(
    base: BaseModel, prompts: Sequence[str], *, seed: int = 0, batch: int = 32
) -> list[Image.Image]:
    """One 64×64 image per prompt (DDIM, CFG 5); image i uses seed `seed + i`."""
    pipe = base.pipeline(DDIMScheduler.from_config(base.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    side = base.unet.config.sample_size * base.vae_scale_factor
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = list(prompts[start : start + batch])
        latents = torch.stack(
            [
                torch.randn(
                    (4, side // base.vae_scale_factor, side // base.vae_scale_factor),
                    generator=torch.Generator().manual_seed(seed + start + i),
                )
                for i in range(len(chunk))
            ]
        ).to(base.unet.dtype)
        out = pipe(
            chunk,
            height=side,
            width=side,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents,
        )
        images.extend(out.images)
    return images


def attribute_accuracy(scenes: Sequence[Scene], verdicts: Sequence[Verdict]) -> dict[str, float]:
    """Per attribute, the share of images whose verdict matches the scene; "mean" averages."""
    scores = {
        name: sum(v.values[name] == getattr(s, name) for s, v in zip(scenes, verdicts, strict=True))
        / len(scenes)
        for name in ATTRIBUTES
    }
    scores["mean"] = sum(scores.values()) / len(ATTRIBUTES)
    return scores


def base_accuracy(
    base: BaseModel, classifier: AttributeClassifier, scenes: Sequence[Scene], seed: int = 0
) -> dict[str, float]:
    """How well `base` follows full prompts for `scenes` (e.g. the held-out combinations)."""
    images = generate(base, [scene.caption() for scene in scenes], seed=seed)
    return attribute_accuracy(scenes, judge(classifier, images))
