"""FLUX.1's memory settings through `lorakit train` on a tiny FLUX with 3 double and 4
single blocks (block swap keeps two of each): `flux.fp8_base` stores the blocks' Linear
weights as float8 and trains a LoRA close to the bf16 run's; `flux.blocks_to_swap` trains
the very same LoRA with each swapped block copied in for every forward and backward; bad
combinations are one line; `--dry-run` estimates the chosen setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.models.flux.loader import load_flux_model
from lorakit.models.flux.memory import FP8, BlockSwap, Fp8Linear, parameter_bytes, to_fp8_base
from lorakit.models.flux.model import FluxModel, empty_flux_model
from lorakit.network.files import load_lora_file
from lorakit.training import flux_target
from lorakit.training.vram import flux_estimate
from tests.helpers.flux import bfl_transformer_state, tiny_flux_pipeline, write_flux_files
from tests.test_train_flux import _config, _one_line_error, _toml
from tests.test_train_support import make_concept

# bf16 autocast (fp8 computes in bf16) and checkpointing (block swap needs it) in every
# run, so the runs differ in the memory setting only.
BASE = {"training": {"epochs": 2, "mixed_precision": "bf16", "gradient_checkpointing": True}}
STEPS = 4  # 2 images × 2 repeats / batch 2 × 2 epochs
# Linears per double block: q/k/v, add_q/k/v, to_out, to_add_out, 2 ff, 2 ff_context and
# 2 AdaLN modulations; per single block: q/k/v, proj_mlp, proj_out and the modulation.
LINEARS = 3 * 14 + 4 * 6


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("flux_memory")
    pipe = tiny_flux_pipeline("dev", num_layers=3, num_single_layers=4)
    pipe.save_pretrained(root / "folder")
    files = write_flux_files(pipe, root / "files")
    return {**files, "folder": root / "folder", "data": make_concept(root / "data", count=2)}


def _run(flux: dict[str, Path], out: Path, **memory: Any) -> Path:
    config = _config(flux, out, **BASE, flux=memory)
    assert main(["train", str(_toml(config, out.parent / f"{out.name}.toml"))]) == 0
    return out / "tiny.safetensors"


@pytest.fixture(scope="module")
def runs(flux: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The plain bf16 run, the fp8-base run and the block-swap run, with the fp8 run's
    transformer (as the loader streamed it) and the swap run's `BlockSwap` caught on their
    way through."""
    root = tmp_path_factory.mktemp("runs")
    caught: dict[str, Any] = {}

    def load(*args: Any, **kwargs: Any) -> FluxModel:
        model = load_flux_model(*args, **kwargs)
        if kwargs.get("fp8_base"):
            caught["fp8"] = model.transformer
        return model

    class Swap(BlockSwap):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            caught["swap"] = self

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(flux_target, "load_flux_model", load)
        patch.setattr(flux_target, "BlockSwap", Swap)
        files = {
            "bf16": _run(flux, root / "bf16"),
            "fp8": _run(flux, root / "fp8", fp8_base=True),
            "swap": _run(flux, root / "swap", blocks_to_swap=2),
        }
    return {"files": files, **caught}


def _ups(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    """Every lora_up, the part training wrote (zero at init, lora_down starts from the seed),
    flattened; and the file's metadata."""
    state, metadata = load_lora_file(path)
    ups = sorted(key for key in state if key.endswith("lora_up.weight"))
    return torch.cat([state[key].flatten() for key in ups]), metadata


def test_fp8_base_stores_float8_and_trains_close_to_bf16(runs: dict[str, Any]) -> None:
    """Every block Linear holds a float8 weight; the embedders, final layer, biases and
    norms stay bf16. The LoRA differs from the bf16 run's by the weights' rounding (e4m3
    keeps 3 mantissa bits, bf16 7): measured on the lora_ups, ‖fp8 − bf16‖ / ‖bf16‖ = 0.12,
    less than the same run in fp32 differs from bf16 (0.30), while a run with another seed
    differs by 1.38; final train loss 1.2960 vs 1.2970. So 0.2: within precision noise."""
    transformer = runs["fp8"]
    linears = [
        m.base if hasattr(m, "base") else m
        for blocks in (transformer.transformer_blocks, transformer.single_transformer_blocks)
        for block in blocks
        for m in block.modules()
        if isinstance(m, Fp8Linear) or isinstance(getattr(m, "base", None), Fp8Linear)
    ]
    assert len({id(m) for m in linears}) == LINEARS
    assert all(m.weight.dtype == FP8 and m.bias.dtype == torch.bfloat16 for m in linears)
    assert transformer.x_embedder.weight.dtype == torch.bfloat16
    assert transformer.proj_out.weight.dtype == torch.bfloat16
    fp8, meta8 = _ups(runs["files"]["fp8"])
    bf16, meta16 = _ups(runs["files"]["bf16"])
    assert (meta8["ss_fp8_base"], meta16["ss_fp8_base"]) == ("True", "False")
    relative = ((fp8 - bf16).norm() / bf16.norm()).item()
    assert 0 < relative < 0.2, relative


def test_block_swap_trains_the_same_lora_and_moves_each_block_per_pass(
    runs: dict[str, Any],
) -> None:
    """blocks_to_swap 2 = the last double block and the last two single ones. Each is
    copied in for every training forward and again for its recomputation in backward
    (gradient checkpointing), and its registered weights are meta: nothing resident."""
    swap: BlockSwap = runs["swap"]
    assert (swap.double, swap.single) == (1, 2)
    assert swap.moves("grad") == [2 * STEPS] * 3
    assert all(count > 0 for count in swap.moves("no_grad"))  # validation passes
    for block in swap.blocks:
        frozen = [p for p in block.block.parameters() if not p.requires_grad]
        assert frozen and all(p.is_meta for p in frozen)
        assert all(t.device.type == "cpu" for t in block.stored.values())
    swapped, plain = (load_lora_file(runs["files"][k])[0] for k in ("swap", "bf16"))
    assert swapped.keys() == plain.keys()
    # The same values, copied: bit for bit the same LoRA.
    assert all(torch.equal(swapped[key], plain[key]) for key in plain)


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Keys whose tensors differ in dtype or in a single bit."""
    raw = {FP8: torch.uint8, torch.bfloat16: torch.int16}
    return [
        key
        for key in a
        if a[key].dtype != b[key].dtype
        or not torch.equal(a[key].view(raw[a[key].dtype]), b[key].view(raw[b[key].dtype]))
    ]


def test_fp8_base_load_equals_loading_bf16_then_converting(flux: dict[str, Path]) -> None:
    """`load_flux_model(fp8_base=True)` casts each block weight as it is read, the same
    file → bf16 → fp8 steps as loading in bf16 and calling `to_fp8_base`: bit for bit the
    same model, the same Fp8Linears. The bf16 step matters: the file's fp32 values cast to
    fp8 directly round differently (double rounding) in some elements."""
    files = {key: flux[key] for key in ("clip_l", "t5xxl", "ae")}
    after = load_flux_model(flux["transformer"], config=flux["folder"], **files).transformer
    assert to_fp8_base(after) == LINEARS
    streamed = load_flux_model(
        flux["transformer"], config=flux["folder"], fp8_base=True, **files
    ).transformer
    assert sum(isinstance(m, Fp8Linear) for m in streamed.modules()) == LINEARS
    assert to_fp8_base(streamed) == 0  # already float8: the trainer's call changes nothing
    state, expected = streamed.state_dict(), after.state_dict()
    assert state.keys() == expected.keys()
    assert _differing(state, expected) == []
    assert sum(v.dtype == FP8 for v in state.values()) == LINEARS
    file = {key: value for key, value in load_file(flux["transformer"]).items() if value.dim() == 2}
    direct = {key: value.to(FP8) for key, value in file.items()}
    rounded = {key: value.to(torch.bfloat16).to(FP8) for key, value in file.items()}
    assert _differing(direct, rounded) != []


def test_a_file_already_in_fp8_keeps_its_exact_values(
    flux: dict[str, Path], tmp_path: Path
) -> None:
    """A ComfyUI-style fp8 transformer file: the loader widens it to bf16 exactly, and
    fp8_base casts back to the very values of the file; the parameter bytes nearly halve.
    Loaded with `fp8_base`, the block weights are taken as stored, the same model."""
    pipe = tiny_flux_pipeline("dev", num_layers=3, num_single_layers=4)
    state = {key: value.to(FP8) for key, value in bfl_transformer_state(pipe.transformer).items()}
    save_file(state, tmp_path / "fp8.safetensors")
    files = {key: flux[key] for key in ("clip_l", "t5xxl", "ae")}
    model = load_flux_model(tmp_path / "fp8.safetensors", config=flux["folder"], **files)
    transformer = model.transformer
    before = {name: p.detach().clone() for name, p in transformer.named_parameters()}
    bf16_bytes = parameter_bytes(transformer)
    assert to_fp8_base(transformer) == LINEARS
    converted = dict(transformer.named_parameters())
    assert sum(p.dtype == FP8 for p in converted.values()) == LINEARS
    for name, value in before.items():  # fp8 → bf16 → fp8 is lossless: the file's values
        assert torch.equal(converted[name].to(torch.bfloat16), value), name
    streamed = load_flux_model(
        tmp_path / "fp8.safetensors", config=flux["folder"], fp8_base=True, **files
    ).transformer
    assert _differing(streamed.state_dict(), transformer.state_dict()) == []
    # Measured 116,160 → 73,152 bytes here (0.63: the tiny model's embedders are a large
    # share); FLUX.1 dev at full size (meta device) 23.80 → 11.97 GB (0.503).
    assert parameter_bytes(transformer) < 0.65 * bf16_bytes
    full = empty_flux_model("dev").transformer.to(torch.bfloat16)
    bf16_bytes = parameter_bytes(full)
    to_fp8_base(full)
    assert parameter_bytes(full) < 0.51 * bf16_bytes


def test_a_nan_block_weight_is_refused_and_beyond_448_saturates(
    flux: dict[str, Path], tmp_path: Path
) -> None:
    """float8 e4m3fn has no infinities and torch (2.13) saturates a cast beyond ±448, so a
    weight of 1000 becomes 448 and what the range check finds is a NaN (codes 0x7F, 0xFF):
    refused in one line whether the loader casts or `to_fp8_base` does."""
    state = bfl_transformer_state(
        tiny_flux_pipeline("dev", num_layers=3, num_single_layers=4).transformer
    )
    files = {key: flux[key] for key in ("clip_l", "t5xxl", "ae")}
    for value, name in ((1000.0, "big"), (float("nan"), "nan")):
        state["single_blocks.0.linear2.weight"][0, 0] = value
        save_file(state, tmp_path / f"{name}.safetensors")
    big = load_flux_model(
        tmp_path / "big.safetensors", config=flux["folder"], fp8_base=True, **files
    )
    assert big.transformer.single_transformer_blocks[0].proj_out.weight[0, 0].float() == 448
    nan = tmp_path / "nan.safetensors"
    with pytest.raises(LorakitError, match=r"^flux.fp8_base: a block weight exceeds"):
        load_flux_model(nan, config=flux["folder"], fp8_base=True, **files)
    with pytest.raises(LorakitError, match=r"^flux.fp8_base: a block weight exceeds"):
        to_fp8_base(load_flux_model(nan, config=flux["folder"], **files).transformer)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"flux": {"blocks_to_swap": 3}}, "swaps at most 2"),
        (
            {"flux": {"blocks_to_swap": 2}, "training": {"gradient_checkpointing": False}},
            "training.gradient_checkpointing = true",
        ),
        ({"flux": {"fp8_base": True}, "training": {"mixed_precision": "no"}}, "bf16"),
    ],
)
def test_bad_memory_settings_are_one_line(
    flux: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    sections: dict[str, Any],
    expected: str,
) -> None:
    config = _config(flux, tmp_path / "out", **{**BASE, **sections})
    err = _one_line_error(["train", str(_toml(config, tmp_path / "run.toml"))], capsys)
    assert expected in err and "flux." in err


def test_dry_run_estimates_the_chosen_memory_setting(
    flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = {"resolution": 64, "batch_size": 2, "rank": 4, "optimizer": "adamw"}
    for memory in ({}, {"fp8_base": True}, {"fp8_base": True, "blocks_to_swap": 2}):
        config = _config(flux, tmp_path / "out", **BASE, flux=memory)
        capsys.readouterr()
        assert main(["train", str(_toml(config, tmp_path / "run.toml")), "--dry-run"]) == 0
        out = capsys.readouterr().out
        weights = "fp8" if memory.get("fp8_base") else "bf16"
        swap = memory.get("blocks_to_swap", 0)
        want = flux_estimate("dev", weights=weights, blocks_to_swap=swap, **settings)
        assert f"VRAM estimate (on a GPU): {want.summary()}" in out
        assert f"({weights})" in out.split("\n  weights ")[1].splitlines()[0]
        assert (f"blocks_to_swap {swap}" in out) == bool(swap)


def test_block_swap_runs_on_the_device_it_is_given() -> None:
    """The training device as a parameter: "meta" here stands for a GPU the CPU run lacks.
    Everything not swapped goes there, the swapped weights stay on the CPU, and a forward
    on that device copies each swapped block in once."""
    transformer = tiny_flux_pipeline("dev", num_layers=3, num_single_layers=4).transformer
    swap = BlockSwap(transformer.requires_grad_(False), 2, device="meta", storage="cpu")
    assert {p.device.type for p in transformer.parameters()} == {"meta"}
    assert {t.device.type for b in swap.blocks for t in b.stored.values()} == {"cpu"}

    def meta(*shape: int) -> torch.Tensor:
        return torch.zeros(*shape, device="meta")

    with torch.no_grad():
        out = transformer(
            hidden_states=meta(1, 16, 64),
            encoder_hidden_states=meta(1, 8, 32),
            pooled_projections=meta(1, 32),
            timestep=meta(1),
            img_ids=meta(16, 3),
            txt_ids=meta(8, 3),
            guidance=meta(1),
        ).sample
    assert out.device.type == "meta" and out.shape == (1, 16, 64)
    assert swap.moves("no_grad") == [1, 1, 1]
