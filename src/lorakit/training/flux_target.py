"""FLUX.1's side of the training seam (`lorakit.training.target`): a kohya FLUX.1 LoRA on
the transformer (and CLIP-L when its rate is above zero), trained with rectified flow.

The pieces are `lorakit.models.flux` (loader, `flow`: σ sampling, packing, conditioning,
`flux_loss`) and `lorakit.network.flux_train.FluxLoRANetwork` (kohya's names, the file
ComfyUI/Forge load); this module only binds them to a run's config. Latents come from the
shared `LatentCache` (`encode_latents` applies the FLUX VAE's shift and scale); T5 and
CLIP-L outputs are cached per caption when no encoder trains (`training.cache_text_encoder`).

T5-XXL is 9.5 GB in bf16, so with a text cache the encoders are on the device only while
they run: to encode the captions not cached yet (then back to the CPU, as sd-scripts moves
them, so the steps run without them) and to render samples (FluxPipeline encodes its
prompts itself). With "disk" and every caption already in `<output_dir>/cache/text` (a
rerun, a resume, a run with `--overwrite`), no encoder runs and, without sample prompts,
neither ever reaches the device. What is not skipped: `load_flux_model` still reads T5
into CPU memory, as the loader loads every component.

Everything a run cannot honour is refused in one line before the model loads: a BFL
transformer file without its encoder/VAE files, SD-only settings (min-SNR, noise offset,
clip skip, LyCORIS types), buckets that the 8× VAE and 2×2 packing cannot split, and
memory settings that cannot work: `flux.fp8_base` without bf16 (it computes in bf16;
torch does so on the CPU too), `flux.blocks_to_swap` without gradient checkpointing (every
block's GPU copy would be kept for backward) or above what the model's blocks allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from diffusers import FluxTransformer2DModel
from torch import nn

from lorakit.errors import LorakitError
from lorakit.families import FLUX1
from lorakit.inference.samples import SamplePrompt
from lorakit.models.flux.detect import FLUX_FILES, checked_variant
from lorakit.models.flux.flow import (
    FlowConfig,
    add_noise,
    encode_prompts,
    flux_loss,
    predict_velocity,
    velocity,
)
from lorakit.models.flux.loader import load_flux_model
from lorakit.models.flux.memory import BlockSwap, swap_split
from lorakit.models.flux.model import bundled_flux_dir
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.flux import is_flux_lora
from lorakit.network.flux_files import flow_metadata, flux_kohya_state
from lorakit.network.flux_train import FluxLoRANetwork
from lorakit.training import plan
from lorakit.training.caching import TextCache, file_identity
from lorakit.training.config import FluxSection, TrainConfig
from lorakit.training.data import TrainItem
from lorakit.training.runtime import (
    effective_precision,
    text_cache,
    text_cache_mode,
    weight_dtype,
)
from lorakit.training.step import Batch
from lorakit.training.vram import flux_table

# VAE 8× down, then 2×2 patches: image sides must be multiples of 16 px.
PIXEL_MULTIPLE = 16


def flow_config(flux: FluxSection) -> FlowConfig:
    """The flow settings of a run's `[flux]` section."""
    return FlowConfig(
        sampling=flux.timestep_sampling,
        sigmoid_scale=flux.sigmoid_scale,
        flow_shift=flux.flow_shift,
        guidance=flux.guidance,
    )


def _check_files(config: TrainConfig) -> str:
    """The variant, after every file the load will need was found (headers only)."""
    model = config.model
    return checked_variant(
        Path(model.path),
        {key: getattr(model, key) for key in FLUX_FILES},
        named=lambda key, value: f"model.{key} = {value}",
        fix=lambda key: f"set model.{key} to its file",
    )


def _check_settings(config: TrainConfig, variant: str) -> None:
    """SD-only settings and what FLUX.1's LoRA does not have yet, one line each."""
    t, net, ds = config.training, config.network, config.dataset
    sd_only = {
        "training.min_snr_gamma": t.min_snr_gamma is not None,
        "training.noise_offset": bool(t.noise_offset),
        "training.prediction": t.prediction != "auto",
        "training.clip_skip": t.clip_skip != 1,
    }
    for key, set_ in sd_only.items():
        if set_:
            raise LorakitError(
                f"{config.model.path}: {key} is an SD (noise-prediction) setting; FLUX.1 "
                "trains rectified flow: remove it"
            )
    if effective_precision(config)[0] == "fp16" or config.model.dtype == "fp16":
        raise LorakitError(
            f"{config.model.path}: FLUX.1 overflows in fp16 (sd-scripts trains it in bf16); "
            'set training.mixed_precision = "bf16" and model.dtype = "auto"'
        )
    if net.type != "lora" or net.conv_rank or net.dropout:
        raise LorakitError(
            f"{config.model.path}: FLUX.1 trains a plain LoRA so far; set network.type = "
            '"lora" without conv_rank or dropout'
        )
    if isinstance(config.optimizer.text_encoder_lr, list):
        raise LorakitError(
            f"{config.model.path}: FLUX.1 trains one text encoder (CLIP-L); give "
            "optimizer.text_encoder_lr as one rate"
        )
    for key, value in (
        ("dataset.resolution", ds.resolution),
        ("dataset.bucket_step", ds.bucket_step),
    ):
        if value is not None and value % PIXEL_MULTIPLE:
            raise LorakitError(
                f"{config.model.path}: {key} = {value} is not a multiple of {PIXEL_MULTIPLE} "
                "(FLUX.1's VAE and 2×2 latent patches); use a multiple of 16"
            )
    flux = config.flux
    if variant == "schnell" and flux is not None and "guidance" in flux.model_fields_set:
        raise LorakitError(
            f"{config.model.path}: a FLUX.1 schnell model has no guidance input; remove "
            "flux.guidance (a dev setting)"
        )
    if flux is not None:
        _check_memory(config, flux, variant)


def _check_memory(config: TrainConfig, flux: FluxSection, variant: str) -> None:
    """fp8 base weights compute in bf16; block swap needs checkpointing and spare blocks."""
    if flux.fp8_base and effective_precision(config)[0] != "bf16":
        raise LorakitError(
            f"{config.model.path}: flux.fp8_base stores weights in fp8 and computes in bf16; "
            'set training.mixed_precision = "bf16"'
        )
    if not flux.blocks_to_swap:
        return
    if not config.training.gradient_checkpointing:
        raise LorakitError(
            f"{config.model.path}: flux.blocks_to_swap saves memory only with gradient "
            "checkpointing (else every block's copy is kept for backward); set "
            "training.gradient_checkpointing = true"
        )
    swap_split(flux.blocks_to_swap, *_block_counts(config, variant))


def _block_counts(config: TrainConfig, variant: str) -> tuple[int, int]:
    """(double, single) blocks of the model the run loads, from its transformer config."""
    path = Path(config.model.path).expanduser()
    folder = Path(config.model.config).expanduser() if config.model.config else None
    if folder is None:
        folder = path if path.is_dir() else bundled_flux_dir(variant)
    transformer = FluxTransformer2DModel.load_config(folder / "transformer")
    return int(transformer["num_layers"]), int(transformer["num_single_layers"])


def checked_flux(config: TrainConfig) -> str:
    """The variant ("dev"/"schnell") of a FLUX.1 base, after every check above."""
    if config.model.family not in (None, FLUX1.value):
        raise LorakitError(
            f"{config.model.path}: is family flux1, but model.family = "
            f"{config.model.family!r}; drop model.family or give a {config.model.family} model"
        )
    variant = _check_files(config)
    _check_settings(config, variant)
    return variant


def resolve_flux(config: TrainConfig) -> TrainConfig:
    """`target.resolve` for a FLUX.1 base: every check, then family and resolution."""
    checked_flux(config)
    return plan.with_family(config, FLUX1.value)


def flux_dry_run(config: TrainConfig) -> list[str]:
    """The plan and GPU memory estimate of a FLUX.1 run (with its `flux.fp8_base` and
    `flux.blocks_to_swap`), and the bf16 / fp8 / fp8 + block swap table for its size."""
    variant = checked_flux(config)
    lines = plan.dry_run_lines(config, FLUX1.value, f"from the file: FLUX.1 {variant}", variant)
    t, resolved = config.training, plan.with_family(config, FLUX1.value)
    table = flux_table(
        variant,
        resolution=resolved.dataset.resolution or 1024,
        batch_size=t.batch_size,
        rank=config.network.rank,
    )
    return lines + table


class FlowObjective:
    """Rectified flow as the fixed-timestep `Validator` reads it: step t of 1000 is σ = t/1000."""

    num_timesteps = 1000

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        return add_noise(latents, noise, t.float() / self.num_timesteps)

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        return velocity(latents, noise)


class FluxTarget:
    """A FLUX.1 model, its kohya LoRA and the flow loss, for `lorakit.training.loop`."""

    family = FLUX1
    prediction = None  # a flow velocity: no `ss_prediction_type`, as sd-scripts writes

    def __init__(self, config: TrainConfig, accelerator: Accelerator) -> None:
        self.config, self.device = config, accelerator.device
        m = config.model
        self.dtype = weight_dtype(config, accelerator.mixed_precision)
        self.flux = config.flux or FluxSection()  # the defaults when the section is absent
        # fp8_base: the block Linears are read straight into float8, tensor by tensor, so
        # the CPU never holds the bf16 transformer (23.8 GB for FLUX.1 dev) beside them.
        self.model = load_flux_model(
            m.path,
            dtype=self.dtype,
            clip_l=m.clip_l,
            t5xxl=m.t5xxl,
            ae=m.ae,
            config=m.config,
            fp8_base=self.flux.fp8_base,
        )
        # With block swap the transformer goes to the device in `inject` (`BlockSwap`),
        # without its swapped blocks' weights.
        keep = () if self.flux.blocks_to_swap else (self.model.transformer,)
        for module in (*keep, self.model.vae):
            module.to(self.device)
        self.model.vae.float()  # as for SD: the VAE encodes in fp32
        self.encoders_on_device = False
        if text_cache_mode(config) == "none":  # they run every step (CLIP-L may train)
            self._place_encoders(True)
        self.denoiser = self.model.transformer
        if config.training.gradient_checkpointing:
            self.denoiser.enable_gradient_checkpointing()
        self.te_lr = float(config.text_encoder_lrs(1)[0])
        self.flow = flow_config(self.flux)
        self.objective = FlowObjective()
        self.text_cache: TextCache | None = None
        self.swap: BlockSwap | None = None

    def _place_encoders(self, on_device: bool) -> None:
        """CLIP-L and T5-XXL onto the device before they run, or back to the CPU."""
        if self.encoders_on_device != on_device:
            for module in self.model.text_encoders:
                module.to(self.device if on_device else "cpu")
            self.encoders_on_device = on_device

    def inject(self) -> None:
        """sd-scripts' default FLUX.1 modules (CLIP-L's too when it trains), continuing
        from `network.weights` when set."""
        net = self.config.network
        self.network = FluxLoRANetwork.inject(
            self.model, net.rank, net.alpha, text_encoder=self.te_lr > 0
        )
        if net.weights:
            source = f"network.weights {net.weights}"
            state, metadata = load_lora_file(Path(net.weights))
            if not is_flux_lora(state, metadata):
                raise LorakitError(f"{source}: not a FLUX.1 LoRA; continue from a FLUX.1 file")
            kohya = flux_kohya_state(state, metadata, source)  # a diffusers file too
            self.network.load_kohya_state_dict(kohya, strict=False, source=source)
        if self.flux.blocks_to_swap:  # after the LoRA: its parameters stay on the device
            self.swap = BlockSwap(self.denoiser, self.flux.blocks_to_swap, self.device)

    def param_groups(self) -> list[dict[str, Any]]:
        return self.network.param_groups(self.config.optimizer.unet_lr, self.te_lr)

    def trained_modules(self) -> list[nn.Module]:
        clip = [self.model.text_encoders[0]] if self.te_lr > 0 else []
        return [self.denoiser, *clip]

    def prepare(self) -> None:
        """A per-caption cache of (T5 sequence, CLIP pooled) when captions are fixed and
        CLIP-L does not train; on disk, keyed by the caption, both encoders' files, their
        dtype and the T5 length of the variant (512 dev, 256 schnell)."""
        m = self.config.model
        clip = file_identity(Path(m.clip_l or m.path), ("text_encoder",))
        t5 = file_identity(Path(m.t5xxl or m.path), ("text_encoder_2",))
        identity = f"{clip}|{t5}|{self.dtype}|t5 length {self.model.max_sequence_length}"
        self.text_cache = text_cache(self.config, self._encode, identity, self.device)

    def _encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        self._place_encoders(True)
        return encode_prompts(self.model, captions, self.device)

    def fill_text(self, captions: Sequence[str]) -> None:
        """Every caption into the cache, then the encoders off the device for the steps."""
        if self.text_cache is not None:
            self.text_cache.fill(captions)
            self._place_encoders(False)

    def _conditioning(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.text_cache is not None:
            sequence, pooled = self.text_cache.get(captions)
            assert pooled is not None
            return sequence, pooled
        with nullcontext() if self.te_lr > 0 else torch.no_grad():
            return self._encode(list(captions))

    def loss(self, batch: Batch) -> torch.Tensor:
        sequence, pooled = self._conditioning(batch.captions)
        return flux_loss(
            self.denoiser, batch.latents, sequence, pooled, self.flow, sample_weights=batch.weights
        )

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, items: list[TrainItem]):
        sequence, pooled = self._conditioning([it.caption for it in items])
        sigmas = t.float() / self.objective.num_timesteps
        return predict_velocity(self.denoiser, noisy, sigmas, sequence, pooled, self.flow.guidance)

    def lora_metadata(self, config: LoRAConfig, **training: object) -> dict[str, str]:
        """sd-scripts' FLUX.1 metadata (`ss_base_model_version = flux1`, modelspec
        `flux-1-dev/lora` or schnell, `ss_fp8_base` as sd-scripts writes it; it has no
        key for block swap; the flow settings as `flow_metadata`), dims read from the
        network itself."""
        return self.network.metadata(
            fp8_base=self.flux.fp8_base, **flow_metadata(self.flow), **training
        )

    def render_samples(
        self,
        prompts: Sequence[SamplePrompt],
        out_dir: Path,
        *,
        step: int,
        epoch: int,
        name: str,
        lora: Path | None,
    ) -> list[Path]:
        """The prompts through the loaded model and the live network (`lorakit generate`'s
        FLUX.1 path), the separate encoder/VAE files named in the infotext as it names them."""
        from lorakit.inference.flux_generate import module_files
        from lorakit.inference.flux_samples import generate_flux_samples

        self._place_encoders(True)  # the pipeline encodes the prompts itself
        try:
            return generate_flux_samples(
                self.model,
                prompts,
                out_dir,
                step=step,
                epoch=epoch,
                device=self.device,
                dtype=self.dtype,
                name=name,
                modules=module_files(self.config.model),
                lora=lora,
            )
        finally:
            self._place_encoders(self.text_cache is None)
