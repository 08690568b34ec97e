"""Training a kohya FLUX.1 LoRA on the tiny FLUX.1: the flow-matching math against
diffusers' FluxPipeline, a short AdamW run that lowers the loss, and the saved file read
back by diffusers' own `load_lora_weights` giving the outputs that were trained."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from lorakit.errors import LorakitError
from lorakit.models.flux.flow import (
    FlowConfig,
    add_noise,
    encode_prompts,
    flux_loss,
    image_ids,
    pack_latents,
    predict_velocity,
    sample_sigmas,
    unpack_latents,
    velocity,
)
from lorakit.models.flux.model import FluxModel
from lorakit.network.files import load_lora_file
from lorakit.network.flux import flux_layer, flux_sites
from lorakit.network.flux_files import convert_flux_file
from lorakit.network.flux_train import FluxLoRALinear, FluxLoRANetwork
from lorakit.training.caching import encode_latents
from tests.helpers.flux import tiny_flux_model, tiny_flux_pipeline

CAPTIONS = ["a red square on grey", "a blue circle on white"]
RANK, ALPHA = 4, 2.0
STEPS, DRAWS, LR = 40, 4, 3e-2


def _pixels() -> torch.Tensor:
    """Two 64×64 images with structure (ramps and a product), in [-1, 1]."""
    ramp = torch.linspace(-1, 1, 64)
    across, down = ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64)
    return torch.stack(
        [torch.stack([across, down, -across]), torch.stack([-down, across * down, down])]
    )


@dataclass
class Trained:
    model: FluxModel
    network: FluxLoRANetwork
    latents: torch.Tensor
    prompt_embeds: torch.Tensor
    pooled: torch.Tensor
    losses: list[float]


def _fixed_input(trained: Trained) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy latents and σ that no training step used."""
    generator = torch.Generator().manual_seed(1234)
    noise = torch.randn(trained.latents.shape, generator=generator)
    sigmas = torch.tensor([0.3, 0.8])
    return add_noise(trained.latents, noise, sigmas), sigmas


def _output(transformer: nn.Module, trained: Trained) -> torch.Tensor:
    noisy, sigmas = _fixed_input(trained)
    with torch.no_grad():
        return predict_velocity(transformer, noisy, sigmas, trained.prompt_embeds, trained.pooled)


@pytest.fixture(scope="module")
def trained() -> Trained:
    """The tiny dev model with a LoRA trained for STEPS AdamW steps; step i draws its
    noise and σ from seed i % DRAWS, so the first and last DRAWS steps see the same draws."""
    model = tiny_flux_model("dev")
    latents = encode_latents(model, _pixels())  # type: ignore[arg-type]
    with torch.no_grad():
        prompt_embeds, pooled = encode_prompts(model, CAPTIONS)
    network = FluxLoRANetwork.inject(model, RANK, ALPHA)
    optimizer = torch.optim.AdamW(network.parameters(), lr=LR)
    losses = []
    for step in range(STEPS):
        generator = torch.Generator().manual_seed(step % DRAWS)
        loss = flux_loss(model.transformer, latents, prompt_embeds, pooled, generator=generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return Trained(model, network, latents, prompt_embeds, pooled, losses)


def test_training_lowers_the_loss(trained: Trained) -> None:
    # Same draws first and last, so only the LoRA can make the difference (an untrained
    # one gives a ratio of exactly 1): measured 1.451 → 1.146 (0.79). The tiny model's
    # proj_out (16 → 64 per token, not adapted) caps how much of the velocity any LoRA
    # can fit, hence not far lower.
    first = sum(trained.losses[:DRAWS]) / DRAWS
    last = sum(trained.losses[-DRAWS:]) / DRAWS
    assert last < 0.9 * first, trained.losses
    lora = {id(p) for p in trained.network.parameters()}
    assert all(p.grad is not None for p in trained.network.parameters())
    base = [p for p in trained.model.transformer.parameters() if id(p) not in lora]
    assert base and not any(p.requires_grad for p in base)


def test_saved_file_loads_in_diffusers_with_the_trained_outputs(
    trained: Trained, tmp_path: Path
) -> None:
    """kohya file → lorakit's kohya→diffusers conversion → FluxPipeline.load_lora_weights
    on a fresh copy of the base: the transformer gives what the injected network gives."""
    kohya = trained.network.save(tmp_path / "flux.safetensors", dtype="fp32")
    state, metadata = load_lora_file(kohya)
    assert metadata["ss_base_model_version"] == "flux1"
    assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
    assert metadata["ss_network_module"] == "networks.lora_flux"
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == (str(RANK), "2.0")
    diffusers_file = convert_flux_file(
        state, metadata, str(kohya), tmp_path / "diffusers.safetensors", "diffusers"
    )
    pipe: FluxPipeline = tiny_flux_pipeline("dev")  # same seed: the same base weights
    base = _output(pipe.transformer, trained)
    pipe.load_lora_weights(str(diffusers_file))
    adapted = sum(isinstance(m, BaseTunerLayer) for m in pipe.transformer.modules())
    assert adapted == sum(len(site.targets) for site in trained.network.sites)
    ours = _output(trained.model.transformer, trained)
    theirs = _output(pipe.transformer, trained)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    assert (ours - base).abs().max() > 1e-2  # the LoRA matters on this input


def test_state_dict_round_trip_and_remove(trained: Trained) -> None:
    state = trained.network.kohya_state_dict()
    expected = _output(trained.model.transformer, trained)
    fresh = tiny_flux_model("dev")
    base = _output(fresh.transformer, trained)
    loaded = FluxLoRANetwork.from_state_dict(fresh, state)
    assert torch.equal(_output(fresh.transformer, trained), expected)
    loaded.multiplier = 0.0
    torch.testing.assert_close(_output(fresh.transformer, trained), base, atol=0, rtol=0)
    loaded.remove()
    assert torch.equal(_output(fresh.transformer, trained), base)
    assert not any(isinstance(m, FluxLoRALinear) for m in fresh.transformer.modules())
    again = FluxLoRANetwork.inject(fresh, RANK, 1.0)
    again.load_kohya_state_dict(state)  # alpha comes from the file
    assert torch.equal(_output(fresh.transformer, trained), expected)
    again.remove()
    with pytest.raises(LorakitError, match="missing"):
        FluxLoRANetwork.inject(fresh, RANK, ALPHA).load_kohya_state_dict(
            {k: v for k, v in state.items() if "single_blocks_1_" not in k}
        )


def test_fresh_network_is_kohya_shaped_and_a_no_op() -> None:
    model = tiny_flux_model("dev")
    sites = flux_sites(model, text_encoder=False)
    target = "transformer.single_transformer_blocks.0.proj_mlp"
    linear = flux_layer(model, target)
    network = FluxLoRANetwork.inject(model, RANK, ALPHA)
    state = network.kohya_state_dict()
    assert len(state) == 3 * len(sites)
    for site in sites:
        assert state[f"{site.name}.lora_down.weight"].shape == (RANK, site.in_features)
        assert state[f"{site.name}.lora_up.weight"].shape == (sum(site.rows), RANK)
        assert not state[f"{site.name}.lora_up.weight"].any()
        alpha = state[f"{site.name}.alpha"]
        assert alpha.dim() == 0 and float(alpha) == ALPHA
    wrapper = model.transformer.get_submodule(target.removeprefix("transformer."))
    assert isinstance(wrapper, FluxLoRALinear) and wrapper.base is linear
    # proj_mlp is the last of linear1's four parts (q, k, v, mlp): the last rows of lora_up.
    assert (wrapper.start, wrapper.stop) == (3 * 16, 3 * 16 + 64)
    x = torch.randn(3, linear.in_features)
    assert torch.equal(wrapper(x), linear(x))
    with pytest.raises(LorakitError, match=r"already carries a FLUX\.1 LoRA"):
        FluxLoRANetwork.inject(model, RANK, ALPHA)
    network.remove()
    everything = {site.name for site in flux_sites(model)}
    with_clip = FluxLoRANetwork.inject(model, RANK, ALPHA, text_encoder=True)
    names = set(with_clip.modules_by_name)
    assert names == everything
    assert any(name.startswith("lora_te1_") for name in names)
    groups = with_clip.param_groups(1e-4, text_encoder_lr=5e-5)
    assert [(g["name"], g["lr"]) for g in groups] == [("transformer", 1e-4), ("text_encoder", 5e-5)]
    assert with_clip.metadata()["ss_network_train_unet_only"] == "False"
    assert with_clip.param_groups(1e-4, text_encoder_lr=0.0)[0]["name"] == "transformer"
    state = with_clip.kohya_state_dict()
    with_clip.remove()
    assert set(FluxLoRANetwork.from_state_dict(model, state).modules_by_name) == everything


def test_pack_unpack_and_ids_match_diffusers() -> None:
    latents = torch.randn(2, 16, 6, 10)
    packed = pack_latents(latents)
    assert torch.equal(packed, FluxPipeline._pack_latents(latents, 2, 16, 6, 10))
    assert torch.equal(unpack_latents(packed, 6, 10), latents)
    assert torch.equal(FluxPipeline._unpack_latents(packed, 48, 80, 8), latents)
    ids = FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32)
    assert torch.equal(image_ids(6, 10), ids)
    with pytest.raises(LorakitError, match="odd"):
        pack_latents(torch.randn(1, 16, 5, 4))


def test_prediction_matches_the_pipeline_step() -> None:
    """One FluxPipeline denoising step, recorded at the transformer: σ is passed as the
    timestep (not ×1000), and predict_velocity on the same input gives the same output."""
    pipe = tiny_flux_pipeline("dev")
    seen: dict[str, torch.Tensor] = {}

    def record(_module: nn.Module, _args: tuple, kwargs: dict, out: tuple) -> None:
        seen.update({k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)})
        seen["out"] = out[0]

    handle = pipe.transformer.register_forward_hook(record, with_kwargs=True)
    pipe(
        CAPTIONS[0],
        height=64,
        width=64,
        num_inference_steps=1,
        guidance_scale=3.5,
        output_type="latent",
        generator=torch.Generator().manual_seed(0),
    )
    handle.remove()
    sigma = pipe.scheduler.sigmas[0]
    torch.testing.assert_close(seen["timestep"], sigma.expand(1))
    noisy = unpack_latents(seen["hidden_states"], 8, 8)
    with torch.no_grad():
        ours = predict_velocity(
            pipe.transformer,
            noisy,
            seen["timestep"],
            seen["encoder_hidden_states"],
            seen["pooled_projections"],
            3.5,
        )
    assert torch.equal(pack_latents(ours), seen["out"])


def test_timestep_samplers() -> None:
    medians = {}
    for sampling in ("uniform", "sigmoid", "shift"):
        generator = torch.Generator().manual_seed(0)
        sigmas = sample_sigmas(20_000, FlowConfig(sampling=sampling), generator=generator)
        assert sigmas.shape == (20_000,) and sigmas.dtype == torch.float32
        assert float(sigmas.min()) > 0 and float(sigmas.max()) < 1
        medians[sampling] = float(sigmas.median())
    # The sigmoid of a standard normal has median 0.5; shift s maps it to s/(s+1) = 0.75.
    assert abs(medians["uniform"] - 0.5) < 0.02
    assert abs(medians["sigmoid"] - 0.5) < 0.02
    assert abs(medians["shift"] - 0.75) < 0.02
    wide = sample_sigmas(20_000, FlowConfig(sampling="sigmoid", sigmoid_scale=3.0))
    assert float(wide.std()) > float(sample_sigmas(20_000, FlowConfig(sampling="sigmoid")).std())
    with pytest.raises(LorakitError, match="unknown"):
        FlowConfig(sampling="sigma")


def test_noising_target_and_guidance() -> None:
    latents, noise = torch.randn(2, 16, 4, 4), torch.randn(2, 16, 4, 4)
    assert torch.equal(add_noise(latents, noise, torch.tensor([0.0, 1.0]))[0], latents[0])
    assert torch.equal(add_noise(latents, noise, torch.tensor([0.0, 1.0]))[1], noise[1])
    step = add_noise(latents, noise, torch.full((2,), 0.6)) - add_noise(
        latents, noise, torch.full((2,), 0.5)
    )
    torch.testing.assert_close(step / 0.1, velocity(latents, noise), atol=1e-5, rtol=1e-5)
    model = tiny_flux_model("dev")
    with torch.no_grad():
        embeds, pooled = encode_prompts(model, CAPTIONS[:1])
        noisy, sigma = torch.randn(1, 16, 4, 4), torch.tensor([0.5])
        one = predict_velocity(model.transformer, noisy, sigma, embeds, pooled, 1.0)
        other = predict_velocity(model.transformer, noisy, sigma, embeds, pooled, 3.5)
    assert not torch.allclose(one, other)  # dev's guidance input reaches the model


@pytest.mark.parametrize("variant", ["dev", "schnell"])
def test_prompt_encoding_matches_the_pipeline(variant: str) -> None:
    model = tiny_flux_model(variant)
    with torch.no_grad():
        embeds, pooled = encode_prompts(model, CAPTIONS)
        theirs, their_pooled, _ = model.pipeline().encode_prompt(
            CAPTIONS, prompt_2=None, max_sequence_length=model.max_sequence_length
        )
    assert embeds.shape[:2] == (2, {"dev": 512, "schnell": 256}[variant])
    assert torch.equal(embeds, theirs) and torch.equal(pooled, their_pooled)
    if variant == "schnell":  # no guidance embedding: the loss runs without one
        latents = torch.randn(2, 16, 4, 4)
        loss = flux_loss(
            model.transformer, latents, embeds, pooled, generator=torch.Generator().manual_seed(0)
        )
        assert loss.dim() == 0 and torch.isfinite(loss)


def test_latents_carry_the_vae_shift_and_scale() -> None:
    model = tiny_flux_model("dev")
    pixels = _pixels()
    with torch.no_grad():
        mean = model.vae.encode(pixels).latent_dist.mean
    config = model.vae.config
    expected = (mean - config.shift_factor) * config.scaling_factor
    torch.testing.assert_close(encode_latents(model, pixels), expected)  # type: ignore[arg-type]
    assert config.shift_factor == pytest.approx(0.1159)
