"""`lorakit lora resize`: exact at the file's own rank, the reported norms true, sd-scripts'
dynamic rules, LoCon modules, metadata, and one-line refusals of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lorakit.cli.main import main
from lorakit.inference.generate import GenerateOptions, generate
from lorakit.inference.prompt import LoraRef
from lorakit.models import BaseModel
from lorakit.network.config import LoRAConfig
from lorakit.network.files import load_lora_file
from lorakit.network.pairs import LoRAPair, read_lora
from lorakit.network.resize import resize_pair
from lorakit.network.svd import choose_rank
from tests.helpers.lora_tools import decaying, deltas, save_lora
from tests.test_network_support import tiny_base


def _resize(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["lora", "resize", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_resize_to_own_rank_reproduces_every_update(
    tmp_path: Path, family: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = LoRAConfig(rank=4, alpha=2.0, conv_rank=3, conv_alpha=1.5)
    source = save_lora(tiny_base(family), tmp_path / "in.safetensors", config)
    out = tmp_path / "out.safetensors"
    report = _resize(capsys, str(source), str(out), "--rank", "4", "--conv-rank", "3")

    before, after = deltas(source), deltas(out)
    assert after.keys() == before.keys()
    assert any(read_lora(source).pairs[name].is_conv for name in before)  # LoCon covered
    for name, delta in before.items():
        assert float((after[name] - delta).abs().max()) <= 1e-5, name
    assert report["overall"] == pytest.approx(1.0, abs=1e-6)
    state, meta = load_lora_file(out)
    assert {t.dtype for t in state.values()} == {torch.float32}  # the input's dtype
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("4", "2.0")
    assert json.loads(meta["ss_network_args"]) == {"conv_dim": "3", "conv_alpha": "1.5"}
    assert meta["ss_training_comment"].startswith("dimension is resized from 4 to 4 (conv: 3)")


def test_lower_rank_keeps_the_norm_it_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = LoRAConfig(rank=8, alpha=4.0, conv_rank=6, conv_alpha=3.0)
    source = save_lora(tiny_base("sd15"), tmp_path / "in.safetensors", config, seed=2)
    out = tmp_path / "out.safetensors"
    report = _resize(
        capsys, str(source), str(out), "--rank", "3", "--conv-rank", "2", "--dtype", "fp32"
    )
    fits = {module["name"]: module for module in report["modules"]}
    before, after, resized = deltas(source), deltas(out), read_lora(out)
    squares_total = squares_kept = 0.0
    for name, delta in before.items():
        rank = 2 if resized.pairs[name].is_conv else 3
        sigma = torch.linalg.svdvals(delta.double())
        kept = float(sigma[:rank].norm())
        assert fits[name]["rank"] == rank and fits[name]["source_rank"] in (6, 8)
        assert fits[name]["kept"] == pytest.approx(kept, rel=1e-4)
        assert fits[name]["fraction"] == pytest.approx(kept / float(sigma.norm()), rel=1e-4)
        # What is written is the best rank-k approximation (Eckart–Young): its error is
        # exactly the dropped singular values, and its own norm the kept ones.
        error = float((after[name].double() - delta.double()).norm())
        assert error == pytest.approx(float(sigma[rank:].norm()), rel=1e-3, abs=1e-7)
        assert float(after[name].norm()) == pytest.approx(kept, rel=1e-4)
        # alpha keeps the scale: alpha / rank is the source's.
        assert resized.pairs[name].scale == pytest.approx(read_lora(source).pairs[name].scale)
        squares_total += float(sigma.square().sum())
        squares_kept += kept**2
    assert report["overall"] == pytest.approx((squares_kept / squares_total) ** 0.5, rel=1e-4)
    meta = load_lora_file(out)[1]
    assert (meta["ss_network_dim"], meta["ss_network_alpha"]) == ("3", "1.5")


def _module(sigma: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """(up, down) of a 12×10 module whose update has exactly the singular values `sigma`."""
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(12, len(sigma), generator=generator))
    v, _ = torch.linalg.qr(torch.randn(10, len(sigma), generator=generator))
    return u * torch.tensor(sigma), v.T


# σ = 8, 4, 2, 1, 1 (sum 16, squares 86). sd-scripts' rules, worked by hand:
# sv_ratio 3: σ > 8/3 → 2; sv_cumulative 0.9: partial sums 8, 12, 14, 15 → 15/16 ≥ 0.9 → 4;
# sv_fro 0.95: squares 64, 80 → 80/86 ≥ 0.9025 → 2; sv_fro 0.99: 84/86 < 0.9801 → 4.
@pytest.mark.parametrize(
    ("method", "param", "expected"),
    [
        ("sv_ratio", 3.0, 2),
        ("sv_ratio", 1.0, 1),
        ("sv_cumulative", 0.9, 4),
        ("sv_cumulative", 0.5, 1),
        ("sv_fro", 0.95, 2),
        ("sv_fro", 0.99, 4),
    ],
)
def test_dynamic_rules_follow_sd_scripts(method: str, param: float, expected: int) -> None:
    up, down = _module([8.0, 4.0, 2.0, 1.0, 1.0])
    pair = LoRAPair(down, up, 5.0, tuple(down.shape), tuple(up.shape))
    resized, fit = resize_pair("m", pair, 5, method, param)
    assert resized.rank == fit.rank == expected
    assert resized.alpha == pytest.approx(expected)  # scale 1 kept
    assert choose_rank(torch.tensor([8.0, 4.0, 2.0, 1.0, 1.0]), 3, method, param) == min(
        expected, 3
    )  # --rank caps every rule


def test_dynamic_resize_of_a_file_writes_sd_scripts_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = LoRAConfig(rank=8, alpha=8.0)
    source = save_lora(
        tiny_base("sd15"), tmp_path / "in.safetensors", config, shape=decaying(0.3), seed=4
    )
    out = tmp_path / "out.safetensors"
    dynamic = ["--dynamic", "sv_fro", "--param", "0.99"]
    report = _resize(capsys, str(source), str(out), "--rank", "8", *dynamic)
    ranks = {module["rank"] for module in report["modules"]}
    assert max(ranks) < 8 and all(m["fraction"] >= 0.99 for m in report["modules"])
    meta = load_lora_file(out)[1]
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "Dynamic"
    assert meta["ss_training_comment"].startswith("Dynamic resize with sv_fro: 0.99 from 8")


def _image(base: BaseModel, lora: Path | None) -> np.ndarray:
    options = GenerateOptions(prompt="a photo", steps=4, seed=11, width=64, height=64)
    refs = [LoraRef(lora.stem, lora, 1.0)] if lora else []
    return np.asarray(generate(base, options, loras=refs)[0].image, dtype=np.float64)


def _halve_naively(source: Path, out: Path) -> Path:
    """The first half of each module's rank components, alpha halved with the rank: what
    cutting the matrices without an SVD gives."""
    state, meta = load_lora_file(source)
    halved = {}
    for key, value in state.items():
        if key.endswith(".lora_down.weight"):
            value = value[: value.shape[0] // 2]
        elif key.endswith(".lora_up.weight"):
            value = value[:, : value.shape[1] // 2]
        elif key.endswith(".alpha"):
            value = value / 2
        halved[key] = value.contiguous()
    save_file(halved, out, meta)
    return out


def test_halved_rank_images_stay_closer_than_a_random_loras(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Measure: mean absolute difference of 8-bit RGB values between 64×64 images of the
    same prompt and seed (4 Euler a steps) made with the rank-8 LoRA and its rank-4 resize.
    A LoRA with a trained-like spectrum (components falling off by 0.5, randomly rotated)
    must change its images less when resized than a random LoRA (same norms, flat
    spectrum) changes its own, and less than halving its own components without an SVD."""
    base = tiny_base("sd15")
    config = LoRAConfig(rank=8, alpha=8.0)
    shaped = save_lora(
        base, tmp_path / "shaped.safetensors", config, shape=decaying(0.5), seed=5, scale=0.2
    )
    flat = save_lora(base, tmp_path / "flat.safetensors", config, scale=0.02, seed=6)
    norm_ratio = (
        sum(float(d.square().sum()) for d in deltas(shaped).values())
        / sum(float(d.square().sum()) for d in deltas(flat).values())
    ) ** 0.5
    state, meta = load_lora_file(flat)  # rescale the random LoRA to the shaped one's norm
    save_file({k: v * norm_ratio if "lora_up" in k else v for k, v in state.items()}, flat, meta)

    differences = {}
    for label, source in (("shaped", shaped), ("random", flat)):
        half = tmp_path / f"{label}4.safetensors"
        _resize(capsys, str(source), str(half), "--rank", "4")
        differences[label] = float(np.abs(_image(base, source) - _image(base, half)).mean())
    naive = _halve_naively(shaped, tmp_path / "naive4.safetensors")
    differences["naive"] = float(np.abs(_image(base, shaped) - _image(base, naive)).mean())
    effect = float(np.abs(_image(base, shaped) - _image(base, None)).mean())
    print(f"mean |Δ| of 8-bit pixels: {differences}, LoRA vs none {effect:.2f}")
    assert effect > 2.0  # the LoRA changes the image visibly
    assert differences["shaped"] < differences["random"], differences
    assert differences["shaped"] < differences["naive"], differences


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rank", "0"], "--rank 0: a rank must be ≥ 1"),
        (["--rank", "4", "--conv-rank", "0"], "--conv-rank 0"),
        (["--rank", "4", "--dynamic", "sv_fro"], "needs --param"),
        (["--rank", "4", "--dynamic", "sv_ratio", "--param", "0.5"], "must be ≥ 1"),
        (["--rank", "4", "--dynamic", "sv_cumulative", "--param", "1.5"], "must be in (0, 1]"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    source = save_lora(tiny_base("sd15"), tmp_path / "in.safetensors", LoRAConfig(rank=4))
    out = tmp_path / "out.safetensors"
    assert main(["lora", "resize", str(source), str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [source]


def test_files_that_are_not_loras_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_sd15_dir: Path
) -> None:
    checkpoint = tiny_sd15_dir / "unet" / "diffusion_pytorch_model.safetensors"
    loha = tmp_path / "loha.safetensors"
    name = "lora_unet_down_blocks_0_attentions_0_proj_in"
    save_file(
        {f"{name}.hada_w1_a": torch.zeros(32, 4), f"{name}.hada_w1_b": torch.zeros(4, 32)}, loha
    )
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    out = tmp_path / "out.safetensors"
    for source, message in (
        (checkpoint, "holds no LoRA weights"),
        (loha, "a LoHa network (LyCORIS)"),
        (junk, "not a readable safetensors file"),
        (tmp_path / "missing.safetensors", "no such LoRA file"),
    ):
        assert main(["lora", "resize", str(source), str(out), "--rank", "2"]) == 2
        err = capsys.readouterr().err
        assert message in err and str(source) in err and err.count("\n") == 1
        assert not out.exists()
    assert main(["lora", "resize", str(loha), str(tmp_path / "out.pt"), "--rank", "2"]) == 2
    assert "must be a .safetensors file" in capsys.readouterr().err
