"""The one place a model family meets the training loop: a `TrainTarget` per family.

The loop (`lorakit.training.loop`) runs epochs, accumulation, saves, validation and exact
resume the same way for every family. What differs (loading the base, the network and
its file format, text conditioning, the objective and the validation yardstick's
prediction) lives behind this seam: `SDTarget` here, which wraps the SD path as it was
(Stepper + Objective, the same calls in the same order, so SD runs are unchanged), and
`FluxTarget` (`lorakit.training.flux_target`). `resolve` and `load_target` pick one from
the base model's family; nothing else in the loop asks which family it trains.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from torch import nn

from lorakit.errors import LorakitError
from lorakit.families import FLUX1, ModelFamily
from lorakit.inference.samples import SamplePrompt, generate_samples
from lorakit.models import detect_family
from lorakit.models.flux.detect import FLUX_FILES
from lorakit.network.config import LoRAConfig
from lorakit.network.metadata import lora_metadata
from lorakit.training import plan
from lorakit.training.config import TrainConfig
from lorakit.training.data import TrainItem
from lorakit.training.flux_target import FluxTarget, flux_dry_run, resolve_flux
from lorakit.training.objective import Objective
from lorakit.training.runtime import (
    inject,
    prediction_type,
    prepare_model,
    sd_text_cache,
    trained_text_encoders,
)
from lorakit.training.step import Batch, Stepper


class ValidationObjective(Protocol):
    """What `Validator` needs of an objective: fixed timesteps, noising and the target."""

    num_timesteps: int

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor): ...

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor): ...


class TrainTarget(Protocol):
    """A family's side of training; built (model loaded) before the seed is set, then
    `inject`, then `prepare` (objective, text cache), as the loop calls them."""

    family: ModelFamily
    model: Any  # BaseModel or FluxModel: `.vae` and `.source` feed the latent cache
    network: Any  # kohya_state_dict / load_kohya_state_dict (state) and save (outputs)
    denoiser: nn.Module  # the UNet or the transformer (train/eval, thread choice)
    objective: ValidationObjective
    prediction: str | None  # `ss_prediction_type` (None: not written)

    def inject(self) -> None: ...

    def param_groups(self) -> list[dict[str, Any]]: ...

    def trained_modules(self) -> list[nn.Module]: ...

    def prepare(self) -> None: ...

    def fill_text(self, captions: Sequence[str]) -> None: ...

    def loss(self, batch: Batch) -> torch.Tensor: ...

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, items: list[TrainItem]): ...

    def lora_metadata(self, config: LoRAConfig, **training: object) -> dict[str, str]: ...

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
        """The sample PNGs of `prompts` with the LoRA being trained (`lora`: the file just
        written with these weights, if any), training state left as found."""
        ...


class SDTarget:
    """SD1.5/SDXL (and the tiny model): the UNet path, exactly as the loop ran it."""

    def __init__(self, config: TrainConfig, accelerator: Accelerator) -> None:
        self.config, self.device = config, accelerator.device
        self.model = prepare_model(config, accelerator)
        self.family = self.model.family
        self.denoiser = self.model.unet
        self.te_lrs = config.text_encoder_lrs(len(self.model.text_encoders))
        self.trained_tes = trained_text_encoders(self.model, self.te_lrs)
        self.prediction: str | None = prediction_type(config, self.model)

    def inject(self) -> None:
        self.network = inject(self.config, self.model, self.te_lrs)

    def param_groups(self) -> list[dict[str, Any]]:
        return self.network.param_groups(self.config.optimizer.unet_lr, self.te_lrs)

    def trained_modules(self) -> list[nn.Module]:
        return [self.model.unet, *self.trained_tes]

    def prepare(self) -> None:
        t = self.config.training
        assert self.prediction is not None
        self.objective = Objective(
            self.model.scheduler_config,
            self.prediction,
            self.device,
            t.noise_offset,
            t.min_snr_gamma,
        )
        train_te = bool(self.trained_tes)
        cache = sd_text_cache(self.config, self.model, self.device)
        self.stepper = Stepper(
            self.model, self.objective, cache, train_te, t.clip_skip, self.device
        )

    def fill_text(self, captions: Sequence[str]) -> None:
        if self.stepper.text_cache is not None:
            self.stepper.text_cache.fill(captions)

    def loss(self, batch: Batch) -> torch.Tensor:
        return self.stepper.loss(batch)

    def predict(self, noisy: torch.Tensor, t: torch.Tensor, items: list[TrainItem]):
        return self.stepper.predict(noisy, t, items, [it.caption for it in items])

    def lora_metadata(self, config: LoRAConfig, **training: object) -> dict[str, str]:
        return lora_metadata(self.family, config, **training)

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
        """sd-scripts-style samples; their infotext stays as it always was (no `lora`)."""
        return generate_samples(
            self.model, prompts, out_dir, step=step, epoch=epoch, device=self.device, name=name
        )


def _family(config: TrainConfig) -> ModelFamily:
    """The base model's family as `plan.checked_family` tells it (a missing path with
    `model.family` set is trusted; every other case reads the file's header)."""
    model = config.model
    if model.family and not Path(model.path).exists():
        return ModelFamily(model.family)
    return detect_family(model.path)


def _refuse_flux_settings(config: TrainConfig, family: ModelFamily) -> None:
    """FLUX.1 settings on an SD model would be ignored silently: one line instead."""
    model = config.model
    keys = [f"model.{key}" for key in FLUX_FILES if getattr(model, key)]
    keys += ["[flux]"] if config.flux is not None else []
    if keys:
        raise LorakitError(
            f"{model.path}: a {family.value} model, but FLUX.1 settings are set "
            f"({', '.join(keys)}); remove them or set model.path to a FLUX.1 model"
        )


def resolve(config: TrainConfig) -> TrainConfig:
    """The config with what follows from the base model filled in (family, resolution),
    checked for the family it is: the one entry the loop calls."""
    family = _family(config)
    if family is FLUX1:
        return resolve_flux(config)
    _refuse_flux_settings(config, family)
    return plan.resolve(config)


def dry_run(config: TrainConfig) -> list[str]:
    """The settings, plan and GPU memory estimate of the family's run, nothing loaded."""
    family = _family(config)
    if family is FLUX1:
        return flux_dry_run(config)
    _refuse_flux_settings(config, family)
    return plan.dry_run(config)


def load_target(config: TrainConfig, accelerator: Accelerator) -> TrainTarget:
    """The target for a resolved `config` (its model loaded onto the device)."""
    if config.model.family == FLUX1.value:
        return FluxTarget(config, accelerator)
    return SDTarget(config, accelerator)
