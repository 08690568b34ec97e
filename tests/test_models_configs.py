"""Bundled configs: the released SD1.5/SDXL architectures, on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers.loaders.single_file_utils import infer_diffusers_model_type

from lorakit.models import ModelFamily, empty_base_model
from lorakit.models.components import bundled_config_dir
from lorakit.models.loader import load_single_file_state
from tests.helpers.ldm import base_ldm_state_dict


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def empty_models() -> dict[ModelFamily, object]:
    return {family: empty_base_model(family) for family in (ModelFamily.SD15, ModelFamily.SDXL)}


def test_full_configs_have_real_parameter_counts(empty_models: dict) -> None:
    sd15, sdxl = empty_models[ModelFamily.SD15], empty_models[ModelFamily.SDXL]
    assert all(p.is_meta for p in sd15.unet.parameters())
    assert _count(sd15.unet) == 859_520_964
    assert _count(sd15.text_encoders[0]) == 123_060_480
    assert _count(sd15.vae) == 83_653_863
    assert _count(sdxl.unet) == 2_567_463_684
    assert _count(sdxl.text_encoders[0]) == 123_060_480
    assert _count(sdxl.text_encoders[1]) == 694_659_840
    assert _count(sdxl.vae) == 83_653_863
    assert sdxl.vae_scale_factor == 8
    assert sd15.prediction_type == sdxl.prediction_type == "epsilon"


@pytest.mark.parametrize(
    ("family", "kind"), [(ModelFamily.SD15, "v1"), (ModelFamily.SDXL, "xl_base")]
)
def test_full_size_ldm_layout_loads_strictly_into_bundled_configs(
    empty_models: dict, family: ModelFamily, kind: str
) -> None:
    """The writer's full-size keys are what diffusers recognises as the released models, and
    every one of them lands in a parameter of the bundled configs (meta tensors: no memory)."""
    base = empty_models[family]
    state = base_ldm_state_dict(base)
    assert infer_diffusers_model_type(state) == kind
    source = Path(f"{family.value}-meta.safetensors")
    loaded = load_single_file_state(
        source, state, family, bundled_config_dir(family), torch.float16
    )
    assert _count(loaded.unet) == _count(base.unet)
    assert loaded.unet.dtype == torch.float16
    assert [_count(t) for t in loaded.text_encoders] == [_count(t) for t in base.text_encoders]
