"""How much GPU memory a LoRA run needs, estimated from the architecture and the settings.

`lorakit train CONFIG --dry-run` prints it before anything loads, so a user can tell
whether a run fits an 8/12/16/24 GB card (those cards hold 8/12/16/24 GiB: GiB here).

- weights: parameter counts of the real architecture (built on the meta device from the
  bundled, `model.config` or the model folder's own configs; no weights read) × bytes of the
  weight dtype (fp32 4, fp16/bf16 2, FLUX fp8 base 1). lorakit keeps the text encoders and
  the VAE on the GPU (sampling and validation use them) and the VAE in fp32
  (`runtime.prepare_model`). FLUX assumes sd-scripts' way instead: text-encoder outputs
  and latents cached, CLIP-L, T5-XXL and the VAE off the GPU.
- LoRA/optimizer: the configured network injected into the meta architecture, its
  parameters × (4 fp32 weight + 4 fp32 gradient + autocast's 16-bit copy, 2 + the
  optimizer's state, `OPTIMIZER_BYTES` / `adafactor_bytes`).
- activations: `ACTIVATIONS` bytes per latent pixel (UNets) or per transformer token
  (FLUX: image tokens + T5 tokens, the sequence every block carries) × batch × count, the
  second factor with gradient checkpointing, doubled in fp32.
- CUDA: the context, cuBLAS/cuDNN workspaces and allocator slack, a constant.
- FLUX block swap (sd-scripts' `--blocks_to_swap N`): the swapped blocks' weights live on
  the CPU; one double block's worth stays for the transfers.

How the activation factors were chosen: the real SD1.5, SDXL and tiny UNets and FLUX.1 dev
at full width with one double and one single block ran one forward pass on the CPU under
bf16 autocast (frozen weights bf16, a rank-16 LoRA in fp32; PyTorch's CPU flash attention,
which keeps no score matrix, like the GPU kernels; layer and group norms in fp32, as CUDA's
autocast runs them and the CPU's does not), and a saved-tensor hook summed the distinct
storages autograd kept for backward (frozen weights excluded). SD1.5: 94 MiB at latent 16²,
315 MiB at 32² → 0.29 MiB per latent pixel (the ~20 MiB left over is mostly the LoRA's
bf16 casts, counted in the LoRA term). SDXL: 422 MiB at 24², 640 MiB at 32² → 0.49 MiB per
pixel (+142 MiB, 81 of it LoRA casts). FLUX at 1024 px (4,608 tokens): 767 MiB per double
block, 706 MiB per single one, 48 MiB outside them → 40.5 GiB for 19 + 38 blocks, 9.4 MB
per token; at 512 px a double block keeps a third as much (linear in tokens). With
checkpointing the peak is what stays (each checkpointed module's inputs and what lies
outside them) plus one module recomputed: SD1.5 23 → 75 MiB, SDXL 73 → 96 MiB at the same
sizes, FLUX 57 × 27 MiB + 767 + 48 = 2.3 GiB. These are bytes kept for backward, not a
measured peak: the backward's transient gradients, the CUDA kernels' own buffers and the
allocator come on top, so a GPU run must calibrate them (`torch.cuda.max_memory_allocated`
and the process's total per family, resolution, batch and checkpointing, against this
estimate).

Published points it should meet (cards' GB): sd-scripts' FLUX.1 guide
(`docs/flux_train_network.md`, "Recommended Settings by GPU Memory", all with `--fp8_base`,
gradient checkpointing, cached text-encoder outputs and latents) trains at 24 GB with batch
2, 16 GB batch 1 with block swap, 12 GB with `--blocks_to_swap 16` and AdamW8bit, 8 GB with
28; kohya's FLUX LoRA note (huggingface.co/kohya-ss/misc-models, README) needs more than
26 GB in bf16 without `--fp8_base`. SDXL LoRA at 1024 with checkpointing runs in 8–12 GB,
SD1.5 at 512 in 6–8 GB. On one H100 (shared/DESIGN.md) diffusers + peft SDXL 1024 b1 peaked
at 12.8 GiB and sd-scripts at 14.2 GiB.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import torch

from lorakit.errors import LorakitError
from lorakit.families import FLUX1, ModelFamily
from lorakit.models.components import TEXT_ENCODERS, empty_base_model
from lorakit.models.flux.memory import swap_split
from lorakit.models.flux.model import MAX_SEQUENCE_LENGTH, empty_flux_model
from lorakit.network.config import LoRAConfig
from lorakit.network.flux import flux_sites
from lorakit.network.lora import LoRANetwork
from lorakit.training.config import TrainConfig
from lorakit.training.runtime import DTYPE_NAMES, lora_config, weight_dtype

GIB = 2**30
FLUX = str(FLUX1)
# Activation bytes per unit (latent pixel for a UNet, transformer token for FLUX) at batch
# 1 under fp16/bf16 autocast: (without, with gradient checkpointing). See the module doc.
ACTIVATIONS: dict[str, tuple[float, float]] = {
    ModelFamily.SD15.value: (304e3, 72e3),
    ModelFamily.SDXL.value: (514e3, 57e3),
    ModelFamily.TINY.value: (42e3, 13e3),
    FLUX: (9.4e6, 0.54e6),
}
# The CUDA context (~0.5 GiB with torch's kernels loaded), cuBLAS/cuDNN workspaces and
# allocator slack: a constant until a GPU run measures it.
CUDA_BYTES = int(0.6 * GIB)
# Optimizer state per trainable parameter: AdamW two fp32 moments; AdamW8bit two 8-bit
# moments (bitsandbytes' per-256 absmax adds 1.6 %); Prodigy four fp32 (exp_avg,
# exp_avg_sq, s, p0); DAdaptAdam three (exp_avg, exp_avg_sq, s); Lion one momentum.
# Adafactor is `adafactor_bytes`.
OPTIMIZER_BYTES: dict[str, float] = {
    "adamw": 8,
    "adamw8bit": 2,
    "prodigy": 16,
    "dadaptadam": 12,
    "lion": 4,
}
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2, "fp8": 1}


@dataclass(frozen=True)
class Term:
    """One part of the estimate: a short label, its bytes and the arithmetic behind it."""

    label: str
    bytes: int
    how: str

    @property
    def gib(self) -> float:
        return self.bytes / GIB


@dataclass(frozen=True)
class VramEstimate:
    terms: tuple[Term, ...]
    assumptions: tuple[str, ...]

    @property
    def total_bytes(self) -> int:
        return sum(term.bytes for term in self.terms)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    def term(self, label: str) -> Term:
        return next(term for term in self.terms if term.label == label)

    def summary(self) -> str:
        parts = " + ".join(f"{term.label} {term.gib:.1f}" for term in self.terms)
        return f"~{self.total_gib:.1f} GiB = {parts}"

    def lines(self) -> list[str]:
        """The dry run's block: the total, one line per term, the assumptions."""
        return [
            f"VRAM estimate (on a GPU): {self.summary()}",
            *(f"  {term.label} {term.gib:.2f} GiB: {term.how}" for term in self.terms),
            *(f"  assumes {line}" for line in self.assumptions),
        ]


def _millions(count: int) -> str:
    return f"{count / 1e6:,.1f} M"


def adafactor_bytes(rank: int, args: Mapping[str, Any]) -> float:
    """Adafactor keeps a row and a column second moment per matrix: (rows + cols) × 4
    bytes over rows × cols parameters, ≈ 4 / rank for a LoRA factor (the other side is
    much wider); a first moment (`beta1` set) adds 4."""
    return 4 / rank + (4 if args.get("beta1") is not None else 0)


def lora_term(
    params: int, optimizer: str, rank: int, args: Mapping[str, Any], autocast: bool
) -> Term:
    """fp32 LoRA weights and gradients (`runtime.build_optimizer`), optimizer state, and
    under autocast the 16-bit copy of each weight it casts once per forward and keeps for
    backward."""
    state = adafactor_bytes(rank, args) if optimizer == "adafactor" else OPTIMIZER_BYTES[optimizer]
    cast = 2 if autocast else 0
    copy = f" + {cast} autocast copy" if autocast else ""
    return Term(
        "LoRA/optimizer",
        int(params * (8 + cast + state)),
        f"{_millions(params)} params × (4 weight + 4 grad{copy} + {state:.2g} {optimizer}) B",
    )


def activation_term(
    family: str, units: int, unit: str, batch: int, checkpointing: bool, fp32: bool
) -> Term:
    per_unit = ACTIVATIONS[family][1 if checkpointing else 0] * (2 if fp32 else 1)
    gc = "gradient checkpointing" if checkpointing else "no gradient checkpointing"
    dtype = "fp32" if fp32 else "fp16/bf16"
    return Term(
        "activations",
        int(per_unit * units * batch),
        f"{units:,} {unit} × batch {batch} × {per_unit / 1e3:,.0f} kB ({gc}, {dtype}; "
        "uncalibrated)",
    )


def cuda_term() -> Term:
    return Term("CUDA", CUDA_BYTES, "context, cuBLAS/cuDNN workspaces, allocator (constant)")


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class BaseCounts:
    """Parameter counts of an SD-layout architecture and of a network on it."""

    unet: int
    text_encoders: tuple[int, ...]
    vae: int
    vae_scale: int
    lora: int


@functools.cache
def base_counts(family: ModelFamily, folder: Path | None, network: tuple[Any, ...]) -> BaseCounts:
    """Counts of the meta architecture, with the network `LoRAConfig(*network)` injected
    into it: the real module choice of every network type, no memory spent (cached: a dry
    run builds one, the UI's repeated checks none)."""
    base = empty_base_model(family, folder)
    counts = {
        "unet": _params(base.unet),
        "text_encoders": tuple(_params(te) for te in base.text_encoders),
        "vae": _params(base.vae),
    }
    with torch.device("meta"):
        lora = LoRANetwork.inject(base, LoRAConfig(*network))
    return BaseCounts(**counts, vae_scale=base.vae_scale_factor, lora=_params(lora))


def architecture_folder(config: TrainConfig) -> Path | None:
    """The configs the run's model is built from: `model.config`, else the model's own
    diffusers folder, else None (the family's bundled configs)."""
    folders = [Path(config.model.config).expanduser()] if config.model.config else []
    folders.append(Path(config.model.path))
    return next((f for f in folders if (f / "unet" / "config.json").is_file()), None)


def estimate(config: TrainConfig, family: str, flux_variant: str = "dev") -> VramEstimate:
    """The estimate for `config` (resolution resolved) on a GPU: the precision is what
    `training.mixed_precision` gives there, whatever this machine has. FLUX.1 goes to
    `flux_estimate` (its variant is the caller's to tell)."""
    t = config.training
    precision = t.mixed_precision
    name = DTYPE_NAMES[weight_dtype(config, precision)]
    opt = config.optimizer
    if family == FLUX:
        flux = config.flux
        return flux_estimate(
            flux_variant,
            resolution=config.dataset.resolution or 1024,
            batch_size=t.batch_size,
            rank=config.network.rank,
            weights="fp8" if flux and flux.fp8_base else name,
            blocks_to_swap=flux.blocks_to_swap if flux else 0,
            optimizer=opt.name,
            optimizer_args=opt.args,
            gradient_checkpointing=t.gradient_checkpointing,
        )
    fam = ModelFamily(family)
    te_lrs = config.text_encoder_lrs(len(TEXT_ENCODERS[fam]))
    counts = base_counts(fam, architecture_folder(config), astuple(lora_config(config, te_lrs)))
    size = DTYPE_BYTES[name]
    encoders = sum(counts.text_encoders)
    weights = Term(
        "weights",
        (counts.unet + encoders) * size + counts.vae * 4,
        f"UNet {_millions(counts.unet)} + text encoders {_millions(encoders)} params × "
        f"{size} B ({name}), VAE {_millions(counts.vae)} × 4 B (fp32)",
    )
    lora = lora_term(counts.lora, opt.name, config.network.rank, opt.args, precision != "no")
    resolution = config.dataset.resolution or 512
    pixels = (resolution // counts.vae_scale) ** 2
    activations = activation_term(
        family, pixels, "latent pixels", t.batch_size, t.gradient_checkpointing, precision == "no"
    )
    assumptions = (
        "text encoders and VAE stay on the GPU, as lorakit keeps them (sampling needs them)",
        f"the largest bucket holds {resolution}² pixels; text-encoder activations and VAE "
        "encoding (cache_latents = none) peak apart from the UNet step and are left out",
    )
    return VramEstimate((weights, lora, activations, cuda_term()), assumptions)


@dataclass(frozen=True)
class FluxCounts:
    """What the FLUX estimate needs from the meta-device architecture (cached: immutable)."""

    transformer: int
    double_block: int
    single_block: int
    double_blocks: int
    single_blocks: int
    lora_width: int  # Σ (in + out) over sd-scripts' LoRA modules: params per unit of rank
    patch: int  # latent → token side: the VAE's downscale × the 2×2 packing


@functools.cache
def flux_counts(variant: str) -> FluxCounts:
    model = empty_flux_model(variant)
    tr = model.transformer
    sites = flux_sites(model, text_encoder=False)
    return FluxCounts(
        transformer=_params(tr),
        double_block=_params(tr.transformer_blocks[0]),
        single_block=_params(tr.single_transformer_blocks[0]),
        double_blocks=len(tr.transformer_blocks),
        single_blocks=len(tr.single_transformer_blocks),
        lora_width=sum(site.in_features + sum(site.rows) for site in sites),
        patch=model.latent_stride,
    )


def swapped_blocks(blocks_to_swap: int, counts: FluxCounts) -> tuple[int, int]:
    """(double, single) blocks sd-scripts keeps on the CPU for `--blocks_to_swap N`."""
    return swap_split(blocks_to_swap, counts.double_blocks, counts.single_blocks)


def flux_weights(counts: FluxCounts, weights: str, blocks_to_swap: int) -> Term:
    """The transformer's resident weights: with block swap, the swapped blocks live on the
    CPU and one double block's worth stays as the staging buffer of the transfers."""
    size = DTYPE_BYTES[weights]
    how = f"transformer {_millions(counts.transformer)} params × {size} B ({weights})"
    resident = counts.transformer
    if blocks_to_swap:
        double, single = swapped_blocks(blocks_to_swap, counts)
        resident -= double * counts.double_block + single * counts.single_block
        resident += counts.double_block
        how += (
            f" less {double} double + {single} single blocks on the CPU "
            f"(blocks_to_swap {blocks_to_swap}), plus one double block of staging"
        )
    return Term("weights", resident * size, how)


def flux_estimate(
    variant: str = "dev",
    *,
    resolution: int = 1024,
    batch_size: int = 1,
    rank: int = 16,
    weights: str = "bf16",
    blocks_to_swap: int = 0,
    optimizer: str = "adamw8bit",
    optimizer_args: Mapping[str, Any] | None = None,
    gradient_checkpointing: bool = True,
) -> VramEstimate:
    """FLUX.1 `variant` LoRA training as sd-scripts runs it, compute in bf16; `weights`
    is the frozen transformer's dtype ("fp8" is sd-scripts' `--fp8_base`)."""
    if weights not in DTYPE_BYTES:
        raise LorakitError(f"FLUX weights {weights!r}: use one of {', '.join(DTYPE_BYTES)}")
    counts = flux_counts(variant)
    tokens = (resolution // counts.patch) ** 2 + MAX_SEQUENCE_LENGTH[variant]
    terms = (
        flux_weights(counts, weights, blocks_to_swap),
        lora_term(counts.lora_width * rank, optimizer, rank, optimizer_args or {}, True),
        activation_term(FLUX, tokens, "tokens", batch_size, gradient_checkpointing, False),
        cuda_term(),
    )
    assumptions = (
        "CLIP-L, T5-XXL and the VAE off the GPU during steps: their outputs cached (sd-scripts'"
        " --cache_text_encoder_outputs --cache_latents; T5-XXL alone is 9 GiB in bf16)",
        "LoRA on the double/single blocks' Linears (sd-scripts' networks.lora_flux), "
        "text encoders not trained, compute in bf16",
        f"tokens = ({resolution} px / {counts.patch})² image + "
        f"{MAX_SEQUENCE_LENGTH[variant]} T5 tokens",
    )
    return VramEstimate(terms, assumptions)


def flux_table(
    variant: str = "dev",
    *,
    resolution: int = 1024,
    batch_size: int = 1,
    rank: int = 16,
    blocks_to_swap: int = 16,
    optimizer: str = "adamw8bit",
) -> list[str]:
    """The three rows issue #20 asks for: bf16, fp8, fp8 + block swap (16: sd-scripts'
    12 GB setting)."""
    settings = {"resolution": resolution, "batch_size": batch_size, "rank": rank}
    rows = {
        "bf16": flux_estimate(variant, weights="bf16", optimizer=optimizer, **settings),
        "fp8": flux_estimate(variant, weights="fp8", optimizer=optimizer, **settings),
        f"fp8 + block swap {blocks_to_swap}": flux_estimate(
            variant, weights="fp8", blocks_to_swap=blocks_to_swap, optimizer=optimizer, **settings
        ),
    }
    head = (
        f"VRAM estimate (on a GPU), FLUX.1 {variant} {resolution} px, batch {batch_size}, "
        f"rank {rank}, {optimizer}, gradient checkpointing:"
    )
    return [head, *(f"  {label}: {est.summary()}" for label, est in rows.items())]
