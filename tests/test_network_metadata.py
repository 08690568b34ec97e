"""LoRA metadata: sd-scripts' `ss_*` value formats, modelspec keys, and what A1111 reads."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily
from lorakit.network.config import LoRAConfig
from lorakit.network.files import save_lora_file
from lorakit.network.metadata import base_model_metadata, lora_metadata

TAGS = {"10_sks person": {"sks": 12, "person": 12, "smiling": 3}, "1_style": {"sks": 2}}
DIRS = {
    "10_sks person": {"n_repeats": 10, "img_count": 12},
    "1_style": {"n_repeats": 1, "img_count": 2},
}
BUCKETS = {"buckets": {"0": {"resolution": [512, 768], "count": 9}}, "mean_img_ar_error": 0.01}


def _a1111_read(path: Path) -> dict[str, object]:
    """Metadata as A1111's `read_metadata_from_safetensors` gives it: JSON-decoded when a
    value starts with "{", else the string."""
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata()
    return {k: json.loads(v) if v[:1] == "{" else v for k, v in raw.items()}


def test_training_keys_read_back_as_a1111_and_civitai_expect(tmp_path: Path) -> None:
    meta = lora_metadata(
        ModelFamily.SD15,
        LoRAConfig(rank=8, alpha=4, dropout=0.1),
        training_started_at=1_700_000_000.5,
        output_name="sks",
        resolution=512,
        num_train_images=140,
        tag_frequency=TAGS,
        ss_dataset_dirs=json.dumps(DIRS),  # a JSON string of the right shape is kept as is
        bucket_info=BUCKETS,
        shuffle_caption=True,
        clip_skip=2,
        seed=None,  # left out, as absent
        trigger_phrase="sks person",
    )
    state = {"lora_te_x.lora_down.weight": torch.zeros(8, 4)}
    path = save_lora_file(tmp_path / "sks.safetensors", state, meta)
    read = _a1111_read(path)
    # A1111's training-info panel: tags summed over folders, folders by image count.
    tags: dict[str, int] = {}
    for folder_tags in read["ss_tag_frequency"].values():
        for tag, count in folder_tags.items():
            tags[tag.strip()] = tags.get(tag.strip(), 0) + int(count)
    assert tags == {"sks": 14, "person": 12, "smiling": 3}
    dirs = sorted(read["ss_dataset_dirs"].items(), key=lambda x: x[1]["img_count"], reverse=True)
    assert [(d, i["img_count"], i["n_repeats"]) for d, i in dirs] == [
        ("10_sks person", 12, 10),
        ("1_style", 2, 1),
    ]
    assert read["ss_bucket_info"]["buckets"]["0"]["resolution"] == [512, 768]
    assert float(read["ss_training_started_at"]) == 1_700_000_000.5
    assert read["ss_output_name"] == "sks"  # A1111's alias for the file
    # sd-scripts' str() formats.
    assert (read["ss_resolution"], read["ss_network_dim"], read["ss_network_alpha"]) == (
        "(512, 512)",
        "8",
        "4.0",
    )
    assert (read["ss_shuffle_caption"], read["ss_network_dropout"]) == ("True", "0.1")
    assert (read["ss_base_model_version"], read["ss_v2"]) == ("sd_v1", "False")
    assert "ss_seed" not in read
    assert read["modelspec.sai_model_spec"] == "1.0.1"
    assert read["modelspec.architecture"] == "stable-diffusion-v1/lora"
    assert read["modelspec.implementation"] == "diffusers"
    assert read["modelspec.resolution"] == "512x512"
    assert read["modelspec.encoder_layer"] == "2"
    assert read["modelspec.trigger_phrase"] == "sks person"
    assert read["modelspec.title"] == "sks"
    assert read["modelspec.implementation_version"].startswith("lorakit/")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tag_frequency", {"sks": 3}),  # a flat count, not {folder: {tag: count}}
        ("tag_frequency", "{not json"),
        ("dataset_dirs", {"10_sks": {"repeats": 10, "images": 12}}),
        ("bucket_info", {"0": {"resolution": [512, 512]}}),
    ],
)
def test_structured_keys_of_the_wrong_shape_are_refused(key: str, value: object) -> None:
    with pytest.raises(LorakitError, match=f"ss_{key}"):
        lora_metadata(ModelFamily.SDXL, LoRAConfig(), **{key: value})


def test_base_model_metadata_names_and_hashes_the_checkpoint(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: past the legacy hash window
    checkpoint = tmp_path / "v1-5-pruned-emaonly.safetensors"
    checkpoint.write_bytes(data)
    assert base_model_metadata(checkpoint) == {
        "ss_sd_model_name": "v1-5-pruned-emaonly.safetensors",
        "ss_sd_model_hash": hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
        "ss_new_sd_model_hash": hashlib.sha256(data).hexdigest(),
    }
    assert base_model_metadata(tmp_path) == {"ss_sd_model_name": tmp_path.name}


def test_unset_resolution_and_start_time_fall_back_to_the_family_default() -> None:
    """A config that leaves resolution to the family default passes None (the trainer does)."""
    meta = lora_metadata(
        ModelFamily.SDXL, LoRAConfig(), ss_resolution=None, ss_training_started_at=None
    )
    assert (meta["ss_resolution"], meta["modelspec.resolution"]) == ("(1024, 1024)", "1024x1024")
    assert float(meta["ss_training_started_at"]) > 1_700_000_000
