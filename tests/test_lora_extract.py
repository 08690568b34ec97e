"""`lorakit lora extract`: a known LoRA merged into a base comes back out of the difference,
the kept norms it reports are true, and bad input is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorakit.cli.main import main
from lorakit.network.base_weights import family_layout
from lorakit.network.config import LoRAConfig
from lorakit.network.merge_checkpoint import merge_into_checkpoint
from lorakit.network.pairs import read_lora
from lorakit.network.svd import randomized_svd
from tests.helpers.ldm import write_ldm_checkpoint
from tests.helpers.lora_tools import deltas, save_lora
from tests.test_network_support import tiny_base

RANK, CONV_RANK, WEIGHT = 6, 4, 0.7


@pytest.fixture(scope="module")
def models(
    tiny_sd15_dir: Path, tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """For each family: the base as an LDM file, a known LoCon, and the base with that
    LoCon merged at WEIGHT in fp32 (the "fine-tune"); SD1.5's leaves the text encoder be."""
    folder = tmp_path_factory.mktemp("extract")
    found: dict[str, Path] = {}
    for family, source in (("sd15", tiny_sd15_dir), ("sdxl", tiny_sdxl_dir)):
        config = LoRAConfig(
            rank=RANK,
            alpha=3.0,
            conv_rank=CONV_RANK,
            conv_alpha=2.0,
            train_text_encoder=family == "sdxl",
        )
        base = write_ldm_checkpoint(source, folder / f"{family}.safetensors", family)
        lora = save_lora(tiny_base(family), folder / f"{family}_lora.safetensors", config, seed=7)
        tuned = folder / f"{family}_tuned.safetensors"
        merge_into_checkpoint(base, [(lora, WEIGHT)], tuned, dtype="fp32")
        found |= {family: base, f"{family}_lora": lora, f"{family}_tuned": tuned}
    return found


def _extract(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict:
    assert main(["lora", "extract", *map(str, args), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _known(lora: Path) -> dict[str, torch.Tensor]:
    """The merged update WEIGHT·ΔW of each module, under lorakit's canonical names."""
    sites, _ = family_layout(read_lora(lora).family)
    return {sites[name].name: WEIGHT * delta for name, delta in deltas(lora).items()}


@pytest.mark.parametrize(("family", "base_key"), [("sd15", "sd15"), ("sdxl", "folder")])
def test_extract_recovers_a_merged_lora(
    models: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    family: str,
    base_key: str,
    tiny_sdxl_dir: Path,
) -> None:
    """Every module of the LoRA (linear, 1×1 and 3×3 conv, SDXL's OpenCLIP q/k/v rows)
    comes back with relative error ≤ 1e-4; the layers it never touched are skipped. The
    SDXL base is read as a diffusers folder and the fine-tune as a single file."""
    base = models[family] if base_key == family else tiny_sdxl_dir
    out = tmp_path / "extracted.safetensors"
    ranks = ["--rank", str(RANK), "--conv-rank", str(CONV_RANK), "--dtype", "fp32"]
    report = _extract(capsys, base, models[f"{family}_tuned"], out, *ranks)
    known, extracted = _known(models[f"{family}_lora"]), deltas(out)
    assert extracted.keys() == known.keys()
    for name, delta in known.items():
        error = float((extracted[name] - delta).norm() / delta.norm())
        assert error <= 1e-4, (name, error)
    assert report["overall"] == pytest.approx(1.0, abs=1e-5)
    # The tiny SD1.5 text encoder's 2 layers × q, k, v, out, fc1, fc2 did not change.
    assert report["skipped"] == (12 if family == "sd15" else 0)
    assert all(module["source_rank"] is None for module in report["modules"])


def test_lower_rank_reports_the_norm_it_keeps(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rank2.safetensors"
    report = _extract(
        capsys, models["sd15"], models["sd15_tuned"], out, "--rank", "2", "--dtype", "fp32"
    )
    fits = {module["name"]: module for module in report["modules"]}
    known, extracted = _known(models["sd15_lora"]), deltas(out)
    conv = {name for name, pair in read_lora(models["sd15_lora"]).pairs.items() if pair.is_conv}
    assert conv and not conv & fits.keys()  # 3×3 convs only with --conv-rank
    for name, fit in fits.items():
        sigma = torch.linalg.svdvals(known[name].double())
        kept = float(sigma[:2].norm())
        assert fit["rank"] == 2
        assert fit["kept"] == pytest.approx(kept, rel=1e-4)
        assert fit["fraction"] == pytest.approx(kept / float(sigma.norm()), rel=1e-4)
        assert float(extracted[name].norm()) == pytest.approx(kept, rel=1e-4)
    assert read_lora(out).pairs[next(iter(fits))].alpha == 2.0  # alpha = rank, scale 1


def test_randomized_svd_on_large_matrices() -> None:
    """The sketch path (taken when the matrix is much wider than the sketch): exact on a
    rank-r matrix, and on a full-rank one within 1e-3 of the kept norm of a direct SVD."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(700, 6, generator=generator)
    exact = left @ torch.randn(6, 500, generator=generator)
    svd = randomized_svd(exact, 6)
    approx = (svd.u * svd.s) @ svd.vh
    assert float((approx - exact).norm() / exact.norm()) < 1e-5
    spectrum = 0.9 ** torch.arange(500, dtype=torch.float32)
    u, _ = torch.linalg.qr(torch.randn(700, 500, generator=generator))
    v, _ = torch.linalg.qr(torch.randn(500, 500, generator=generator))
    noisy = (u * spectrum) @ v.T
    svd = randomized_svd(noisy, 16)
    direct = torch.linalg.svdvals(noisy)[:16]
    assert float(svd.s.norm()) == pytest.approx(float(direct.norm()), rel=1e-3)
    assert float(svd.s.norm()) <= float(direct.norm()) * (1 + 1e-6)  # never over-reports


def test_bad_input_is_one_line_and_writes_nothing(
    models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out.safetensors"
    cases = [
        ([models["sd15"], models["sdxl_tuned"], out, "--rank", "4"], "a sdxl model, but"),
        ([models["sd15"], models["sd15_tuned"], out, "--rank", "0"], "--rank 0"),
        ([models["sd15"], models["sd15"], out, "--rank", "4"], "no layer differs"),
        ([models["sd15_lora"], models["sd15_tuned"], out, "--rank", "4"], "not an SD1.5/SDXL"),
        (
            [models["sd15"], models["sd15_tuned"], tmp_path / "x.ckpt", "--rank", "4"],
            ".safetensors",
        ),
        (
            [models["sd15"], models["sd15_tuned"], out, "--rank", "4", "--min-diff", "1"],
            "by more than --min-diff 1",
        ),
    ]
    for args, message in cases:
        assert main(["lora", "extract", *map(str, args)]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (args, err)
    assert list(tmp_path.iterdir()) == []
