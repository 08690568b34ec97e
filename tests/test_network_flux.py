"""FLUX.1 LoRA files: sd-scripts' module names and count, kohya ⇄ diffusers conversion,
and diffusers' own FluxPipeline.load_lora_weights applying every key on a tiny FLUX.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.models.flux.model import FluxModel, empty_flux_model
from lorakit.network.files import load_lora_file
from lorakit.network.flux import (
    FluxSite,
    comfyui_accepted_names,
    flux_diffusers_to_kohya,
    flux_kohya_to_diffusers,
    flux_layer,
    flux_sites,
)
from tests.helpers.flux import tiny_flux_model

RANK = 4


@pytest.fixture(scope="module")
def tiny_sites() -> list[FluxSite]:
    return flux_sites(tiny_flux_model("dev"))


def _kohya(sites: list[FluxSite], alpha: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """A trained-looking kohya FLUX.1 LoRA: random down and up for every site."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for site in sites:
        down = torch.randn(RANK, site.in_features, generator=generator)
        state[f"{site.name}.lora_down.weight"] = down
        state[f"{site.name}.lora_up.weight"] = torch.randn(
            sum(site.rows), RANK, generator=generator
        )
        state[f"{site.name}.alpha"] = torch.tensor(alpha)
    return state


def test_full_size_module_names_and_count_at_sd_scripts_default() -> None:
    sites = flux_sites(empty_flux_model("dev"))
    names = [site.name for site in sites]
    unet = [n for n in names if n.startswith("lora_unet_")]
    clip = [n for n in names if n.startswith("lora_te1_")]
    # sd-scripts: every Linear in 19 DoubleStreamBlocks (10 each) and 38 SingleStreamBlocks
    # (3 each); CLIP-L: q/k/v/out + fc1/fc2 in 12 layers.
    assert (len(unet), len(clip), len(sites)) == (19 * 10 + 38 * 3, 12 * 6, 376)
    assert len(set(names)) == len(names)
    by_name = {site.name: site for site in sites}
    assert by_name["lora_unet_double_blocks_0_img_attn_qkv"].rows == (3072, 3072, 3072)
    linear1 = by_name["lora_unet_single_blocks_37_linear1"]
    assert (linear1.rows, linear1.in_features) == ((3072, 3072, 3072, 12288), 3072)
    assert by_name["lora_unet_double_blocks_18_txt_mlp_2"].targets == (
        "transformer.transformer_blocks.18.ff_context.net.2",
    )
    assert by_name["lora_te1_text_model_encoder_layers_11_mlp_fc2"].targets == (
        "text_encoder.text_model.encoder.layers.11.mlp.fc2",
    )
    assert not any("_img_in" in n or "_txt_in" in n or "_norm_" in n for n in names)


def test_names_pass_comfyui_flux_key_rules() -> None:
    model = empty_flux_model("dev")
    accepted = comfyui_accepted_names(model)
    assert {site.name for site in flux_sites(model)} <= accepted
    assert "lora_unet_img_in" in accepted  # ComfyUI takes any weight; sd-scripts' default not


def test_kohya_to_diffusers_and_back_is_exact(tiny_sites: list[FluxSite]) -> None:
    kohya = _kohya(tiny_sites, alpha=float(RANK))
    diffusers = flux_kohya_to_diffusers(kohya, tiny_sites)
    assert "transformer.transformer_blocks.0.attn.to_q.lora_A.weight" in diffusers
    assert "transformer.single_transformer_blocks.1.proj_mlp.lora_B.weight" in diffusers
    back = flux_diffusers_to_kohya(diffusers, tiny_sites)
    assert back.keys() == kohya.keys()
    for key, value in kohya.items():
        assert torch.equal(back[key], value), key
    again = flux_kohya_to_diffusers(back, tiny_sites)
    assert again.keys() == diffusers.keys()
    assert all(torch.equal(again[key], value) for key, value in diffusers.items())


def test_alpha_is_folded_into_lora_b(tiny_sites: list[FluxSite]) -> None:
    kohya = _kohya(tiny_sites, alpha=1.0)
    back = flux_diffusers_to_kohya(flux_kohya_to_diffusers(kohya, tiny_sites), tiny_sites)
    for site in tiny_sites:
        up = f"{site.name}.lora_up.weight"
        assert float(back[f"{site.name}.alpha"]) == RANK
        torch.testing.assert_close(back[up], kohya[up] / RANK)


def test_peft_alpha_in_the_metadata_is_folded_into_lora_up(tiny_sites: list[FluxSite]) -> None:
    """diffusers' `lora_adapter_metadata` (peft config per component) gives the alpha."""
    diffusers = flux_kohya_to_diffusers(_kohya(tiny_sites, alpha=float(RANK)), tiny_sites)
    config = {"transformer.r": RANK, "transformer.lora_alpha": 2 * RANK}
    metadata = {"lora_adapter_metadata": json.dumps(config)}
    kohya = flux_diffusers_to_kohya(diffusers, tiny_sites, metadata)
    for site in tiny_sites:
        up = kohya[f"{site.name}.lora_up.weight"]
        plain = torch.cat([diffusers[f"{t}.lora_B.weight"] for t in site.targets])
        factor = 2.0 if site.name.startswith("lora_unet_") else 1.0  # CLIP-L: no alpha given
        torch.testing.assert_close(up, plain * factor)


def test_split_layers_with_their_own_lora_a_fuse_block_diagonally(
    tiny_sites: list[FluxSite],
) -> None:
    """A LoRA trained on diffusers' split q/k/v/mlp becomes sd-scripts' split_qkv layout."""
    generator = torch.Generator().manual_seed(1)
    site = next(s for s in tiny_sites if s.name.endswith("single_blocks_0_linear1"))
    state = {}
    for target, rows in zip(site.targets, site.rows, strict=True):
        state[f"{target}.lora_A.weight"] = torch.randn(RANK, site.in_features, generator=generator)
        state[f"{target}.lora_B.weight"] = torch.randn(rows, RANK, generator=generator)
    kohya = flux_diffusers_to_kohya(state, [site])
    down, up = kohya[f"{site.name}.lora_down.weight"], kohya[f"{site.name}.lora_up.weight"]
    assert down.shape[0] == RANK * len(site.targets) == float(kohya[f"{site.name}.alpha"])
    expected = torch.cat(
        [state[f"{t}.lora_B.weight"] @ state[f"{t}.lora_A.weight"] for t in site.targets]
    )
    torch.testing.assert_close(up @ down, expected)


def _adapted(model: torch.nn.Module) -> int:
    return sum(isinstance(m, BaseTunerLayer) and bool(m.lora_A) for m in model.modules())


def test_diffusers_flux_pipeline_applies_every_key(
    tiny_sites: list[FluxSite], tmp_path: Path
) -> None:
    diffusers = flux_kohya_to_diffusers(_kohya(tiny_sites, alpha=2.0), tiny_sites)
    path = tmp_path / "flux_lora.safetensors"
    save_file(diffusers, path)
    model: FluxModel = tiny_flux_model("dev")
    targets = sorted({key.rsplit(".lora_", 1)[0] for key in diffusers})
    # peft keeps each Linear as its base layer, so these objects receive the fused weight.
    layers = {target: flux_layer(model, target) for target in targets}
    before = {target: layer.weight.clone() for target, layer in layers.items()}
    pipe = model.pipeline()
    pipe.load_lora_weights(str(path))
    in_transformer = [t for t in targets if t.startswith("transformer.")]
    assert _adapted(pipe.transformer) == len(in_transformer)
    assert _adapted(pipe.text_encoder) == len(targets) - len(in_transformer)
    pipe.fuse_lora(components=["transformer", "text_encoder"])
    for target in targets:
        delta = diffusers[f"{target}.lora_B.weight"] @ diffusers[f"{target}.lora_A.weight"]
        fused = layers[target].weight
        torch.testing.assert_close(fused, before[target] + delta, atol=1e-5, rtol=1e-5, msg=target)


def test_diffusers_reads_our_kohya_names_at_full_size(tmp_path: Path) -> None:
    """diffusers' own sd-scripts FLUX reader (`FluxPipeline.lora_state_dict`, full width
    only) maps every module of a full-size kohya file as lorakit's conversion does."""
    sites = flux_sites(empty_flux_model("dev"))
    generator = torch.Generator().manual_seed(2)
    kohya = {}
    for site in sites:  # rank 1 keeps a full-size file at a few tens of MB
        kohya[f"{site.name}.lora_down.weight"] = torch.randn(
            1, site.in_features, generator=generator
        )
        kohya[f"{site.name}.lora_up.weight"] = torch.randn(sum(site.rows), 1, generator=generator)
        kohya[f"{site.name}.alpha"] = torch.tensor(0.5)
    save_file(kohya, tmp_path / "kohya.safetensors")
    theirs = FluxPipeline.lora_state_dict(str(tmp_path / "kohya.safetensors"))
    theirs = theirs[0] if isinstance(theirs, tuple) else theirs
    ours = flux_kohya_to_diffusers(kohya, sites)
    spelled = {_peft_spelling(key): value for key, value in theirs.items()}
    assert spelled.keys() == ours.keys()
    # Equal deltas B·A, compared through a random vector (the products are full-size).
    for key in (k for k in ours if k.endswith(".lora_A.weight")):
        module = key.removesuffix(".lora_A.weight")
        a, b = ours[key], ours[f"{module}.lora_B.weight"]
        probe = torch.randn(a.shape[1], generator=generator)
        expected = b @ (a @ probe)
        got = spelled[f"{module}.lora_B.weight"] @ (spelled[key] @ probe)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=module)


# diffusers hands kohya text-encoder keys on in its older attention-processor spelling.
_OLD_SPELLINGS = (
    ("to_q_lora.", "q_proj.lora."),
    ("to_k_lora.", "k_proj.lora."),
    ("to_v_lora.", "v_proj.lora."),
    ("to_out_lora.", "out_proj.lora."),
    (".lora_linear_layer.", ".lora."),
    (".lora.down.", ".lora_A."),
    (".lora.up.", ".lora_B."),
)


def _peft_spelling(key: str) -> str:
    for old, new in _OLD_SPELLINGS:
        key = key.replace(old, new)
    return key


@pytest.mark.parametrize("layout", ["kohya", "diffusers", "metadata"])
def test_flux_lora_is_read_as_flux_not_sdxl(
    layout: str,
    tiny_sites: list[FluxSite],
    tiny_sd15_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Its CLIP-L keys (`lora_te1_`) must not pass it off as an SDXL LoRA: resize keeps it
    a FLUX.1 file, and merging it into an SD checkpoint is one line naming both families."""
    kohya = _kohya(tiny_sites, alpha=1.0)
    state = flux_kohya_to_diffusers(kohya, tiny_sites) if layout == "diffusers" else kohya
    metadata = {}
    if layout == "metadata":
        state = {k: v for k, v in kohya.items() if k.startswith("lora_te1_")}
        metadata = {"ss_base_model_version": "flux1", "modelspec.architecture": "flux-1-dev/lora"}
    path, out = tmp_path / "flux.safetensors", tmp_path / "out.safetensors"
    save_file(state, path, metadata=metadata)
    assert main(["lora", "resize", str(path), str(out), "--rank", "2"]) == 0
    resized, written = load_lora_file(out)
    assert written["ss_base_model_version"] == "flux1"
    assert written["ss_network_module"] == "networks.lora_flux"
    assert all(
        key.startswith(("lora_unet_double", "lora_unet_single", "lora_te1_")) for key in resized
    )
    capsys.readouterr()
    merged = tmp_path / "merged.safetensors"
    command = ["lora", "merge", "--model", str(tiny_sd15_dir), "--lora", str(path)]
    assert main([*command, "--out", str(merged)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("model; merge LoRAs made for that family"), err
    assert "a flux1 LoRA, but" in err
    assert "\n" not in err and not merged.exists()
