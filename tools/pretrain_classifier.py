"""Stage 3 of tools/pretrain_tiny.py: the attribute classifier that judges generated images.

Trained on rendered scenes (shapes of every combination, held-out ones included, and every
subject), half of them passed through the tiny VAE so decoded pictures look familiar.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
import torch.nn.functional as F

from lorakit.synthetic import scenes
from lorakit.synthetic.subjects import SUBJECTS


def to_tensor(images) -> torch.Tensor:
    """uint8 (N, H, W, 3) images as a float batch in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def classifier_labels(chosen: list[scenes.Scene]) -> dict[str, torch.Tensor]:
    """Class indices per head; -100 (ignored) for shape and colour of subject scenes."""
    from lorakit.synthetic.classifier import HEADS, NONE

    labels = {}
    for name, values in HEADS.items():
        column = []
        for scene in chosen:
            value = scene.subject or NONE if name == "subject" else getattr(scene, name)
            column.append(values.index(value) if value else -100)
        labels[name] = torch.tensor(column)
    return labels


def classifier_scenes(count: int, seed: int) -> list[scenes.Scene]:
    rng = random.Random(seed)
    chosen = []
    for index in range(count):
        scene = scenes.random_scene(rng, split=rng.choice(["train", "held_out"]))
        if index % 3 == 2:
            scene = scenes.Scene(
                background=scene.background,
                size=scene.size,
                position=scene.position,
                subject=rng.choice(tuple(SUBJECTS)),
                mirrored=rng.random() < 0.5,
            )
        chosen.append(scene)
    return chosen


@torch.no_grad()
def roundtrip(vae, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """Images as the tiny VAE returns them: what generated images look like at best."""
    parts = []
    for i in range(0, len(images), batch):
        latents = vae.encode(images[i : i + batch]).latent_dist.mean
        parts.append(vae.decode(latents).sample.clamp(-1, 1))
    return torch.cat(parts)


def train_classifier(work: Path, steps: int, batch: int) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from lorakit.synthetic.classifier import HEADS, AttributeClassifier

    torch.manual_seed(0)
    chosen = classifier_scenes(24000, seed=5)
    images = to_tensor(scenes.render_array(chosen, seed=6))
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    images[::2] = roundtrip(vae, images[::2])
    labels = classifier_labels(chosen)
    held = classifier_scenes(2000, seed=7)
    held_images = roundtrip(vae, to_tensor(scenes.render_array(held, seed=8)))
    held_labels = classifier_labels(held)
    model = AttributeClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps, pct_start=0.05)
    for step in range(steps):
        index = torch.randint(0, len(images), (batch,))
        x = images[index] + 0.05 * torch.rand(batch, 1, 1, 1) * torch.randn(batch, 3, 64, 64)
        logits = model(x)
        loss = sum(
            F.cross_entropy(logits[name], labels[name][index], ignore_index=-100) for name in HEADS
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0 or step == steps - 1:
            print(f"classifier step {step} loss {loss.item():.4f}", flush=True)
    model.eval()
    with torch.no_grad():
        logits = model(held_images)
    for name in HEADS:
        mask = held_labels[name] != -100
        right = (logits[name].argmax(1) == held_labels[name])[mask].float().mean()
        print(f"held-out accuracy {name}: {right:.4f}", flush=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, work / "classifier.tmp")
    (work / "classifier.tmp").replace(work / "classifier.safetensors")
