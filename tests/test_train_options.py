"""Training options that change the data path: disk cache, flip/colour aug, bf16, accumulation,
regularization images, v-prediction, step saves, gradient checkpointing, text caching."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lorakit.network.files import load_lora_file
from lorakit.training.loop import train
from tests.test_train_support import concept_run, make_concept


def test_disk_cache_with_flips_and_regularization_in_bf16(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    reg = make_concept(tmp_path / "reg", count=2, caption="disc")
    config, out = concept_run(
        tmp_path,
        tiny_sd15_dir,
        count=3,
        dataset={"repeats": 2, "flip_aug": True, "reg_path": str(reg), "prior_loss_weight": 0.5},
        training={"epochs": 1, "cache_latents": "disk", "mixed_precision": "bf16"},
    )
    train(config)
    # Both orientations of every training and regularization image are cached once.
    assert len(list((out / "cache" / "latents").glob("*.safetensors"))) == 10
    _, meta = load_lora_file(out / "tiny.safetensors")
    assert meta["ss_mixed_precision"] == "bf16" and meta["ss_flip_aug"] == "True"
    assert meta["ss_num_reg_images"] == "2" and meta["ss_prior_loss_weight"] == "0.5"
    # 3 images × 2 repeats + as many regularization views = 12 views / batch 2 = 6 steps.
    assert meta["ss_steps"] == "6"


def test_colour_aug_accumulation_v_prediction_and_step_saves(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    config, out = concept_run(
        tmp_path,
        tiny_sd15_dir,
        dataset={"repeats": 2, "color_aug": True, "shuffle_caption": True},
        training={"epochs": 2, "batch_size": 1, "grad_accum": 2, "prediction": "v_prediction"},
        saving={"save_every_n_steps": 1, "keep_last": 1},
    )
    train(config)
    summary = json.loads((out / "summary.json").read_text())
    # 2 images × 2 repeats = 4 batches per epoch = 2 optimizer steps with grad_accum 2.
    assert [e["step"] for e in summary["epochs"]] == [2, 4]
    assert not (out / "cache").exists()
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == ["tiny-000002.safetensors", "tiny-step00000004.safetensors", "tiny.safetensors"]
    _, meta = load_lora_file(out / "tiny-step00000004.safetensors")
    assert meta["ss_steps"] == "4" and meta["ss_prediction_type"] == "v_prediction"
    assert meta["ss_v_parameterization"] == "True"


def test_checkpointing_and_text_caching_give_the_same_lora(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    """Cached text-encoder outputs equal live ones, and gradient checkpointing keeps every
    LoRA gradient: both runs end with the same weights."""
    common = {"dataset": {"repeats": 2}, "validation": {"enabled": False}}
    cached, out_a = concept_run(
        tmp_path / "a", tiny_sd15_dir, training={"epochs": 1, "clip_skip": 2}, **common
    )
    live, out_b = concept_run(
        tmp_path / "b",
        tiny_sd15_dir,
        training={
            "epochs": 1,
            "clip_skip": 2,
            "cache_text_encoder": False,
            "gradient_checkpointing": True,
        },
        **common,
    )
    train(cached)
    train(live)
    want, meta = load_lora_file(out_a / "tiny.safetensors")
    got, _ = load_lora_file(out_b / "tiny.safetensors")
    assert meta["ss_clip_skip"] == "2"
    assert any(float(t.abs().max()) > 0 for k, t in want.items() if "lora_up" in k)
    assert not any(k.startswith("lora_te") for k in want)  # text_encoder_lr 0: no TE LoRA
    worst = max(float((want[k].float() - got[k].float()).abs().max()) for k in want)
    assert worst <= 1e-5
    assert all(torch.isfinite(t.float()).all() for t in got.values())
