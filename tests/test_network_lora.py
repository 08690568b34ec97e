"""LoRANetwork behaviour: stacking, remove, multiplier, dropout, files, metadata, CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.models import ModelFamily
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.lora import LoRANetwork
from lorakit.network.metadata import lora_metadata
from lorakit.network.modules import LoRAModule
from tests.test_network_support import (
    forward,
    max_diff,
    randomise,
    tiny_base,
)


def test_stacked_networks_add_up_and_remove_in_any_order() -> None:
    base = tiny_base("sd15")
    plain_unet, plain_text = forward(base)
    first = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=4))
    randomise(first, seed=1)
    only_first, _ = forward(base)
    second = LoRANetwork.inject(base, LoRAConfig(rank=2, alpha=1, conv_rank=2))
    randomise(second, seed=2)
    both, _ = forward(base)
    assert max_diff(both, only_first) > 1e-4
    assert second.names[0] == first.names[0]  # same kohya names for the stacked network

    first.remove()  # the inner network leaves, the outer one keeps working
    second.multiplier = 0.0
    assert max_diff(forward(base)[0], plain_unet) == 0.0
    second.remove()
    unet, text = forward(base)
    assert max_diff(unet, plain_unet) == 0.0 and max_diff(text, plain_text) == 0.0
    assert not any(isinstance(m, LoRAModule) for m in base.unet.modules())
    assert not any(isinstance(m, LoRAModule) for m in base.text_encoders[0].modules())


def test_new_network_is_a_no_op_and_multiplier_scales_exactly() -> None:
    base = tiny_base("sd15")
    plain, _ = forward(base)
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=2))
    assert max_diff(forward(base)[0], plain) == 0.0  # up weights start at zero
    assert all(bool(m.lora_down.weight.detach().abs().sum() > 0) for m in network.loras)
    randomise(network)
    network.multiplier = 0.5
    module = network.loras[0]
    assert module.multiplier == 0.5 and module.scale == 0.5
    layer = torch.nn.Linear(module.lora_down.in_features, module.lora_up.out_features)
    wrapped = LoRAModule("probe", layer, 4, 2.0, multiplier=0.5)
    wrapped.load_state_dict(
        {
            **wrapped.state_dict(),
            **{k: v for k, v in module.state_dict().items() if k.startswith("lora_")},
        }
    )
    x = torch.randn(3, module.lora_down.in_features)
    delta = module.lora_up.weight @ module.lora_down.weight
    expected = layer(x) + 0.5 * 0.5 * x @ delta.T
    assert max_diff(wrapped(x).detach(), expected.detach()) < 1e-6
    network.multiplier = 0.0
    assert max_diff(forward(base)[0], plain) == 0.0
    network.remove()


def test_dropout_only_in_training_mode() -> None:
    base = tiny_base("sd15")
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=4, dropout=0.5))
    randomise(network)
    base.unet.eval()
    base.text_encoders[0].eval()
    assert max_diff(forward(base)[0], forward(base)[0]) == 0.0
    base.unet.train()
    torch.manual_seed(0)
    first, _ = forward(base)
    torch.manual_seed(1)
    second, _ = forward(base)
    assert max_diff(first, second) > 1e-5
    network.remove()


def test_param_groups_freeze_parts_with_zero_lr() -> None:
    base = tiny_base("sdxl")
    network = LoRANetwork.inject(base, LoRAConfig(rank=2, alpha=1))
    groups = network.param_groups(1e-4, [5e-5, 0.0])
    assert [g["name"] for g in groups] == ["unet", "text_encoder"]
    assert [g["lr"] for g in groups] == [1e-4, 5e-5]
    frozen = network.part_modules("text_encoder_2")
    assert len(frozen) == 12  # 2 layers × q/k/v/out/fc1/fc2
    assert not any(p.requires_grad for m in frozen for p in (m.lora_down.weight, m.lora_up.weight))
    trained = {id(p) for g in groups for p in g["params"]}
    assert all(
        p.requires_grad for m in network.part_modules("unet") for p in m.lora_up.parameters()
    )
    assert not trained & {id(m.lora_up.weight) for m in frozen}
    own = {id(p) for p in network.parameters()}
    assert own == {id(p) for m in network.loras for p in (m.lora_down.weight, m.lora_up.weight)}
    network.remove()


def test_save_load_round_trip_with_metadata_and_hashes(tmp_path: Path) -> None:
    base = tiny_base("sdxl")
    config = LoRAConfig(rank=4, alpha=2, conv_rank=2, conv_alpha=1)
    network = LoRANetwork.inject(base, config)
    randomise(network)
    expected, _ = forward(base)
    tags = {"10_sks person": {"sks": 12, "person": 12}}
    meta = lora_metadata(
        ModelFamily.SDXL,
        config,
        resolution=(1024, 768),
        num_train_images=12,
        tag_frequency=tags,
        training_started_at=1_700_000_000.0,
        output_name="sks",
    )
    path = network.save(tmp_path / "sks.safetensors", dtype=torch.bfloat16, metadata=meta)
    state, stored = load_lora_file(path)
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    assert all(isinstance(v, str) for v in stored.values())
    assert stored["ss_network_module"] == "networks.lora"
    assert (stored["ss_network_dim"], stored["ss_network_alpha"]) == ("4", "2.0")
    assert json.loads(stored["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1.0"}
    assert stored["ss_base_model_version"] == "sdxl_base_v1-0"
    assert stored["ss_resolution"] == "(1024, 768)"
    assert json.loads(stored["ss_tag_frequency"]) == tags
    assert stored["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert stored["modelspec.resolution"] == "1024x768"
    assert stored["modelspec.title"] == "sks"
    # sd-scripts' hash rule, recomputed here from the written file's tensor section.
    data = path.read_bytes()
    header = int.from_bytes(data[:8], "little")
    assert stored["sshs_model_hash"] == hashlib.sha256(data[8 + header :]).hexdigest()
    assert len(stored["sshs_legacy_hash"]) == 8

    network.remove()
    loaded = LoRANetwork.from_file(base, path)
    assert sorted(loaded.names) == sorted(network.names)
    assert (loaded.config.rank, loaded.config.alpha, loaded.config.conv_rank) == (4, 2.0, 2)
    assert max_diff(forward(base)[0], expected) < 5e-3  # bf16 storage
    again = loaded.kohya_state_dict()
    loaded.load_kohya_state_dict(again)
    assert all(torch.equal(again[k], v) for k, v in loaded.kohya_state_dict().items())
    loaded.remove()


def test_loading_accepts_both_sdxl_spellings(tmp_path: Path) -> None:
    base = tiny_base("sdxl")
    network = LoRANetwork.inject(base, LoRAConfig(rank=2, alpha=1))
    randomise(network)
    expected, _ = forward(base)
    state = network.kohya_state_dict()
    network.remove()
    sites = {s.name: s.alt_name for s in network.sites}
    renamed = {}
    for key, value in state.items():
        name, _, suffix = key.partition(".")
        renamed[f"{sites[name]}.{suffix}"] = value
    assert any("down_blocks_1_attentions_0" in k for k in renamed)
    loaded = LoRANetwork.from_state_dict(base, renamed)
    assert max_diff(forward(base)[0], expected) == 0.0
    assert loaded.names == [n for n in loaded.names if "down_blocks" not in n]
    loaded.remove()


def test_bad_files_give_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(LorakitError, match=r"junk\.safetensors"):
        load_lora_file(junk)
    with pytest.raises(LorakitError, match="no such LoRA file"):
        load_lora_file(tmp_path / "missing.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"lora_unet_nowhere_to_q.lora_down.weight": torch.zeros(2, 4)}, foreign)
    with pytest.raises(LorakitError, match="do not exist"):
        LoRANetwork.from_file(tiny_base("sd15"), foreign)


def test_cli_inspect_verify_convert(tmp_path: Path, tiny_sd15_dir: Path, capsys) -> None:
    base = tiny_base("sd15")
    network = LoRANetwork.inject(base, LoRAConfig(rank=4, alpha=2))
    randomise(network)
    tags = {"5_sks": {"sks": 5}}
    path = network.save(tmp_path / "a.safetensors", metadata={"ss_tag_frequency": json.dumps(tags)})
    assert main(["lora", "inspect", str(path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["family"], summary["format"], summary["modules"]) == ("sd15", "kohya", 204)
    assert {g["group"] for g in summary["groups"]} == {
        "text encoder",
        "unet down",
        "unet mid",
        "unet up",
    }
    assert summary["tag_frequency"] == tags
    assert main(["lora", "inspect", str(path)]) == 0
    assert "sks (5)" in capsys.readouterr().out

    assert main(["lora", "verify", str(path), "--base", str(tiny_sd15_dir)]) == 0
    assert "every key applied" in capsys.readouterr().out

    state, meta = load_lora_file(path)
    state["lora_unet_down_blocks_0_attentions_0_not_a_layer.lora_down.weight"] = torch.zeros(4, 32)
    broken = tmp_path / "broken.safetensors"
    save_file(state, broken, meta)
    assert main(["lora", "verify", str(broken), "--base", str(tiny_sd15_dir), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["keymap_ignored"] == [
        "lora_unet_down_blocks_0_attentions_0_not_a_layer.lora_down.weight"
    ]
    assert not report["ok"]

    out = tmp_path / "d.safetensors"
    assert main(["lora", "convert", str(path), str(out), "--to", "diffusers"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert all(k.startswith(("unet.", "text_encoder.")) for k in load_lora_file(out)[0])
    assert main(["lora", "inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "diffusers"


def test_bf16_frozen_layer_with_fp32_adapter_with_and_without_autocast() -> None:
    """The training setup: bf16 base weights, fp32 LoRA parameters, with or without autocast."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8).to(torch.bfloat16).requires_grad_(False)
    module = LoRAModule("probe", layer, 4, 2.0, multiplier=0.5)
    with torch.no_grad():
        module.lora_up.weight.normal_()
    assert module.lora_down.weight.dtype == module.lora_up.weight.dtype == torch.float32
    x = torch.randn(3, 16).to(torch.bfloat16)
    base = x.float() @ layer.weight.float().T + layer.bias.float()
    delta = x.float() @ module.lora_down.weight.T @ module.lora_up.weight.T
    expected = (base + 0.5 * 0.5 * delta).detach()
    for autocast in (False, True):
        module.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = module(x)
        assert out.dtype == torch.bfloat16
        assert max_diff(out.float().detach(), expected) < 0.02 * float(expected.abs().max())
        out.float().sum().backward()
        assert module.lora_up.weight.grad is not None
        assert module.lora_up.weight.grad.dtype == torch.float32
        assert layer.weight.grad is None
