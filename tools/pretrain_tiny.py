"""Pretrain lorakit's tiny base model and its attribute classifier on the synthetic world.

    python tools/pretrain_tiny.py vae        WORK   # 1. the autoencoder
    python tools/pretrain_tiny.py unet       WORK   # 2. UNet + text encoder on its latents
    python tools/pretrain_tiny.py classifier WORK   # 3. the judge
    python tools/pretrain_tiny.py export     WORK   # 4. fp16 weights into the package

Each stage reads what the previous one wrote under WORK and saves atomically, so a stage
can be stopped and rerun. docs/tiny-model.md records the hardware and the times.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pretrain_classifier import to_tensor, train_classifier

from lorakit.synthetic import scenes
from lorakit.synthetic.architecture import tiny_base_scheduler, tiny_base_vae
from lorakit.synthetic.subjects import SUBJECTS


def vae_images(count: int, seed: int) -> np.ndarray:
    """Shapes of every combination and every subject: the VAE must draw both."""
    rng = random.Random(seed)
    chosen = []
    for index in range(count):
        if index % 4 == 3:
            chosen.append(
                scenes.Scene(
                    background=rng.choice(scenes.ATTRIBUTES["background"]),
                    size=rng.choice(scenes.ATTRIBUTES["size"]),
                    position=rng.choice(scenes.ATTRIBUTES["position"]),
                    subject=rng.choice(tuple(SUBJECTS)),
                    mirrored=rng.random() < 0.5,
                )
            )
        else:
            chosen.append(scenes.random_scene(rng, split=rng.choice(["train", "held_out"])))
    return scenes.render_array(chosen, seed)


def train_vae(work: Path, steps: int, batch: int) -> None:
    torch.manual_seed(0)
    images = to_tensor(vae_images(24000, seed=1))
    vae = tiny_base_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)
    start = time.time()
    for step in range(steps):
        x = images[torch.randint(0, len(images), (batch,))]
        if step < steps * 0.8:  # crops are 4× cheaper; the last fifth sees whole images
            oy, ox = (random.randrange(0, 33, 8) for _ in range(2))
            x = x[:, :, oy : oy + 32, ox : ox + 32]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / x[0].numel()
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(
                f"vae step {step} loss {loss.item():.4f} kl {kl.item():.3f} "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    vae.save_pretrained(work / "vae")


def caption_variant(scene: scenes.Scene, rng: random.Random) -> str:
    """The caption with each secondary tag dropped at 15 % and the whole caption at 10 %.

    Dropped tags teach the model to fill in what a short prompt leaves open (what LoRA
    prompts such as "zkz robot, gray background" rely on); empty captions give
    classifier-free guidance its unconditional branch.
    """
    if rng.random() < 0.1:
        return ""
    first, *rest = scene.tags()
    return ", ".join([first, *(tag for tag in rest if rng.random() >= 0.15)])


def train_decoder(work: Path, steps: int, batch: int) -> None:
    """Sharpen the decoder on whole images with the encoder frozen: the UNet's latents
    (already encoded) keep their meaning while decoded images get crisper."""
    from diffusers import AutoencoderKL

    torch.manual_seed(1)
    images = to_tensor(vae_images(16000, seed=10))
    vae = AutoencoderKL.from_pretrained(work / "vae")
    vae.encoder.requires_grad_(False)
    vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=3e-4, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-4, total_steps=steps, pct_start=0.05)
    start = time.time()
    for step in range(steps):
        x = images[torch.randint(0, len(images), (batch,))]
        with torch.no_grad():
            latents = vae.encode(x).latent_dist.sample()
        recon = vae.decode(latents).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            print(
                f"decoder step {step} loss {loss.item():.4f} {time.time() - start:.0f}s", flush=True
            )
    vae.save_pretrained(work / "vae-tuned")


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    parts = [
        vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)
    ]
    return torch.cat(parts)


def unet_data(work: Path, count: int) -> tuple[torch.Tensor, list[scenes.Scene], float]:
    """Latents of `count` training-split scenes, cached under WORK, and the VAE scale."""
    from diffusers import AutoencoderKL

    cache = work / f"latents-{count}.pt"
    if cache.is_file():
        saved = torch.load(cache, weights_only=False)  # written by this script
        return saved["latents"], saved["scenes"], saved["scale"]
    rng = random.Random(2)
    chosen = [scenes.random_scene(rng) for _ in range(count)]
    vae = AutoencoderKL.from_pretrained(work / "vae").eval()
    latents = encode_latents(vae, to_tensor(scenes.render_array(chosen, seed=3)))
    scale = float(1.0 / latents.std())
    torch.save({"latents": latents, "scenes": chosen, "scale": scale}, cache)
    return latents, chosen, scale


def min_snr_weights(scheduler, gamma: float = 5.0) -> torch.Tensor:
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    return torch.clamp(snr, max=gamma) / snr


def train_unet(work: Path, steps: int, batch: int, lr: float) -> None:
    from lorakit.models.base import ModelFamily
    from lorakit.models.components import load_tokenizers
    from lorakit.synthetic.architecture import tiny_base_text_encoder, tiny_base_unet

    latents, chosen, scale = unet_data(work, 80000)
    print(f"{len(latents)} latents, scale {scale:.4f}", flush=True)
    (tokenizer,) = load_tokenizers(ModelFamily.SD15)
    torch.manual_seed(0)
    unet, text_encoder = tiny_base_unet(), tiny_base_text_encoder()
    params = [*unet.parameters(), *text_encoder.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.03)
    noise_sched = tiny_base_scheduler()
    weights = min_snr_weights(noise_sched)
    rng = random.Random(4)
    start, state_path = time.time(), work / "unet-state.pt"
    first = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        opt.load_state_dict(state["opt"])
        ema, first = state["ema"], state["step"]
        # Rebuilt rather than loaded, so a resumed run may be given a new --steps total.
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, lr, total_steps=steps, pct_start=0.03, last_epoch=first - 1
        )
    running = 0.0
    for step in range(first, steps):
        index = torch.randint(0, len(latents), (batch,))
        x0 = latents[index] * scale
        ids = tokenizer(
            [caption_variant(chosen[i], rng) for i in index.tolist()],
            padding="max_length",
            max_length=77,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (batch,))
        noisy = noise_sched.add_noise(x0, noise, t)
        pred = unet(noisy, t, text_encoder(ids)[0]).sample
        loss = (F.mse_loss(pred, noise, reduction="none").mean((1, 2, 3)) * weights[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.998, (1 + step) / (10 + step))
        torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        running = 0.98 * running + 0.02 * loss.item() if step > first else loss.item()
        if step % 50 == 0 or step == steps - 1:
            print(
                f"unet step {step} loss {running:.4f} lr {sched.get_last_lr()[0]:.2e} "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
        if (step + 1) % 250 == 0 or step == steps - 1:
            state = {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "opt": opt.state_dict(),
                "sched": sched.state_dict(),
                "ema": ema,
                "step": step + 1,
                "scale": scale,
            }
            torch.save(state, work / "unet-state.tmp")
            (work / "unet-state.tmp").replace(state_path)


def assemble(work: Path):
    """A BaseModel from WORK: the VAE (with its latent scale) and the UNet's EMA weights."""
    from diffusers import AutoencoderKL

    from lorakit.models.base import ModelFamily
    from lorakit.models.components import assemble_base_model
    from lorakit.synthetic.architecture import tiny_base_text_encoder, tiny_base_unet

    state = torch.load(work / "unet-state.pt", weights_only=False)
    unet, text_encoder = tiny_base_unet(), tiny_base_text_encoder()
    names = [
        *(f"u.{k}" for k, _ in unet.named_parameters()),
        *(f"t.{k}" for k, _ in text_encoder.named_parameters()),
    ]
    params = dict(zip(names, state["ema"], strict=True))
    unet.load_state_dict({k[2:]: v for k, v in params.items() if k[0] == "u"}, strict=False)
    text_encoder.load_state_dict({k[2:]: v for k, v in params.items() if k[0] == "t"}, strict=False)
    vae = AutoencoderKL.from_pretrained(work / "vae")
    vae.register_to_config(scaling_factor=state["scale"])
    print(f"assembled step {state['step']}", flush=True)
    return assemble_base_model(
        work, ModelFamily.SD15, unet, vae, [text_encoder], dict(tiny_base_scheduler().config)
    )


def evaluate(work: Path, classifier_path: Path) -> None:
    from lorakit.synthetic.classifier import load_classifier
    from lorakit.synthetic.evaluate import base_accuracy, generate

    base = assemble(work)
    held = [scene for scene in scenes.all_combos() if scenes.held_out(scene)]
    rng = random.Random(9)
    seen = [scenes.random_scene(rng) for _ in range(len(held))]
    if classifier_path.is_file():
        classifier = load_classifier(classifier_path)
        for label, chosen in (("held-out", held), ("training", seen)):
            scores = base_accuracy(base, classifier, chosen)
            print(label, " ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)
    images = generate(base, [scene.caption() for scene in held[:32]])
    from PIL import Image

    sheet = Image.new("RGB", (64 * 8, 64 * 4))
    for i, image in enumerate(images):
        sheet.paste(image, (64 * (i % 8), 64 * (i // 8)))
    sheet.save(work / "samples.png")
    (work / "samples.txt").write_text("\n".join(scene.caption() for scene in held[:32]))


def export(work: Path) -> None:
    """Write the EMA model as an fp16 diffusers folder into the package, family `tiny`."""
    import json
    import shutil

    from lorakit.models.components import TINY_BASE_DIR
    from lorakit.models.family import TINY_MARKER

    base = assemble(work)
    staging = TINY_BASE_DIR.with_name("tiny_base.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    for name, module in (
        ("unet", base.unet),
        ("vae", base.vae),
        ("text_encoder", base.text_encoders[0]),
    ):
        module.to(torch.float16).save_pretrained(staging / name, safe_serialization=True)
    tiny_base_scheduler().save_pretrained(staging / "scheduler")
    index = {
        "_class_name": "StableDiffusionPipeline",
        TINY_MARKER: "tiny",
        "scheduler": ["diffusers", "DDPMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (staging / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    shutil.rmtree(TINY_BASE_DIR, ignore_errors=True)
    staging.rename(TINY_BASE_DIR)
    classifier = work / "classifier.safetensors"
    from lorakit.synthetic.classifier import WEIGHTS

    WEIGHTS.parent.mkdir(exist_ok=True)
    shutil.copyfile(classifier, WEIGHTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "stage", choices=["vae", "decoder", "unet", "classifier", "evaluate", "export"]
    )
    parser.add_argument("work", type=Path)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=6e-4)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.stage == "vae":
        train_vae(args.work, args.steps, args.batch)
    elif args.stage == "decoder":
        train_decoder(args.work, args.steps, args.batch)
    elif args.stage == "unet":
        train_unet(args.work, args.steps, args.batch, args.lr)
    elif args.stage == "classifier":
        train_classifier(args.work, args.steps, args.batch)
    elif args.stage == "evaluate":
        evaluate(args.work, args.work / "classifier.safetensors")
    elif args.stage == "export":
        export(args.work)


if __name__ == "__main__":
    main()
