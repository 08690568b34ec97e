"""`training.cache_text_encoder = "disk"`: text-encoder outputs written once as safetensors
files under `<output_dir>/cache/text/`, read back by later runs.

On the tiny FLUX.1 (BFL transformer + clip_l / t5xxl / ae files): the first run writes one
file per caption and trains the memory-cache run's LoRA bit for bit; a rerun over it
(`--overwrite`) and a resume never run T5 (it moves to the device only to run), leave the
files untouched and train the same LoRA; a changed caption adds one file (in another
output folder too), a replaced T5 file one per caption. SD trains the same LoRA from its
own disk cache. Older configs' `cache_text_encoder = true/false` still load.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from lorakit.cli.main import main
from lorakit.errors import LorakitError
from lorakit.network.files import load_lora_file
from lorakit.training.config import TrainConfig, load_config
from lorakit.training.loop import Trainer, train
from lorakit.training.rundir import prepare_run_folder
from tests.helpers.flux import tiny_flux_pipeline, write_flux_files
from tests.test_train_flux import _config, _toml
from tests.test_train_support import concept_run, make_concept

CAPTIONS = ("sks disc on blue", "sks red disc")


@pytest.fixture(scope="module")
def flux(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny FLUX.1 dev as BFL + encoder files, and two images with their own captions."""
    root = tmp_path_factory.mktemp("flux_text")
    pipe = tiny_flux_pipeline("dev")
    pipe.save_pretrained(root / "folder")
    files = write_flux_files(pipe, root / "files")
    data = make_concept(root / "data", count=len(CAPTIONS))
    for i, caption in enumerate(CAPTIONS):
        (data / f"img{i}.txt").write_text(caption, encoding="utf-8")
    return {**files, "folder": root / "folder", "data": data}


def _flux_config(flux: dict[str, Path], out: Path, mode: str, **sections: Any) -> TrainConfig:
    return _config(flux, out, training={"epochs": 2, "cache_text_encoder": mode}, **sections)


def _files(out: Path) -> dict[str, int]:
    """The text cache's files and their mtimes (ns)."""
    return {p.name: p.stat().st_mtime_ns for p in (out / "cache" / "text").iterdir()}


def _run(config: TrainConfig, resume: Path | None = None, overwrite: bool = False) -> dict:
    """Train through the loop's own `Trainer`, counting the captions T5 encodes (a forward
    hook on the loaded T5 module), and whether the encoders were left on the device."""
    trainer = Trainer(config, prepare_run_folder(config, resume, overwrite))
    encoded: list[int] = []
    t5 = trainer.target.model.text_encoders[1]
    t5.register_forward_hook(lambda _module, args, _out: encoded.append(len(args[0])))
    trainer.run()
    return {"t5_captions": sum(encoded), "on_device": trainer.target.encoders_on_device}


def _lora(out: Path) -> dict[str, torch.Tensor]:
    return load_lora_file(out / "tiny.safetensors")[0]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def runs(flux: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The memory-cache run, the first disk-cache run, and a rerun over the disk run's
    folder (`--overwrite`, which leaves `cache/`), with the files after each."""
    root = tmp_path_factory.mktemp("text_runs")
    memory = _run(_flux_config(flux, root / "memory", "memory"))
    disk_config = _flux_config(flux, root / "disk", "disk")
    first = _run(disk_config)
    first_files = _files(root / "disk")
    first_lora = _lora(root / "disk")
    again = _run(disk_config, overwrite=True)
    return {
        "root": root,
        "memory": memory,
        "first": first,
        "first_files": first_files,
        "first_lora": first_lora,
        "again": again,
    }


def test_the_first_disk_run_writes_one_safetensors_file_per_caption(
    runs: dict[str, Any],
) -> None:
    root = runs["root"]
    assert not (root / "memory" / "cache" / "text").exists()
    files = sorted((root / "disk" / "cache" / "text").iterdir())
    assert [p.suffix for p in files] == [".safetensors"] * len(CAPTIONS)
    for path in files:
        with safe_open(str(path), "pt") as f:
            shapes = {key: tuple(f.get_tensor(key).shape) for key in f.keys()}  # noqa: SIM118
        # T5 sequence (dev: 512 tokens × the tiny T5's width 32), CLIP-L pooled (32).
        assert shapes == {"hidden": (512, 32), "pooled": (32,)}
    assert runs["first"]["t5_captions"] == runs["memory"]["t5_captions"] == len(CAPTIONS)
    # Back to the CPU once every caption is cached: the steps run without them.
    assert runs["first"]["on_device"] is runs["memory"]["on_device"] is False
    assert _same(runs["first_lora"], _lora(root / "memory"))


def test_a_rerun_reads_the_files_and_never_runs_or_places_t5(runs: dict[str, Any]) -> None:
    root = runs["root"]
    assert runs["again"] == {"t5_captions": 0, "on_device": False}
    assert _files(root / "disk") == runs["first_files"]  # not rewritten
    assert _same(_lora(root / "disk"), _lora(root / "memory"))


def test_a_resumed_disk_run_never_runs_t5_and_ends_with_the_same_lora(
    flux: dict[str, Path], runs: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = _flux_config(flux, out, "disk")
    train(config, stop_after_epoch=1)
    written = _files(out)
    resumed = _run(config, resume=out / "state")
    assert resumed == {"t5_captions": 0, "on_device": False}
    assert _files(out) == written
    assert _same(_lora(out), _lora(runs["root"] / "memory"))


def test_a_changed_caption_gets_a_new_entry_in_another_output_folder(
    flux: dict[str, Path], runs: dict[str, Any], tmp_path: Path
) -> None:
    """The names depend on caption and encoders only: the first run's cache copied into a
    new output folder serves its unchanged caption."""
    out = tmp_path / "out"
    shutil.copytree(runs["root"] / "disk" / "cache", out / "cache")  # keeps the mtimes
    data = tmp_path / "data"
    shutil.copytree(flux["data"], data)
    (data / "img1.txt").write_text("sks disc, changed", encoding="utf-8")
    changed = _run(_flux_config(flux, out, "disk", dataset={"path": str(data)}))
    assert changed["t5_captions"] == 1  # only the new caption was encoded
    files = _files(out)
    assert len(files) == len(CAPTIONS) + 1
    assert {k: files[k] for k in runs["first_files"]} == runs["first_files"]


def test_a_replaced_t5_file_is_encoded_anew(flux: dict[str, Path], tmp_path: Path) -> None:
    """Same path, same size, a later mtime: a replaced file, whose outputs may differ."""
    t5 = tmp_path / "t5xxl.safetensors"
    shutil.copy2(flux["t5xxl"], t5)
    config = _flux_config(flux, tmp_path / "out", "disk", model={"t5xxl": str(t5)})
    assert _run(config)["t5_captions"] == len(CAPTIONS)
    stat = t5.stat()
    os.utime(t5, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert _run(config, overwrite=True)["t5_captions"] == len(CAPTIONS)
    assert len(_files(tmp_path / "out")) == 2 * len(CAPTIONS)


def test_the_dry_run_says_which_caches_the_run_uses(
    flux: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    toml = _toml(_flux_config(flux, out, "disk"), tmp_path / "run.toml")
    capsys.readouterr()
    assert main(["train", str(toml), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"caches: latents memory, text-encoder outputs disk; files in {out / 'cache'}" in lines
    shuffled = ["--set", "dataset.shuffle_caption=true", "--dry-run"]
    assert main(["train", str(toml), *shuffled]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "caches: latents memory, text-encoder outputs none (shuffle_caption)" in lines


def test_sd_trains_the_same_lora_from_its_disk_cache(tiny_sd15_dir: Path, tmp_path: Path) -> None:
    """SD1.5 (one CLIP, no pooled output): the file holds the hidden states only."""
    common: dict[str, Any] = {"dataset": {"repeats": 2}, "validation": {"enabled": False}}
    memory, out_memory = concept_run(tmp_path / "memory", tiny_sd15_dir, **common)
    train(memory)
    disk, out_disk = concept_run(
        tmp_path / "disk", tiny_sd15_dir, training={"cache_text_encoder": "disk"}, **common
    )
    train(disk)
    (path,) = (out_disk / "cache" / "text").iterdir()  # both images: "sks disc"
    with safe_open(str(path), "pt") as f:
        assert list(f.keys()) == ["hidden"]
    assert _same(_lora(out_disk), _lora(out_memory))


@pytest.mark.parametrize(
    ("value", "mode"), [("true", "memory"), ("false", "none"), ('"disk"', "disk")]
)
def test_older_boolean_settings_still_load(tmp_path: Path, value: str, mode: str) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(f"[training]\ncache_text_encoder = {value}\n", encoding="utf-8")
    assert load_config(toml).training.cache_text_encoder == mode
    assert (
        load_config(None, [f"training.cache_text_encoder={value}"]).training.cache_text_encoder
        == mode
    )


def test_an_unknown_cache_mode_is_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text('[training]\ncache_text_encoder = "ram"\n', encoding="utf-8")
    with pytest.raises(LorakitError, match=r"training\.cache_text_encoder") as caught:
        load_config(toml)
    assert "\n" not in str(caught.value)
