"""`lorakit lora convert|inspect|verify` on FLUX.1 LoRA files written from a tiny FLUX.1,
and the FLUX.1 metadata the trainer will write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import FluxPipeline
from safetensors import safe_open
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.inference.flux_generate import applied_flux_loras, load_flux_for_inference
from lorakit.inference.prompt import LoraRef
from lorakit.models.flux.flow import FlowConfig, encode_prompts, predict_velocity
from lorakit.models.flux.model import FluxModel
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.flux import FluxSite, flux_kohya_to_diffusers, flux_sites
from lorakit.network.flux_files import flow_metadata, flux_lora_metadata, full_size_sites
from tests.helpers.flux import (
    tiny_flux_model,
    tiny_flux_pipeline,
    write_all_in_one,
    write_flux_files,
)

RANK = 4


@pytest.fixture(scope="module")
def tiny_sites() -> list[FluxSite]:
    return flux_sites(tiny_flux_model("dev"))


@pytest.fixture(scope="module")
def flux_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("flux") / "tiny-flux1-dev"
    tiny_flux_pipeline("dev").save_pretrained(folder, safe_serialization=True)
    return folder


def _write_kohya(
    sites: list[FluxSite], path: Path, alpha: float = RANK, rank: int = RANK, seed: int = 0
) -> Path:
    """A trained-looking kohya FLUX.1 LoRA, with the metadata lorakit writes for FLUX.1 dev."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for site in sites:
        state[f"{site.name}.lora_down.weight"] = torch.randn(
            rank, site.in_features, generator=generator
        )
        state[f"{site.name}.lora_up.weight"] = torch.randn(
            sum(site.rows), rank, generator=generator
        )
        state[f"{site.name}.alpha"] = torch.tensor(alpha)
    save_file(state, path, metadata=flux_lora_metadata("dev", LoRAConfig(rank, alpha)))
    return path


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_lora_file(path)[0]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_metadata_names_flux1_and_the_variant() -> None:
    config = LoRAConfig(16, 8.0)
    dev = flux_lora_metadata("dev", config, resolution=512, output_name="sks")
    schnell = flux_lora_metadata("schnell", config)
    assert dev["ss_base_model_version"] == schnell["ss_base_model_version"] == "flux1"
    assert dev["modelspec.architecture"] == "flux-1-dev/lora"
    assert schnell["modelspec.architecture"] == "flux-1-schnell/lora"
    assert dev["modelspec.implementation"] == "https://github.com/black-forest-labs/flux"
    assert (dev["ss_resolution"], dev["modelspec.resolution"]) == ("(512, 512)", "512x512")
    assert schnell["modelspec.resolution"] == "1024x1024"
    assert (dev["ss_network_dim"], dev["ss_network_alpha"], dev["modelspec.title"]) == (
        "16",
        "8.0",
        "sks",
    )
    assert "modelspec.prediction_type" not in dev  # flow matching: neither epsilon nor v
    assert dev["ss_network_module"] == schnell["ss_network_module"] == "networks.lora_flux"
    with pytest.raises(Exception, match="variant 'pro' unknown"):
        flux_lora_metadata("pro", config)


def test_training_keys_are_written_as_sd_scripts_writes_them() -> None:
    """flux_train_network.py's `update_metadata` keys, `str()` of each value."""
    flow = FlowConfig(sampling="shift", flow_shift=3.1582, sigmoid_scale=1.0, guidance=1.0)
    meta = flux_lora_metadata("dev", LoRAConfig(16, 8.0), **flow_metadata(flow))
    assert {key: meta[key] for key in flow_metadata(flow)} == {
        "ss_timestep_sampling": "shift",
        "ss_sigmoid_scale": "1.0",
        "ss_discrete_flow_shift": "3.1582",
        "ss_guidance_scale": "1.0",
        "ss_model_prediction_type": "raw",
        "ss_weighting_scheme": "uniform",
        "ss_apply_t5_attn_mask": "False",
    }
    sigmoid = flux_lora_metadata("dev", LoRAConfig(16), **flow_metadata(FlowConfig("sigmoid")))
    assert sigmoid["ss_timestep_sampling"] == "sigmoid"


def test_a_diffusers_file_without_metadata_converts_to_networks_lora_flux(
    tiny_sites: list[FluxSite], tmp_path: Path
) -> None:
    """An ai-toolkit style file (diffusers names, no ss_ keys) becomes a kohya file with
    sd-scripts' FLUX.1 module name, not SD's `networks.lora`."""
    kohya = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors")
    diffusers = tmp_path / "diffusers.safetensors"
    save_file(flux_kohya_to_diffusers(_tensors(kohya), tiny_sites, "test"), diffusers)
    back = tmp_path / "back.safetensors"
    assert main(["lora", "convert", str(diffusers), str(back), "--to", "kohya"]) == 0
    with safe_open(str(back), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_network_module"] == "networks.lora_flux"
    assert metadata["ss_base_model_version"] == "flux1"


def test_convert_round_trips_exactly(tiny_sites: list[FluxSite], tmp_path: Path) -> None:
    kohya = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors")
    diffusers, back = tmp_path / "diffusers.safetensors", tmp_path / "back.safetensors"
    assert main(["lora", "convert", str(kohya), str(diffusers), "--to", "diffusers"]) == 0
    assert main(["lora", "convert", str(diffusers), str(back), "--to", "kohya"]) == 0
    converted = _tensors(diffusers)
    assert "transformer.single_transformer_blocks.1.proj_mlp.lora_B.weight" in converted
    assert "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight" in converted
    original, returned = _tensors(kohya), _tensors(back)
    assert returned.keys() == original.keys()
    assert all(torch.equal(returned[key], value) for key, value in original.items())
    again = tmp_path / "again.safetensors"
    assert main(["lora", "convert", str(back), str(again), "--to", "diffusers"]) == 0
    assert all(torch.equal(_tensors(again)[k], v) for k, v in converted.items())
    with safe_open(str(back), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_base_model_version"] == "flux1"
    assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
    assert metadata["ss_network_dim"] == str(RANK)


def test_inspect_shows_family_parts_rank_and_alpha(
    tiny_sites: list[FluxSite], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kohya = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors", alpha=1.0)
    diffusers = tmp_path / "diffusers.safetensors"
    assert main(["lora", "convert", str(kohya), str(diffusers), "--to", "diffusers"]) == 0
    capsys.readouterr()
    assert main(["lora", "inspect", str(kohya), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    groups = {g["group"]: (g["modules"], g["ranks"], g["alphas"]) for g in summary["groups"]}
    # Tiny FLUX.1: 2 double blocks (10 Linears each), 2 single (3 each), CLIP-L 2 layers (6).
    assert (summary["family"], summary["format"], summary["modules"]) == ("flux1", "kohya", 38)
    assert groups == {
        "double blocks": (20, [RANK], [1.0]),
        "single blocks": (6, [RANK], [1.0]),
        "text encoder 1 (CLIP-L)": (12, [RANK], [1.0]),
    }
    assert main(["lora", "inspect", str(diffusers)]) == 0
    out = capsys.readouterr().out
    assert "family flux1 · diffusers format · 38 modules" in out
    assert "double blocks" in out and "single blocks" in out


def test_verify_passes_on_the_tiny_model(
    tiny_sites: list[FluxSite],
    flux_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kohya = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors")
    diffusers = tmp_path / "diffusers.safetensors"
    assert main(["lora", "convert", str(kohya), str(diffusers), "--to", "diffusers"]) == 0
    for path in (kohya, diffusers):
        capsys.readouterr()
        assert main(["lora", "verify", str(path), "--base", str(flux_folder), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert (report["family"], report["modules"], report["ok"]) == ("flux1", 38, True)


def test_verify_without_base_loads_full_size_flux_on_meta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A full-size file (rank 1: a few tens of MB) against FLUX.1 dev on the meta device."""
    path = _write_kohya(list(full_size_sites("dev")), tmp_path / "full.safetensors", rank=1)
    assert main(["lora", "verify", str(path)]) == 0
    out = capsys.readouterr().out
    assert "flux1 LoRA, 376 modules, base flux1-dev (empty)" in out
    assert out.count("every key applied") == 2


def test_verify_fails_on_a_damaged_name(
    tiny_sites: list[FluxSite],
    flux_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors")
    state, metadata = load_lora_file(path)
    good = "lora_unet_double_blocks_1_img_attn_qkv"
    bad = "lora_unet_double_blocks_1_img_attn_qkvx"
    state = {key.replace(good + ".", bad + "."): value for key, value in state.items()}
    save_file(state, path, metadata=metadata)
    assert main(["lora", "verify", str(path), "--base", str(flux_folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["keymap_ignored"] == [
        f"{bad}.{part}" for part in ("alpha", "lora_down.weight", "lora_up.weight")
    ]
    assert report["diffusers_ignored"] == [bad]


def test_bad_input_is_one_line(
    tiny_sites: list[FluxSite], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kohya = _write_kohya(tiny_sites, tmp_path / "kohya.safetensors")
    out = str(tmp_path / "out.safetensors")
    assert main(["lora", "convert", str(kohya), out, "--to", "diffusers", "--family", "sdxl"]) == 2
    assert _error_line(capsys).endswith("a FLUX.1 LoRA, not sdxl; drop --family or use flux1")
    assert main(["lora", "verify", str(kohya), "--base", "sd15"]) == 2
    assert "an SD family" in _error_line(capsys)
    sd = tmp_path / "sd.safetensors"
    save_file(
        {
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 320),
            "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(320, 4),
        },
        sd,
    )
    assert main(["lora", "convert", str(sd), out, "--to", "diffusers", "--family", "flux1"]) == 2
    assert _error_line(capsys).endswith("not a FLUX.1 LoRA (no FLUX.1 keys or metadata)")
    assert main(["lora", "verify", str(sd), "--base", "flux1"]) == 2
    assert _error_line(capsys).endswith("--base flux1 takes FLUX.1 LoRAs; this one is not")
    assert not Path(out).exists()


def _deltas(path: Path) -> dict[str, torch.Tensor]:
    """ΔW per module: up @ down × alpha / rank."""
    state = _tensors(path)
    names = {key.split(".", 1)[0] for key in state}
    return {
        name: state[f"{name}.lora_up.weight"].double()
        @ state[f"{name}.lora_down.weight"].double()
        * (float(state[f"{name}.alpha"]) / state[f"{name}.lora_down.weight"].shape[0])
        for name in names
    }


def test_merge_and_resize_keep_a_flux_file_s_update(
    tiny_sites: list[FluxSite], flux_folder: Path, tmp_path: Path
) -> None:
    """Merging two FLUX.1 files adds their weighted updates exactly; resizing to the merged
    rank keeps them; the result is still sd-scripts' FLUX.1 file and loads on the model."""
    a = _write_kohya(tiny_sites, tmp_path / "a.safetensors")
    b = _write_kohya(tiny_sites, tmp_path / "b.safetensors", alpha=2.0, seed=1)
    merged, resized = tmp_path / "merged.safetensors", tmp_path / "resized.safetensors"
    assert (
        main(["lora", "merge", "--lora", f"{a}:0.7", "--lora", f"{b}:-0.3", "--out", str(merged)])
        == 0
    )
    assert main(["lora", "resize", str(merged), str(resized), "--rank", str(2 * RANK)]) == 0
    expected = {n: 0.7 * d - 0.3 * _deltas(b)[n] for n, d in _deltas(a).items()}
    for path in (merged, resized):
        got = _deltas(path)
        assert got.keys() == expected.keys()
        for name, delta in expected.items():
            assert torch.allclose(got[name], delta, atol=1e-4), (path.name, name)
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
        assert metadata["ss_base_model_version"] == "flux1"
        assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
        assert metadata["ss_network_module"] == "networks.lora_flux"
        assert metadata["ss_network_dim"] == str(2 * RANK)
    assert main(["lora", "verify", str(resized), "--base", str(flux_folder)]) == 0


def _outputs(model: FluxModel) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP-L's pooled vector and the transformer's velocity on fixed inputs."""
    generator = torch.Generator().manual_seed(3)
    sequence, pooled = encode_prompts(model, ["a photo of sks"], "cpu")
    noisy = torch.randn(1, 16, 4, 4, generator=generator)
    velocity = predict_velocity(model.transformer, noisy, torch.tensor([0.5]), sequence, pooled)
    return pooled, velocity


def test_merge_into_a_flux_file_and_extract_it_back(
    tiny_sites: list[FluxSite],
    flux_folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`lora merge --model` on an all-in-one FLUX.1 file: the merged model computes what the
    base computes with the LoRA applied (transformer and CLIP-L); a BFL transformer file
    takes the transformer's modules and refuses CLIP-L's in one line; bf16 by default.
    `lora extract` of the merged file against its base gives the LoRA's update back."""
    pipe = FluxPipeline.from_pretrained(flux_folder)
    files = write_flux_files(pipe, tmp_path / "files")
    all_in_one = write_all_in_one(pipe, tmp_path / "all-in-one.safetensors")
    lora = _write_kohya(tiny_sites, tmp_path / "lora.safetensors", alpha=2.0)
    merged = tmp_path / "merged.safetensors"
    merge = ["lora", "merge", "--lora", f"{lora}:0.5", "--model"]
    assert main([*merge, str(all_in_one), "--out", str(merged), "--dtype", "fp32"]) == 0

    base = load_flux_for_inference(all_in_one, "cpu", config=flux_folder)
    with applied_flux_loras(base, [LoraRef("lora", lora, 0.5)]):
        expected = _outputs(base)
    got = _outputs(load_flux_for_inference(merged, "cpu", config=flux_folder))
    for name, a, b in zip(("CLIP-L pooled", "velocity"), got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(got[1], _outputs(base)[1])  # the LoRA did change the model

    transformer_only = tmp_path / "bfl-merged.safetensors"
    capsys.readouterr()
    assert main([*merge, str(files["transformer"]), "--out", str(transformer_only)]) == 2
    assert "module lora_te1_" in _error_line(capsys) and not transformer_only.exists()
    unet = tmp_path / "unet.safetensors"
    unet_state = {k: v for k, v in _tensors(lora).items() if k.startswith("lora_unet_")}
    save_file(unet_state, unet, metadata=flux_lora_metadata("dev", LoRAConfig(RANK, 2.0)))
    command = ["lora", "merge", "--lora", str(unet), "--model", str(files["transformer"])]
    assert main([*command, "--out", str(transformer_only)]) == 0
    with safe_open(str(transformer_only), framework="pt") as handle:
        assert handle.get_tensor("double_blocks.0.img_attn.qkv.weight").dtype == torch.bfloat16

    # extract: the fine-tune minus its base gives the merged LoRA's update back
    tuned, extracted = tmp_path / "tuned.safetensors", tmp_path / "extracted.safetensors"
    assert main([*command, "--out", str(tuned), "--dtype", "fp32"]) == 0
    extract = ["lora", "extract", str(files["transformer"]), str(tuned), str(extracted)]
    assert main([*extract, "--rank", str(RANK), "--dtype", "fp32"]) == 0
    got, expected = _deltas(extracted), _deltas(unet)
    assert got.keys() == expected.keys()
    for name, delta in expected.items():
        torch.testing.assert_close(got[name], delta, rtol=1e-4, atol=2e-5, msg=name)
    with safe_open(str(extracted), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_base_model_version"] == "flux1"
    assert metadata["modelspec.architecture"] == "flux-1-dev/lora"
    assert metadata["ss_network_module"] == "networks.lora_flux"
