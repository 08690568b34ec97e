"""FLUX.1 loading, offline: a tiny FLUX.1 written as a diffusers folder, as the BFL file
with separate clip_l / t5xxl / ae files and as an all-in-one checkpoint; detection and the
one-line errors; the bundled configs at full size on the meta device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import init_empty_weights
from diffusers import DiffusionPipeline, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
from safetensors.torch import load_file, save_file

from lorakit.errors import LorakitError
from lorakit.models import ModelFamily, detect_family, load_base_model
from lorakit.models.flux.convert import bfl_to_diffusers, transformer_rules
from lorakit.models.flux.detect import detect_flux, folder_variant
from lorakit.models.flux.keys import T5_PREFIX, flux_layout
from lorakit.models.flux.loader import load_flux_model
from lorakit.models.flux.memory import block_linears
from lorakit.models.flux.model import (
    FluxModel,
    bundled_flux_dir,
    empty_flux_model,
    load_flux_tokenizers,
)
from lorakit.models.tensors import read_index
from tests.helpers.flux import (
    TRANSFORMER_PREFIX,
    load_written_files,
    tiny_flux_pipeline,
    write_all_in_one,
    write_flux_files,
)
from tests.helpers.ldm import write_ldm_checkpoint
from tests.test_models_single_file import offline  # noqa: F401  (fixture)

PROMPT = "a photo of sks person"


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny FLUX.1 dev as a folder, BFL + separate files, and all-in-one."""
    root = tmp_path_factory.mktemp("flux")
    pipe = tiny_flux_pipeline("dev")
    pipe.save_pretrained(root / "folder", safe_serialization=True)
    paths = write_flux_files(pipe, root / "files")
    paths["folder"] = root / "folder"
    paths["all_in_one"] = write_all_in_one(pipe, root / "flux1-dev-aio.safetensors")
    schnell = tiny_flux_pipeline("schnell")
    paths["schnell"] = write_flux_files(schnell, root / "schnell")["transformer"]
    return paths


def _modules(model: FluxModel | DiffusionPipeline) -> list[torch.nn.Module]:
    if isinstance(model, FluxModel):
        return [model.transformer, model.vae, *model.text_encoders]
    return [model.transformer, model.vae, model.text_encoder, model.text_encoder_2]


def _image(pipe: DiffusionPipeline) -> np.ndarray:
    return pipe(
        PROMPT,
        num_inference_steps=2,
        height=32,
        width=32,
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(7),
        output_type="np",
    ).images[0]


def _assert_same_weights(ours: FluxModel, reference: DiffusionPipeline) -> None:
    for mine, theirs in zip(_modules(ours), _modules(reference), strict=True):
        assert type(mine) is type(theirs)
        mine_state, theirs_state = mine.state_dict(), theirs.state_dict()
        assert mine_state.keys() == theirs_state.keys()
        for key, value in theirs_state.items():
            assert torch.equal(mine_state[key], value), key


def test_layouts_are_told_from_keys(flux: dict[str, Path]) -> None:
    dev = flux_layout(read_index(flux["transformer"]))
    assert dev is not None and (dev.variant, dev.transformer) == ("dev", "")
    assert (dev.clip, dev.t5, dev.vae) == (None, None, None)
    schnell = flux_layout(read_index(flux["schnell"]))
    assert schnell is not None and schnell.variant == "schnell"
    aio = flux_layout(read_index(flux["all_in_one"]))
    assert aio is not None and aio.variant == "dev"
    assert (aio.transformer, aio.clip, aio.t5, aio.vae) == (
        "model.diffusion_model.",
        "text_encoders.clip_l.transformer.",
        "text_encoders.t5xxl.transformer.",
        "vae.",
    )
    assert folder_variant(flux["folder"]) == "dev"
    assert flux_layout(read_index(flux["t5xxl"])) is None


def test_flux_is_detected_and_refused_where_sd_is_expected(flux: dict[str, Path]) -> None:
    """detect_family tells FLUX1 (training routes on it); the SD loader refuses it."""
    for path in (flux["transformer"], flux["all_in_one"], flux["folder"]):
        assert detect_family(path) is ModelFamily.FLUX1
        with pytest.raises(LorakitError, match=r"FLUX\.1.*this step loads SD1\.5/SDXL") as caught:
            load_base_model(path)
        assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_sd_file_given_as_flux_is_one_line(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    sd15 = write_ldm_checkpoint(tiny_sd15_dir, tmp_path / "sd15.safetensors", "sd15")
    with pytest.raises(LorakitError, match=r"an SD1\.5 checkpoint, not FLUX\.1") as caught:
        load_flux_model(sd15)
    assert "\n" not in str(caught.value)
    with pytest.raises(LorakitError, match=r"not FLUX\.1"):
        load_flux_model(tiny_sd15_dir)


def test_image_conditioned_flux_tools_are_refused(tmp_path: Path) -> None:
    fill = {
        "double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(2),
        "img_in.weight": torch.zeros(4, 384),
    }
    save_file(fill, tmp_path / "fill.safetensors")
    with pytest.raises(
        LorakitError, match=r"a FLUX\.1 Fill \(inpainting\) checkpoint \(384-wide img_in"
    ):
        detect_flux(tmp_path / "fill.safetensors", read_index(tmp_path / "fill.safetensors"))


def test_tokenizers_are_bundled_and_offline(offline: None) -> None:  # noqa: F811
    clip, t5 = load_flux_tokenizers()
    assert clip(PROMPT).input_ids == [49406, 320, 1125, 539, 48136, 2533, 49407]
    assert t5("Hello world").input_ids == [8774, 296, 1]  # transformers' T5 docs example
    assert t5(PROMPT).input_ids == [3, 9, 1202, 13, 3, 7, 157, 7, 568, 1]
    assert (t5.pad_token_id, t5.eos_token_id) == (0, 1)


@pytest.mark.parametrize("source", ["files", "all_in_one"])
def test_single_files_match_the_folder_weights_and_image(
    source: str,
    flux: dict[str, Path],
    offline: None,  # noqa: F811
) -> None:
    reference = DiffusionPipeline.from_pretrained(flux["folder"], local_files_only=True)
    if source == "files":
        model = load_written_files(flux)
    else:
        model = load_flux_model(flux["all_in_one"], dtype=torch.float32, config=flux["folder"])
    assert (model.variant, model.max_sequence_length) == ("dev", 512)
    _assert_same_weights(model, reference)
    expected = _image(reference)
    assert expected.std() > 0.01
    np.testing.assert_allclose(_image(model.pipeline(reference.scheduler)), expected, atol=1e-5)


def test_fp8_all_in_one_loads_widened_to_bf16(
    flux: dict[str, Path],
    tmp_path: Path,
    offline: None,  # noqa: F811
) -> None:
    """An fp8 download (transformer and T5 in float8 e4m3fn) loads each weight as the
    stored fp8 value, widened exactly to bf16; with `fp8_base` the transformer's block
    weights stay the stored float8 values (the rest widened as without it)."""
    reference = DiffusionPipeline.from_pretrained(flux["folder"], local_files_only=True)
    fp8 = write_all_in_one(
        reference, tmp_path / "fp8.safetensors", fp8_prefixes=(TRANSFORMER_PREFIX, T5_PREFIX)
    )
    model = load_flux_model(fp8, dtype=torch.bfloat16, config=flux["folder"])
    stored = [torch.float8_e4m3fn, None, None, torch.float8_e4m3fn]  # transformer, VAE, CLIP, T5
    for mine, theirs, dtype in zip(_modules(model), _modules(reference), stored, strict=True):
        mine_state = mine.state_dict()
        for key, value in theirs.state_dict().items():
            expected = value.to(dtype).to(torch.bfloat16) if dtype else value.to(torch.bfloat16)
            assert torch.equal(mine_state[key], expected), key
    streamed = load_flux_model(fp8, dtype=torch.bfloat16, config=flux["folder"], fp8_base=True)
    kept = {f"{name}.weight" for name in block_linears(reference.transformer)}
    state = streamed.transformer.state_dict()
    for key, value in reference.transformer.state_dict().items():
        want = torch.float8_e4m3fn if key in kept else torch.bfloat16
        assert state[key].dtype == want, key
        assert torch.equal(state[key].to(torch.bfloat16), value.to(stored[0]).to(torch.bfloat16))


def test_folder_loads_in_the_asked_dtype(flux: dict[str, Path], offline: None) -> None:  # noqa: F811
    model = load_flux_model(flux["folder"], dtype=torch.bfloat16)
    assert model.variant == "dev"
    dtypes = {p.dtype for m in _modules(model) for p in m.parameters()}
    assert dtypes == {torch.bfloat16}


def test_missing_parts_and_wrong_sizes_are_one_line(flux: dict[str, Path]) -> None:
    with pytest.raises(
        LorakitError,
        match=r"without CLIP-L text encoder, T5-XXL text encoder, VAE; give the clip_l, t5xxl, ae",
    ):
        load_flux_model(flux["transformer"], config=flux["folder"])
    with pytest.raises(LorakitError, match=r"dev file without T5-XXL text encoder; give the t5xxl"):
        load_flux_model(
            flux["transformer"], clip_l=flux["clip_l"], ae=flux["ae"], config=flux["folder"]
        )
    with pytest.raises(LorakitError, match=r"t5xxl.safetensors: not a CLIP-L text encoder"):
        load_flux_model(
            flux["transformer"],
            clip_l=flux["t5xxl"],
            t5xxl=flux["t5xxl"],
            ae=flux["ae"],
            config=flux["folder"],
        )
    scaled = {**load_file(flux["t5xxl"]), "scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    scaled["encoder.block.0.layer.0.SelfAttention.q.scale_weight"] = torch.tensor(1.0)
    save_file(scaled, flux["t5xxl"].with_name("t5xxl_fp8_scaled.safetensors"))
    with pytest.raises(LorakitError, match=r"t5xxl_fp8_scaled.safetensors: a scaled-fp8 file"):
        load_flux_model(
            flux["transformer"],
            clip_l=flux["clip_l"],
            t5xxl=flux["t5xxl"].with_name("t5xxl_fp8_scaled.safetensors"),
            ae=flux["ae"],
            config=flux["folder"],
        )
    with pytest.raises(LorakitError, match=r"a FLUX\.1 schnell transformer, but the config"):
        load_flux_model(
            flux["schnell"],
            clip_l=flux["clip_l"],
            t5xxl=flux["t5xxl"],
            ae=flux["ae"],
            config=flux["folder"],  # dev's: with the guidance input
        )
    with pytest.raises(LorakitError, match=r"does not fit the config .*set config="):
        load_flux_model(flux["all_in_one"])  # tiny weights, full-size bundled config


def test_full_size_architecture_on_the_meta_device() -> None:
    dev, schnell = empty_flux_model("dev"), empty_flux_model("schnell")
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(dev.transformer) == 11_901_408_320  # FLUX.1 dev: 11.9 B
    assert count(dev.transformer) - count(schnell.transformer) == 10_229_760  # guidance_in
    assert [count(encoder) for encoder in dev.text_encoders] == [123_060_480, 4_893_906_944]
    assert dev.vae.config.latent_channels == 16
    assert (dev.scheduler_config["shift"], schnell.scheduler_config["shift"]) == (3.0, 1.0)


def test_conversion_matches_diffusers_converter_value_for_value() -> None:
    """At FLUX.1's full width (one double and one single block), every tensor our
    config-driven table makes equals the one diffusers' converter makes: each input row
    carries its key's number and its row index, so any misplaced row shows."""
    config = dict(empty_flux_model("dev").transformer.config)
    config.update(num_layers=1, num_single_layers=1)
    rules = transformer_rules(config)
    with init_empty_weights():
        shapes = {
            k: v.shape for k, v in FluxTransformer2DModel.from_config(config).state_dict().items()
        }
    bfl: dict[str, torch.Tensor] = {}
    number = 0
    for rule in rules:
        for bfl_param, param in rule.params:
            rows = sum(shapes[f"{module}.{param}"][0] for module in rule.diffusers)
            columns = shapes[f"{rule.diffusers[0]}.{param}"][1:]
            coded = number * 100_000 + torch.arange(rows, dtype=torch.int32)
            bfl[f"{rule.bfl}.{bfl_param}"] = coded.view(-1, *[1] * len(columns)).expand(
                rows, *columns
            )
            number += 1
    ours = bfl_to_diffusers(bfl, rules, shapes)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    assert ours.keys() == theirs.keys() == shapes.keys()
    for key, value in theirs.items():
        assert torch.equal(ours[key], value), key
    assert bundled_flux_dir("dev").is_dir()
