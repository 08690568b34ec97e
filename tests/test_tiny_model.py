"""The shipped tiny base model: loads as family `tiny`, follows prompts, and carries the demo.

The demo test is the end-to-end train → generate run on the shipped weights: dataset,
training, grid, pick, per-epoch scores and a generated PNG with its metadata.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from safetensors.torch import load_file

from lorakit.demo import main as demo_main
from lorakit.errors import LorakitError
from lorakit.models import ModelFamily, detect_family, load_base_model
from lorakit.models.components import TINY_BASE_DIR
from lorakit.network.detect import detect_lora_family
from lorakit.synthetic.classifier import load_classifier
from lorakit.synthetic.evaluate import base_accuracy
from lorakit.synthetic.scenes import all_combos, held_out


def test_shipped_weights_are_small_and_load_as_tiny() -> None:
    size = sum(p.stat().st_size for p in TINY_BASE_DIR.rglob("*") if p.is_file())
    assert size < 30 * 2**20
    assert detect_family(TINY_BASE_DIR) is ModelFamily.TINY
    base = load_base_model(TINY_BASE_DIR)
    assert base.family is ModelFamily.TINY and not base.is_sdxl
    assert base.unet.config.sample_size * base.vae_scale_factor == 64
    assert base.tokenizers[0]("zkz robot").input_ids[0] == 49406
    with pytest.raises(LorakitError, match="family tiny, not sd15"):
        load_base_model(TINY_BASE_DIR, family="sd15")


def test_base_model_follows_held_out_prompts() -> None:
    """A small sample of what bench/quality.py measures on every held-out combination."""
    held = [scene for scene in all_combos() if held_out(scene)][::4]
    scores = base_accuracy(load_base_model(TINY_BASE_DIR), load_classifier(), held)
    assert scores["mean"] >= 0.7, scores


def test_demo_trains_and_generates_on_the_shipped_model(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    argv = ["--out", str(tmp_path), "--epochs", "2", "--repeats", "1", "--sample-steps", "2"]
    assert demo_main([*argv, "--score-samples", "4"]) == 0
    out = capsys.readouterr().out
    assert "would exit with status 1" in out
    subsets = list((tmp_path / "run" / "img").iterdir())
    assert len(subsets) == 1 and subsets[0].name.endswith("_zkz robot")
    lora = tmp_path / "lora"
    weights = load_file(lora / "demo.safetensors")
    assert any(key.startswith("lora_unet_") for key in weights)
    with open(lora / "demo.safetensors", "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    metadata = header["__metadata__"]
    assert metadata["ss_base_model_version"] == "lorakit_tiny"
    assert detect_lora_family(weights, metadata) is ModelFamily.TINY
    scores = json.loads((lora / "quality.json").read_text(encoding="utf-8"))
    assert [row["epoch"] for row in scores["epochs"]] == [1, 2]
    for row in scores["epochs"]:
        assert all(0.0 <= row[key] <= 1.0 for key in ("fidelity", "flexibility", "bleed"))
    generated = sorted((tmp_path / "generated").glob("*.png"))
    assert len(generated) == 1
    for picture in (lora / "grid.png", lora / "loss.png", generated[0]):
        with Image.open(picture) as image:
            image.load()
        assert str(picture.resolve()) in out
    with Image.open(generated[0]) as image:
        assert image.size == (64, 64) and "<lora:demo:1>" in image.text["parameters"]
