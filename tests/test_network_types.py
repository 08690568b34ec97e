"""Network types beyond LoRA: DoRA, LoHa and LoKr modules against LyCORIS' own, trained on
the shipped tiny model, saved, loaded back (lorakit, ComfyUI/A1111/InvokeAI key rules),
verified, inspected, merged into a checkpoint, and refused where a tool cannot take them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.inference.generate import GenerateOptions, generate
from lorakit.models import BaseModel, ModelFamily, empty_base_model, load_base_model
from lorakit.models.components import TINY_BASE_DIR
from lorakit.network.adapters import new_adapter
from lorakit.network.config import LoRAConfig
from lorakit.network.convert import convert_file
from lorakit.network.keymap import family_accepted_names, keymap_ignored
from lorakit.network.kinds import delta_weight, factorization
from lorakit.network.lora import LoRANetwork, network_sites
from lorakit.network.merge_checkpoint import merge_into_checkpoint
from lorakit.network.resize import resize_file
from lorakit.network.summary import inspect_lora
from lorakit.network.verify import verify_lora
from lorakit.training.config import config_from_dict
from lorakit.training.loop import train
from lorakit.training.runtime import lora_config
from tests.helpers.ldm import write_ldm_checkpoint
from tests.test_network_names import _comfyui_names
from tests.test_network_support import forward, max_diff, tiny_base
from tests.test_train_support import fast_config, make_concept

TYPES = ("dora", "loha", "lokr")
LABEL = {"dora": "DoRA", "loha": "LoHa", "lokr": "LoKr"}
# The keys ComfyUI (`comfy/weight_adapter/{lora,loha,lokr}.py`) and A1111
# (`network_lora.py`, `network_hada.py`, `network_lokr.py`, `network.py` for dora_scale)
# read for each type, re-derived from their loaders: anything else is "not loaded".
UI_KEYS = {
    "dora": {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha", "dora_scale"},
    "lokr": {
        "lokr_w1",
        "lokr_w1_a",
        "lokr_w1_b",
        "lokr_w2",
        "lokr_w2_a",
        "lokr_w2_b",
        "alpha",
        "dora_scale",
    },
}
REQUIRED = {
    "dora": {"lora_down.weight", "lora_up.weight", "alpha", "dora_scale"},
    "loha": {"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"},
    "lokr": {"lokr_w1", "alpha"},
}
# (layer, rank) cases: a LoKr w2 factorised (rank < half its size) and full, LoHa/DoRA
# on the same; Linear, 1×1 and 3×3 convs.
LAYERS = [
    (lambda: nn.Linear(256, 320), 2),
    (lambda: nn.Linear(64, 48), 8),
    (lambda: nn.Conv2d(64, 96, 3, padding=1), 2),
    (lambda: nn.Conv2d(32, 48, 3, stride=2, padding=1), 8),
    (lambda: nn.Conv2d(32, 48, 1), 2),
]


def _lycoris_module(kind: str, layer: nn.Module, rank: int, alpha: float) -> nn.Module:
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    if kind == "loha":
        return LohaModule("probe", layer, 1.0, rank, alpha)
    if kind == "lokr":
        return LokrModule("probe", layer, 1.0, rank, alpha, factor=-1)
    return LoConModule("probe", layer, 1.0, rank, alpha, weight_decompose=True)


def test_factorization_is_lycoris() -> None:
    from lycoris.functional.general import factorization as lycoris_factorization

    for dimension in range(1, 400):
        for factor in (-1, 1, 2, 3, 4, 8, 16):
            assert factorization(dimension, factor) == lycoris_factorization(dimension, factor)


@pytest.mark.parametrize("kind", TYPES)
def test_forward_matches_lycoris_on_the_same_weights(kind: str) -> None:
    """Same random factors in both (every tensor non-zero, DoRA's magnitude moved off the
    weight norms): the outputs agree within 1e-5, and the ΔW the file tools compute from
    the saved tensors is the module's."""
    generator = torch.Generator().manual_seed(0)
    for make, rank in LAYERS:
        layer = make()
        ours = new_adapter(LoRAConfig(type=kind, rank=rank, alpha=3.0), "probe", layer, rank, 3.0)
        reference = _lycoris_module(kind, layer, rank, 3.0)
        with torch.no_grad():
            for suffix, param in ours.tensors_by_suffix().items():
                noise = torch.randn(param.shape, generator=generator) * 0.2
                param.copy_(param + noise if suffix == ".dora_scale" else noise)
                theirs = reference.get_parameter(suffix[1:])
                assert theirs.shape == param.shape, (kind, layer, suffix)
                theirs.copy_(param)
        if isinstance(layer, nn.Linear):
            x = torch.randn(3, layer.in_features, generator=generator)
        else:
            x = torch.randn(3, layer.in_channels, 8, 8, generator=generator)
        # LyCORIS' multiplier scales ΔW for LoHa/LoKr as here; for DoRA it leaves the
        # decomposition at full strength, where lorakit (like ComfyUI/A1111) scales it.
        multipliers = (1.0,) if kind == "dora" else (1.0, 0.5)
        with torch.no_grad():
            for multiplier in multipliers:
                ours.multiplier = reference.multiplier = multiplier
                expected, got, plain = reference(x), ours(x), layer(x)
                assert max_diff(got, plain) > 0.05  # the module changes the output
                assert max_diff(got, expected) <= 1e-5, (kind, layer, rank, multiplier)
            file_delta = delta_weight(kind, ours.kohya_tensors(), tuple(layer.weight.shape))
            assert max_diff(file_delta, ours.delta_weight()) <= 1e-6


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One run per type on the shipped tiny model (conv part on, text encoder trained)."""
    root = tmp_path_factory.mktemp("types")
    data = make_concept(root / "data", count=4)
    runs = {}
    for kind in TYPES:
        config = fast_config(
            TINY_BASE_DIR,
            data,
            root / kind,
            network={"type": kind, "rank": 4, "alpha": 4.0, "conv_rank": 2, "conv_alpha": 2.0},
            dataset={"repeats": 2},
            optimizer={"unet_lr": 3e-3, "text_encoder_lr": 1e-3},
            training={"epochs": 4},
            saving={"save_every_n_epochs": None, "save_state": False},
            validation={"timesteps": 4},
        )
        train(config)
        runs[kind] = root / kind
    return runs


@pytest.fixture(scope="module")
def tiny() -> BaseModel:
    return load_base_model(TINY_BASE_DIR)


@pytest.mark.parametrize("kind", TYPES)
def test_training_lowers_the_loss_and_writes_the_lycoris_format(
    trained: dict[str, Path], kind: str
) -> None:
    # The validation loss (fixed noise and timesteps) is the yardstick: the training
    # loss of so few steps swings with each step's random timestep.
    summary = json.loads((trained[kind] / "summary.json").read_text())
    val_loss = [epoch["val_loss"] for epoch in summary["epochs"]]
    assert val_loss[-1] < val_loss[0], val_loss
    path = trained[kind] / "tiny.safetensors"
    state = load_file(path)
    suffixes = {key.partition(".")[2] for key in state}
    assert REQUIRED[kind] <= suffixes <= UI_KEYS[kind]
    assert any(key.startswith("lora_te_") for key in state)
    assert any(key.startswith("lora_unet_") and "resnets" in key for key in state)  # conv
    summary_file = inspect_lora(path)
    assert summary_file.types == {LABEL[kind]: summary_file.modules}
    assert any(group.group.endswith("(conv)") for group in summary_file.groups)
    meta = summary_file.metadata
    assert meta["ss_network_module"] == "lycoris.kohya"
    args = json.loads(meta["ss_network_args"])
    assert args["algo"] == {"dora": "lora", "loha": "loha", "lokr": "lokr"}[kind]
    assert (args.get("dora_wd"), args.get("factor")) == {
        "dora": ("True", None),
        "loha": (None, None),
        "lokr": (None, "-1"),
    }[kind]
    assert (args["conv_dim"], args["conv_alpha"]) == ("2", "2.0")


def _image(base: BaseModel, prompt: str, lora_dir: Path) -> np.ndarray:
    options = GenerateOptions(prompt=prompt, steps=2, seed=5, width=64, height=64)
    return np.asarray(generate(base, options, lora_dir=lora_dir)[0].image, dtype=np.int16)


@pytest.mark.parametrize("kind", TYPES)
def test_trained_file_loads_back_and_generates(
    trained: dict[str, Path], tiny: BaseModel, kind: str
) -> None:
    """`<lora:tiny:w>` goes through the loader generate and grid use: weight 0 is the base
    image, weight 1 another; the loaded network writes back the file's tensors."""
    folder = trained[kind]
    plain = _image(tiny, "sks disc", folder)
    assert np.array_equal(_image(tiny, "sks disc <lora:tiny:0>", folder), plain)
    assert np.abs(_image(tiny, "sks disc <lora:tiny:1>", folder) - plain).mean() > 0.5
    state = load_file(folder / "tiny.safetensors")
    network = LoRANetwork.from_file(tiny, folder / "tiny.safetensors")
    try:
        assert network.config.type == kind
        again = network.kohya_state_dict(torch.float16)
        assert again.keys() == state.keys()
        assert all(torch.equal(again[key], value) for key, value in state.items())
    finally:
        network.remove()


def _random_file(kind: str, base: BaseModel, path: Path, seed: int = 1) -> Path:
    """A file of `kind` for `base` (conv part on) whose every tensor is random."""
    config = LoRAConfig(type=kind, rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0)
    network = LoRANetwork.inject(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in network.loras:
            for suffix, param in module.tensors_by_suffix().items():
                noise = torch.randn(param.shape, generator=generator) * 0.3
                param.copy_(param * (1 + noise) if suffix == ".dora_scale" else noise)
    network.save(path, dtype=torch.float32)
    network.remove()
    return path


@pytest.mark.parametrize("kind", TYPES)
def test_verify_applies_every_key_in_the_uis_and_names_diffusers_limit(
    tiny_sd15_dir: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _random_file(kind, tiny_base("sd15"), tmp_path / f"{kind}.safetensors")
    report = verify_lora(path, base=tiny_base("sd15"))
    assert report.keymap_ignored == [] and report.diffusers_ignored == []
    assert not report.ok
    assert f"{report.modules} {LABEL[kind]} modules" in (report.diffusers_unsupported or "")
    assert main(["lora", "verify", str(path), "--base", str(tiny_sd15_dir)]) == 1
    out = capsys.readouterr().out
    assert "ok   A1111/ComfyUI/InvokeAI key mapping" in out
    assert "loads LoRA/LoCon only" in out and "Traceback" not in out


def test_full_size_names_and_keys_are_what_comfyui_and_a1111_read() -> None:
    """On the full SD1.5 architecture (meta device): every module of every type, conv
    part included, has a name ComfyUI maps, keys its loader reads, and shapes the shared
    key rules accept. (Names do not depend on the type: test_network_names checks SDXL's.)"""
    family = ModelFamily.SD15
    base = empty_base_model(family)
    comfy = _comfyui_names(base, family)
    names = family_accepted_names(family)
    written = {site.name for site in network_sites(base, conv=True)}
    assert written <= comfy
    for kind in TYPES:
        config = LoRAConfig(type=kind, rank=8, alpha=4.0, conv_rank=4, conv_alpha=1.0)
        network = LoRANetwork.inject(base, config)
        try:
            state = network.kohya_state_dict()
        finally:
            network.remove()
        assert {key.partition(".")[0] for key in state} == written
        assert {key.partition(".")[2] for key in state} <= UI_KEYS[kind]
        assert keymap_ignored(state, names) == [], kind


def test_keymap_drops_incomplete_or_misfit_lycoris_modules() -> None:
    names = family_accepted_names(ModelFamily.SD15)
    q = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"  # 768 → 768
    fc1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # 768 → 3072
    k = "lora_te_text_model_encoder_layers_0_self_attn_k_proj"
    v = "lora_te_text_model_encoder_layers_0_self_attn_v_proj"
    state = {
        f"{q}.hada_w1_a": torch.zeros(768, 2),
        f"{q}.hada_w1_b": torch.zeros(2, 768),
        f"{q}.hada_w2_a": torch.zeros(768, 2),
        f"{q}.hada_w2_b": torch.zeros(2, 768),
        f"{q}.alpha": torch.tensor(1.0),
        f"{k}.lokr_w1": torch.zeros(24, 24),
        f"{k}.lokr_w2_a": torch.zeros(32, 2),
        f"{k}.lokr_w2_b": torch.zeros(2, 32),
        f"{v}.lora_down.weight": torch.zeros(2, 768),
        f"{v}.lora_up.weight": torch.zeros(768, 2),
        # A LoHa without its second pair is never applied.
        f"{fc1}.hada_w1_a": torch.zeros(3072, 2),
        f"{fc1}.hada_w1_b": torch.zeros(2, 768),
    }
    assert keymap_ignored(state, names) == list(state)[10:]
    # LoKr factors whose product is not the layer's shape, and a DoRA magnitude of the
    # wrong width: only what does not fit is reported.
    bad = dict(state)
    bad[f"{k}.lokr_w1"] = torch.zeros(16, 24)
    bad[f"{v}.dora_scale"] = torch.zeros(3072, 1)
    lokr = [f"{k}.lokr_w1", f"{k}.lokr_w2_a", f"{k}.lokr_w2_b"]
    assert keymap_ignored(bad, names) == [*lokr, *list(state)[10:], f"{v}.dora_scale"]


@pytest.mark.parametrize("kind", TYPES)
def test_merge_into_checkpoint_bakes_what_the_network_does(
    tiny_sd15_dir: Path, tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A LyCORIS file at weight 0.7 merged (fp32) into an LDM single file gives the
    outputs of the network injected at run time; resize, merging into a LoRA and
    conversion to the diffusers format refuse the file in one line naming it and its type."""
    checkpoint = write_ldm_checkpoint(tiny_sd15_dir, tmp_path / "base.safetensors", "sd15")
    base = tiny_base("sd15")
    lora = _random_file(kind, base, tmp_path / f"{kind}.safetensors")
    network = LoRANetwork.from_file(base, lora, 0.7)
    expected_unet, expected_text = forward(base)
    network.remove()
    assert max_diff(expected_unet, forward(base)[0]) > 1e-2
    out = merge_into_checkpoint(checkpoint, [(lora, 0.7)], tmp_path / "merged.safetensors", "fp32")
    merged_unet, merged_text = forward(load_base_model(out, config=tiny_sd15_dir))
    assert max_diff(merged_unet, expected_unet) < 1e-4
    assert max_diff(merged_text, expected_text) < 1e-5
    refusals = [
        lambda: resize_file(lora, tmp_path / "small.safetensors", rank=2),
        lambda: convert_file(lora, tmp_path / "peft.safetensors", "diffusers"),
    ]
    for refuse in refusals:
        with pytest.raises(LorakitError) as caught:
            refuse()
        message = str(caught.value)
        assert str(lora) in message and LABEL[kind] in message and "\n" not in message
    merged_lora = tmp_path / "sum.safetensors"
    capsys.readouterr()
    assert (
        main(["lora", "merge", "--lora", str(lora), "--lora", str(lora), "--out", str(merged_lora)])
        == 2
    )
    err = capsys.readouterr().err
    assert f"{lora}: a {LABEL[kind]} network (LyCORIS)" in err and err.count("\n") == 1
    assert not merged_lora.exists()


def test_config_types_and_their_rules(tmp_path: Path) -> None:
    def config(**network: object) -> object:
        return config_from_dict({"network": network}, "t.toml")

    locon = lora_config(config(type="locon", rank=8, alpha=4.0), [0.0])
    assert (locon.type, locon.conv_rank, locon.conv_alpha) == ("lora", 8, 4.0)
    assert lora_config(config(type="lokr", factor=4), [0.0]).factor == 4
    for bad, message in (
        ({"type": "loha", "dropout": 0.1}, "network.dropout is LoRA's only"),
        ({"type": "lora", "factor": 4}, "network.factor is for lokr only"),
        ({"type": "boft"}, "network.type"),
    ):
        with pytest.raises(LorakitError, match=message):
            config(**bad)
    # Continuing from a file of another type is refused before training starts.
    base = tiny_base("sd15")
    network = LoRANetwork.inject(base, LoRAConfig(type="loha", rank=2, alpha=1.0))
    state = network.kohya_state_dict()
    network.remove()
    lora = LoRANetwork.inject(base, LoRAConfig(rank=2, alpha=1.0))
    with pytest.raises(LorakitError, match="holds a LoHa module, the network is LoRA"):
        lora.load_kohya_state_dict(state, strict=False)
    lora.remove()
    tucker = tmp_path / "tucker.safetensors"
    name = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file(
        {f"{name}.hada_w1_a": torch.zeros(2, 2), f"{name}.hada_t1": torch.zeros(2, 2, 3, 3)}, tucker
    )
    with pytest.raises(LorakitError, match=r"tucker.safetensors: .*Tucker"):
        LoRANetwork.from_file(base, tucker)
