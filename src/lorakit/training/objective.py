"""The diffusion training objective: noise, targets and per-sample loss weights.

Everything here is tensor math on the device with no host reads, so the step can later be
captured in a CUDA graph. The noise schedule comes from the checkpoint's own scheduler
config (betas), so SD1.5 and SDXL use exactly the schedule they were trained with.
"""

from __future__ import annotations

import torch
from diffusers import DDPMScheduler


class Objective:
    """Forward diffusion and the loss for epsilon- or v-prediction, with min-SNR-γ."""

    def __init__(
        self,
        scheduler_config: dict,
        prediction: str,
        device: torch.device,
        noise_offset: float = 0.0,
        min_snr_gamma: float | None = None,
    ):
        if prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"unknown prediction type {prediction!r}")
        schedule = DDPMScheduler.from_config(scheduler_config)
        acp = schedule.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.num_timesteps = len(acp)
        self.sqrt_acp = acp.sqrt()
        self.sqrt_one_minus_acp = (1.0 - acp).sqrt()
        self.snr = acp / (1.0 - acp)
        self.prediction = prediction
        self.noise_offset = noise_offset
        self.min_snr_gamma = min_snr_gamma
        self.snr_weight_table = self._snr_weight_table()

    def sample_noise(
        self, latents: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Gaussian noise; `noise_offset` adds a per-channel constant so the model learns
        to shift overall brightness (very dark / very bright images)."""
        noise = torch.randn(latents.shape, generator=generator, device=latents.device)
        if self.noise_offset:
            shape = (latents.shape[0], latents.shape[1], 1, 1)
            offset = torch.randn(shape, generator=generator, device=latents.device)
            noise = noise + self.noise_offset * offset
        return noise

    def sample_timesteps(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.randint(0, self.num_timesteps, (batch,), device=device)

    def _coef(self, table: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return table[t].view(-1, 1, 1, 1)

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
        return (
            self._coef(self.sqrt_acp, t) * latents + self._coef(self.sqrt_one_minus_acp, t) * noise
        )

    def target(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction == "epsilon":
            return noise
        return (
            self._coef(self.sqrt_acp, t) * noise - self._coef(self.sqrt_one_minus_acp, t) * latents
        )

    def _snr_weight_table(self) -> torch.Tensor:
        """Min-SNR-γ (Hang et al. 2023) per timestep, computed once: down-weight easy
        low-noise steps; 1 when off."""
        if self.min_snr_gamma is None:
            return torch.ones_like(self.snr)
        clipped = self.snr.clamp(max=self.min_snr_gamma)
        return (
            clipped / (self.snr + 1.0) if self.prediction == "v_prediction" else clipped / self.snr
        )

    def snr_weights(self, t: torch.Tensor) -> torch.Tensor:
        """The min-SNR-γ loss weight of each timestep in `t`."""
        return self.snr_weight_table[t]

    def loss(
        self,
        prediction: torch.Tensor,
        target: torch.Tensor,
        t: torch.Tensor,
        sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Mean over the batch of per-sample MSE × min-SNR weight × prior-loss weight."""
        per_sample = (prediction.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
        per_sample = per_sample * self.snr_weights(t)
        if sample_weights is not None:
            per_sample = per_sample * sample_weights.to(per_sample.device)
        return per_sample.mean()
