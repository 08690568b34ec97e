"""`lorakit lora merge`: LoRAs baked into single files and diffusers folders (checked against
the same LoRAs applied at generation time), LoRAs merged into one, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from lorakit.cli.main import main
from lorakit.inference.generate import GenerateOptions, generate
from lorakit.inference.prompt import LoraRef
from lorakit.models import BaseModel, ModelFamily, detect_family, empty_base_model, load_base_model
from lorakit.network.config import LoRAConfig
from lorakit.network.lora import LoRANetwork
from lorakit.network.metadata import lora_metadata
from lorakit.network.pairs import read_lora
from tests.helpers.ldm import write_ldm_checkpoint
from tests.helpers.lora_tools import deltas, save_lora
from tests.test_models_single_file import offline  # noqa: F401  (fixture)
from tests.test_network_support import forward, max_diff, tiny_base

LOCON = LoRAConfig(rank=4, alpha=2.0, conv_rank=2, conv_alpha=1.0)


@pytest.fixture(scope="module")
def files(
    tiny_sd15_dir: Path, tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """fp32 LDM single files of both tiny models, and LoRAs for them (same seeds as the
    folders: `tiny_base` builds the very weights `tiny_sd15_dir` holds)."""
    folder = tmp_path_factory.mktemp("merge")
    found = {}
    for family, source in (("sd15", tiny_sd15_dir), ("sdxl", tiny_sdxl_dir)):
        found[family] = write_ldm_checkpoint(source, folder / f"{family}.safetensors", family)
        found[f"{family}_lora"] = save_lora(
            tiny_base(family), folder / f"{family}_a.safetensors", LOCON, seed=1
        )
        found[f"{family}_lora_b"] = save_lora(
            tiny_base(family), folder / f"{family}_b.safetensors", LoRAConfig(rank=3), seed=2
        )
    return found


def _merge(*args: str | Path) -> int:
    return main(["lora", "merge", *map(str, args)])


def _with_loras(base: BaseModel, loras: list[tuple[Path, float]]) -> tuple:
    """Outputs of `base` with the LoRAs injected at their weights (then removed)."""
    networks = [LoRANetwork.from_file(base, path, weight) for path, weight in loras]
    outputs = forward(base)
    for network in reversed(networks):
        network.remove()
    return outputs


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_merged_single_file_equals_loras_applied_at_run_time(
    files: dict[str, Path], tmp_path: Path, family: str, request: pytest.FixtureRequest
) -> None:
    """fp32 merge of two LoRAs (one LoCon): UNet and every text encoder, SDXL's OpenCLIP
    q/k/v rows included, match the injected LoRAs to float rounding."""
    config = request.getfixturevalue(f"tiny_{family}_dir")
    loras = [(files[f"{family}_lora"], 0.8), (files[f"{family}_lora_b"], -0.5)]
    out = tmp_path / "merged.safetensors"
    lora_args = [f"--lora={path}:{weight}" for path, weight in loras]
    assert _merge("--model", files[family], *lora_args, "--out", out, "--dtype", "fp32") == 0
    base = load_base_model(files[family], config=config)
    expected_unet, expected_text = _with_loras(base, loras)
    assert max_diff(expected_unet, forward(base)[0]) > 1e-2  # the LoRAs matter
    merged_unet, merged_text = forward(load_base_model(out, config=config))
    assert max_diff(merged_unet, expected_unet) < 1e-4
    assert max_diff(merged_text, expected_text) < 1e-5


@pytest.mark.usefixtures("offline")
def test_fp16_merge_generates_what_the_lora_does_and_loads_offline(
    files: dict[str, Path], tmp_path: Path, tiny_sd15_dir: Path, capsys
) -> None:
    """fp16 tolerance: images of the default (fp16) merge, loaded in fp32, against the fp32
    base with the LoRA at the same weight: mean |Δ| ≤ 0.1 and max |Δ| ≤ 2 of 255 (measured:
    0.03 and 1, while the LoRA itself moves pixels by 15 on average)."""
    out = tmp_path / "merged.safetensors"
    assert (
        _merge("--model", files["sd15"], "--lora", f"{files['sd15_lora']}:0.7", "--out", out) == 0
    )
    assert capsys.readouterr().out.strip() == f"wrote {out}"
    with safe_open(str(out), "pt") as merged, safe_open(str(files["sd15"]), "pt") as source:
        keys = list(merged.keys())
        assert keys == list(source.keys())
        assert {merged.get_slice(key).get_dtype() for key in keys} == {"F16"}
    assert detect_family(out) is ModelFamily.SD15
    options = GenerateOptions(prompt="a photo", steps=4, seed=3, width=64, height=64)
    base = load_base_model(files["sd15"], config=tiny_sd15_dir)
    ref = LoraRef("a", files["sd15_lora"], 0.7)
    with_lora = np.asarray(generate(base, options, loras=[ref])[0].image, dtype=np.float64)
    plain = np.asarray(generate(base, options)[0].image, dtype=np.float64)
    merged = load_base_model(out, config=tiny_sd15_dir)
    baked = np.asarray(generate(merged, options)[0].image, dtype=np.float64)
    difference = np.abs(baked - with_lora)
    assert np.abs(plain - with_lora).mean() > 5.0  # the LoRA matters
    assert difference.mean() <= 0.1 and difference.max() <= 2


def test_weight_zero_gives_back_the_base_bit_for_bit(
    files: dict[str, Path], tmp_path: Path
) -> None:
    base = load_file(files["sdxl"])
    for dtype, expected in (("fp32", base), ("fp16", {k: v.half() for k, v in base.items()})):
        out = tmp_path / f"{dtype}.safetensors"
        lora = f"{files['sdxl_lora']}:0"
        assert _merge("--model", files["sdxl"], "--lora", lora, "--out", out, "--dtype", dtype) == 0
        merged = load_file(out)
        assert merged.keys() == expected.keys()
        assert all(torch.equal(merged[k], v) for k, v in expected.items())


def test_diffusers_folder_merges_into_a_new_folder(
    files: dict[str, Path], tmp_path: Path, tiny_sd15_dir: Path
) -> None:
    out = tmp_path / "merged"
    lora = files["sd15_lora"]
    assert _merge("--model", tiny_sd15_dir, "--lora", lora, "--out", out, "--dtype", "fp32") == 0
    assert (out / "model_index.json").read_text() == (
        tiny_sd15_dir / "model_index.json"
    ).read_text()
    expected = _with_loras(load_base_model(tiny_sd15_dir), [(lora, 1.0)])
    merged = forward(load_base_model(out))
    assert max_diff(merged[0], expected[0]) < 1e-4 and max_diff(merged[1], expected[1]) < 1e-5
    # The folder must be new: a second merge into it is refused.
    assert _merge("--model", tiny_sd15_dir, "--lora", lora, "--out", out) == 2


def test_loras_concatenate_exactly_and_svd_to_a_rank(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = files["sdxl_lora"], files["sdxl_lora_b"]
    # b spelled the diffusers way: the merge must still see one module, not two.
    sites = {
        site.name: site.alt_name for site in LoRANetwork.inject(tiny_base("sdxl"), LOCON).sites
    }
    state, meta = load_file(b), safe_open(str(b), "pt").metadata()
    renamed = {sites[k.split(".")[0]] + k[k.index(".") :]: v for k, v in state.items()}
    b_diffusers = tmp_path / "b_diffusers.safetensors"
    save_file(renamed, b_diffusers, meta)
    assert any("down_blocks_1_attentions" in key for key in renamed)

    concat = tmp_path / "concat.safetensors"
    assert _merge("--lora", f"{a}:0.8", "--lora", f"{b_diffusers}:-0.5", "--out", concat) == 0
    assert "exact" in capsys.readouterr().out
    merged, in_a, in_b = read_lora(concat).pairs, read_lora(a).pairs, read_lora(b).pairs
    assert merged.keys() == in_a.keys() and in_b.keys() < in_a.keys()
    for name, pair in merged.items():  # ranks add up where both LoRAs have the module
        assert pair.rank == in_a[name].rank + (in_b[name].rank if name in in_b else 0)
    base = tiny_base("sdxl")
    expected = _with_loras(base, [(a, 0.8), (b, -0.5)])
    got = _with_loras(base, [(concat, 1.0)])
    assert max_diff(got[0], expected[0]) < 1e-5 and max_diff(got[1], expected[1]) < 1e-5

    svd = tmp_path / "svd.safetensors"
    loras = ["--lora", f"{a}:0.8", "--lora", f"{b}:-0.5"]
    assert _merge(*loras, "--out", svd, "--rank", "5", "--json") == 0
    report = {m["name"]: m for m in json.loads(capsys.readouterr().out)["modules"]}
    summed = deltas(concat)
    for name, delta in deltas(svd).items():
        sigma = torch.linalg.svdvals(summed[name].double())
        rank = min(5, int((sigma > 1e-6 * sigma[0]).sum()))
        assert report[name]["rank"] == rank
        assert report[name]["kept"] == pytest.approx(float(sigma[:rank].norm()), rel=1e-4)
        error = float((delta.double() - summed[name].double()).norm())
        rounding = 1e-5 * float(sigma.norm())  # fp32 arithmetic on the stacked factors
        assert error == pytest.approx(float(sigma[rank:].norm()), rel=1e-3, abs=rounding)


def _full_size_lora(path: Path) -> Path:
    """A rank-1 LoRA with the shapes of the real SD1.5 (built on the meta device)."""
    config = LoRAConfig(rank=1, alpha=1.0)
    network = LoRANetwork.inject(empty_base_model(ModelFamily.SD15), config)
    state = {k: torch.zeros(v.shape) for k, v in network.kohya_state_dict().items()}
    save_file(state, path, lora_metadata(ModelFamily.SD15, config))
    return path


def test_bad_input_is_one_line_and_writes_nothing(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.safetensors"
    full = _full_size_lora(tmp_path / "full.safetensors")
    cases = [
        (["--model", files["sd15"], "--lora", files["sdxl_lora"]], "a sdxl LoRA, but"),
        (["--model", files["sd15"], "--lora", full], "made for another base model"),
        (["--model", files["sd15"], "--lora", files["sd15"]], "holds no LoRA weights"),
        (["--model", files["sd15_lora"], "--lora", files["sd15_lora"]], "not an SD1.5/SDXL"),
        (["--model", files["sd15"], "--lora", files["sd15_lora"], "--rank", "4"], "with --model"),
        (["--lora", files["sd15_lora"], "--lora", files["sdxl_lora"]], "merge LoRAs of one family"),
        (["--lora", files["sd15_lora"], "--lora", files["sd15_lora_b"], "--rank", "0"], "--rank 0"),
        (["--lora", files["sd15_lora"]], "at least two --lora files"),
        (["--lora", f"{files['sd15_lora']}:heavy", "--lora", files["sd15_lora"]], "not a number"),
    ]
    for args, message in cases:
        assert _merge(*args, "--out", out) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
        assert not out.exists()
    assert (
        _merge("--model", files["sd15"], "--lora", files["sd15_lora"], "--out", files["sd15"]) == 2
    )
    assert "is the input model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [full]
