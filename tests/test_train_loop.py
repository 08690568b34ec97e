"""End-to-end training on the tiny SD1.5 and SDXL models: learning, outputs, metadata."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lorakit.errors import LorakitError
from lorakit.network.files import load_lora_file
from lorakit.training.config import load_config
from lorakit.training.loop import train
from tests.test_train_support import fast_config, make_concept


def _losses(out: Path, key: str) -> list[float]:
    summary = json.loads((out / "summary.json").read_text())
    return [e[key] for e in summary["epochs"]]


@pytest.fixture(scope="module")
def sd15_run(tiny_sd15_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sd15run")
    data = make_concept(root / "data", count=4)
    # A `.caption` file with other text must be ignored: captions come from `.txt`.
    (data / "img0.caption").write_text("wrongcaption", encoding="utf-8")
    prompts = root / "prompts.txt"
    prompts.write_text("sks disc --w 64 --h 64 --s 2 --d 5\n", encoding="utf-8")
    config = fast_config(
        tiny_sd15_dir,
        data,
        root / "out",
        dataset={"repeats": 4},
        optimizer={"unet_lr": 3e-3},
        training={"epochs": 3, "min_snr_gamma": 5.0},
        saving={"keep_last": 2},
        sampling={"prompts": str(prompts), "every_n_epochs": 2},
    )
    train(config)
    return root / "out"


def test_sd15_training_and_validation_loss_fall(sd15_run: Path) -> None:
    val = _losses(sd15_run, "val_loss")
    trained = _losses(sd15_run, "train_loss")
    assert len(val) == 3
    assert val[-1] < val[0]
    assert trained[-1] < trained[0]
    summary = json.loads((sd15_run / "summary.json").read_text())
    assert summary["best_epoch"] == 3
    assert summary["family"] == "sd15"


def test_run_folder_layout(sd15_run: Path) -> None:
    names = sorted(p.name for p in sd15_run.glob("*.safetensors"))
    # keep_last = 2 pruned the first epoch file.
    assert names == ["tiny-000002.safetensors", "tiny-000003.safetensors", "tiny.safetensors"]
    assert (sd15_run / "state" / "complete").is_file()
    assert list((sd15_run / "logs").glob("events.out.tfevents.*"))
    again = load_config(sd15_run / "config.toml")
    assert again.model.family == "sd15"
    assert again.dataset.resolution == 64
    assert again.saving.keep_last == 2


def test_samples_are_rendered_at_the_configured_epochs(sd15_run: Path) -> None:
    samples = sorted(p.name for p in (sd15_run / "samples").glob("*.png"))
    assert samples == ["tiny_e000002_s000016_00.png"]


def test_network_weights_continue_from_a_lora_file(
    sd15_run: Path, tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    source, _ = load_lora_file(sd15_run / "tiny.safetensors")
    data = make_concept(tmp_path / "data", count=2)
    config = fast_config(
        tiny_sd15_dir,
        data,
        tmp_path / "out",
        network={"weights": str(sd15_run / "tiny.safetensors")},
        optimizer={"unet_lr": 1e-9},
        training={"max_train_steps": 1},
        validation={"enabled": False},
    )
    train(config)
    continued, _ = load_lora_file(tmp_path / "out" / "tiny.safetensors")
    assert continued.keys() == source.keys()
    assert any(float(t.abs().max()) > 0.001 for k, t in source.items() if "lora_up" in k)
    worst = max(float((continued[k].float() - source[k].float()).abs().max()) for k in source)
    assert worst < 1e-3


def test_tensorboard_holds_the_scalars(sd15_run: Path) -> None:
    events = EventAccumulator(str(sd15_run / "logs"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    want = {"loss/current", "loss/average", "loss/epoch", "loss/validation", "lr/unet"}
    assert want <= tags
    assert len(events.Scalars("loss/epoch")) == 3


def test_lora_metadata_and_txt_captions(sd15_run: Path) -> None:
    _, meta = load_lora_file(sd15_run / "tiny.safetensors")
    assert meta["ss_network_dim"] == "4"
    assert float(meta["ss_unet_lr"]) == pytest.approx(3e-3)
    assert meta["ss_optimizer"] == "adamw"
    assert meta["ss_steps"] == "24" and meta["ss_max_train_steps"] == "24"
    assert (meta["ss_epoch"], meta["ss_num_epochs"]) == ("3", "3")
    assert meta["ss_num_batches_per_epoch"] == "8"
    assert meta["ss_resolution"] == "(64, 64)"
    assert float(meta["ss_text_encoder_lr"]) == 0.0
    assert meta["ss_lr_scheduler"] == "constant"
    assert float(meta["ss_min_snr_gamma"]) == 5.0
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags == {"data": {"sks disc": 4}}
    dirs = json.loads(meta["ss_dataset_dirs"])
    assert list(dirs) == ["data"] and dirs["data"]["img_count"] == 4
    views = dirs["data"]["n_repeats"] * 4
    assert int(meta["ss_num_train_images"]) == views
    buckets = json.loads(meta["ss_bucket_info"])["buckets"]
    assert [b["resolution"] for b in buckets.values()] == [[64, 64]]
    assert sum(b["count"] for b in buckets.values()) == views
    assert meta["ss_total_batch_size"] == meta["ss_batch_size_per_device"]
    assert meta["ss_cache_latents"] == "True"
    assert meta["ss_sd_model_name"] and meta["ss_session_id"].isdigit()


def test_lora_loads_in_diffusers(sd15_run: Path, tiny_sd15_dir: Path) -> None:
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd15_dir, local_files_only=True)
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    hidden = torch.randn(1, 77, 32, generator=generator)
    with torch.no_grad():
        before = pipe.unet(sample, 500, encoder_hidden_states=hidden).sample
        pipe.load_lora_weights(str(sd15_run), weight_name="tiny.safetensors")
        after = pipe.unet(sample, 500, encoder_hidden_states=hidden).sample
    assert not torch.allclose(before, after)


def test_sdxl_trains_with_two_text_encoder_rates(tiny_sdxl_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = make_concept(tmp_path / "data", count=3)
    config = fast_config(
        tiny_sdxl_dir,
        data,
        out,
        dataset={"repeats": 4, "flip_aug": True},
        optimizer={"unet_lr": 3e-3, "text_encoder_lr": [1e-3, 5e-4]},
        training={"epochs": 2},
    )
    train(config)
    val = _losses(out, "val_loss")
    assert val[-1] < val[0]
    state, meta = load_lora_file(out / "tiny.safetensors")
    assert any(k.startswith("lora_te1_") for k in state)
    assert any(k.startswith("lora_te2_") for k in state)
    assert meta["ss_base_model_version"].startswith("sdxl")
    assert meta["ss_text_encoder_lr"] == "[0.001, 0.0005]"
    # Each encoder trained at its own rate, logged under lr/<part>.
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    assert events.Scalars("lr/text_encoder")[0].value == pytest.approx(1e-3)
    assert events.Scalars("lr/text_encoder_2")[0].value == pytest.approx(5e-4)
    assert events.Scalars("lr/unet")[0].value == pytest.approx(3e-3)

    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl_dir, local_files_only=True)
    ids = pipe.tokenizer_2("sks disc", padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        before = pipe.text_encoder_2(ids.input_ids).text_embeds
        pipe.load_lora_weights(str(out), weight_name="tiny.safetensors")
        after = pipe.text_encoder_2(ids.input_ids).text_embeds
    assert not torch.allclose(before, after)


def test_nan_loss_stops_and_keeps_the_last_good_epoch_file(
    tiny_sd15_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    data = make_concept(tmp_path / "data", count=2)
    train(fast_config(tiny_sd15_dir, data, out), stop_after_epoch=1)
    good = out / "tiny-000001.safetensors"
    saved, _ = load_lora_file(good)
    # Epoch 2 diverges; step saves are due every step but a NaN LoRA is never written.
    diverging = fast_config(
        tiny_sd15_dir,
        data,
        out,
        training={"noise_offset": float("inf"), "log_every_n_steps": 50},
        saving={"save_every_n_steps": 1},
    )
    with pytest.raises(LorakitError, match="NaN") as err:
        train(diverging, resume=out / "state")
    message = str(err.value)
    assert "\n" not in message and "epoch 2" in message and str(good) in message
    names = sorted(p.name for p in out.glob("*.safetensors"))
    assert names == ["tiny-000001.safetensors"]
    kept, _ = load_lora_file(good)
    assert all(torch.equal(kept[k], saved[k]) for k in saved)
    assert all(torch.isfinite(t.float()).all() for t in kept.values())
