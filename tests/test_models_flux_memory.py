"""A FLUX.1 BFL file loads streamed: the peak resident memory of a bf16 load from an fp16
file stays within 1.25× the weights' bf16 size, as for SD (`test_models_fullsize`); with
`fp8_base` within 1.25× the weights' size with the blocks in float8 (about half: converting
after a bf16 load would peak near 2×).

The transformer has FLUX.1's 19 double and 38 single blocks at a quarter of its width
(768: 6 heads of 128), 0.75 B parameters, so the file is 1.5 GB instead of 24 GB; the
encoders and VAE are the tiny ones. Measured in a fresh subprocess (`VmHWM`).
"""

from __future__ import annotations

import json
import shutil

import pytest

from lorakit.models.flux.model import bundled_flux_dir
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files, write_random_bfl
from tests.test_models_fullsize import MAX_LOAD_RATIO, PEAK, _python

pytestmark = pytest.mark.slow

LOAD = (
    PEAK
    + """
import json, sys, torch
from lorakit.models.flux.loader import load_flux_model

folder, transformer, clip_l, t5xxl, ae, fp8_base = sys.argv[1:]
before = peak()
model = load_flux_model(
    transformer, dtype=torch.bfloat16, clip_l=clip_l, t5xxl=t5xxl, ae=ae, config=folder,
    fp8_base=fp8_base == "fp8",
)
modules = (model.transformer, model.vae, *model.text_encoders)
tensors = [t for m in modules for t in m.state_dict().values()]
print(json.dumps({
    "load": peak() - before,
    "weights": sum(t.numel() * t.element_size() for t in tensors),
    "transformer": sum(p.numel() for p in model.transformer.parameters()),
    "dtypes": sorted({str(t.dtype) for t in tensors}),
}))
"""
)


@pytest.fixture(scope="module")
def quarter(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The config folder, the quarter-width transformer file and the tiny encoder files."""
    tmp_path = tmp_path_factory.mktemp("flux_quarter")
    pipe = tiny_flux_pipeline("dev")
    folder = tmp_path / "config"
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(folder / "transformer")
    config = json.loads((bundled_flux_dir("dev") / "transformer" / "config.json").read_text())
    config.update(num_attention_heads=6, joint_attention_dim=32, pooled_projection_dim=32)
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text(json.dumps(config))
    files = write_flux_files(pipe, tmp_path / "files")
    transformer = write_random_bfl(tmp_path / "flux1-quarter.safetensors", config)
    return [
        str(path) for path in (folder, transformer, *(files[n] for n in ("clip_l", "t5xxl", "ae")))
    ]


@pytest.mark.parametrize(
    ("weights", "dtypes"),
    [("bf16", ["torch.bfloat16"]), ("fp8", ["torch.bfloat16", "torch.float8_e4m3fn"])],
)
def test_bfl_file_loads_within_a_quarter_over_the_weights(
    quarter: list[str], weights: str, dtypes: list[str]
) -> None:
    result = _python(LOAD, *quarter, weights)
    assert result["dtypes"] == dtypes
    assert result["transformer"] > 700_000_000
    assert result["load"] <= MAX_LOAD_RATIO * result["weights"], result
