"""Every lint rule, on real image folders: one case that triggers it, one that does not."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from lorakit.cli.main import main
from lorakit.dataset.captions import clip_token_count
from lorakit.dataset.findings import Finding, Severity
from lorakit.dataset.flux_captions import looks_like_tags, trigger_only_as_tag
from lorakit.dataset.lint import _count_finding, has_errors, lint_dataset
from tests.helpers.photos import draw_photo

CLEAN_IMAGES = 12


@pytest.fixture(scope="module")
def clean_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 distinct, sharp 512×576 photos with captions that contain the trigger."""
    folder = tmp_path_factory.mktemp("clean")
    for i in range(CLEAN_IMAGES):
        draw_photo(100 + i, (512, 576)).save(folder / f"p{i:02d}.png")
        (folder / f"p{i:02d}.txt").write_text(f"sks person, photo {i}", encoding="utf-8")
    return folder


@pytest.fixture
def clean(tmp_path: Path, clean_template: Path) -> Path:
    return Path(shutil.copytree(clean_template, tmp_path / "data"))


def _rules(findings: list[Finding], path: Path | None = None) -> set[str]:
    return {f.rule for f in findings if path is None or f.path == path}


def _problems(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is not Severity.INFO]


def test_clean_folder_has_no_problems(clean: Path) -> None:
    findings = lint_dataset(clean, trigger="sks")
    assert _problems(findings) == []
    assert _rules(findings) == {"image-count"}
    assert not has_errors(findings)


@pytest.mark.parametrize(
    "name, data",
    [
        ("zero.png", b""),
        ("text.jpg", b"<html>not a photo</html>\n"),
    ],
)
def test_unreadable_files(clean: Path, name: str, data: bytes) -> None:
    (clean / name).write_bytes(data)
    findings = lint_dataset(clean, trigger="sks")
    assert _rules(findings, clean / name) == {"unreadable"}
    assert has_errors(findings)


def test_truncated_jpeg(clean: Path) -> None:
    full = clean / "full.jpg"
    draw_photo(1, (512, 512)).save(full, quality=90)
    (clean / "cut.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    findings = lint_dataset(clean, trigger="sks")
    assert "unreadable" in _rules(findings, clean / "cut.jpg")
    assert "unreadable" not in _rules(findings, full)


def test_sizes_against_limits_and_family(clean: Path) -> None:
    draw_photo(1, (200, 300)).save(clean / "tiny.png")
    draw_photo(2, (256, 300)).save(clean / "small.png")
    draw_photo(3, (2112, 512)).save(clean / "wide.png")
    draw_photo(4, (2048, 512)).save(clean / "wide_ok.png")
    findings = lint_dataset(clean, trigger="sks", family="sd15")
    assert _rules(findings, clean / "tiny.png") >= {"too-small"}
    assert "below-native" not in _rules(findings, clean / "tiny.png")
    assert _rules(findings, clean / "small.png") >= {"below-native"}
    assert "too-small" not in _rules(findings, clean / "small.png")
    assert "too-large" in _rules(findings, clean / "wide.png")
    assert "too-large" not in _rules(findings, clean / "wide_ok.png")
    assert "below-native" not in _rules(findings, clean / "p00.png")
    sdxl = lint_dataset(clean, trigger="sks", family="sdxl")
    assert "below-native" in _rules(sdxl, clean / "p00.png")


def test_blur(clean: Path) -> None:
    draw_photo(7, (512, 512)).filter(ImageFilter.GaussianBlur(3)).save(clean / "blur.png")
    draw_photo(8, (512, 512)).filter(ImageFilter.GaussianBlur(0.3)).save(clean / "soft.png")
    findings = lint_dataset(clean, trigger="sks")
    assert "blurry" in _rules(findings, clean / "blur.png")
    assert "blurry" not in _rules(findings, clean / "soft.png")


def test_exact_duplicate_flags_the_copy(clean: Path) -> None:
    shutil.copy(clean / "p03.png", clean / "p03 copy.png")
    findings = lint_dataset(clean)
    assert _rules(findings, clean / "p03 copy.png") >= {"exact-duplicate"}
    assert "exact-duplicate" not in _rules(findings, clean / "p03.png")
    assert "near-duplicate" not in _rules(findings)
    with Image.open(clean / "p03.png") as original:
        original.resize((400, 450)).save(clean / "p03_small.jpg", quality=80)
    near = [f for f in lint_dataset(clean) if f.rule == "near-duplicate"]
    assert len(near) == 1  # against the original only: the copy is already reported


def test_near_duplicate_resized_jpeg(clean: Path) -> None:
    with Image.open(clean / "p05.png") as original:
        original.resize((400, 450)).save(clean / "p05_small.jpg", quality=80)
    findings = lint_dataset(clean)
    near = [f for f in findings if f.rule == "near-duplicate"]
    assert len(near) == 1
    other = next(n for n in ("p05.png", "p05_small.jpg") if n in near[0].message)
    assert {near[0].path.name, other} == {"p05.png", "p05_small.jpg"}


def test_mirrored_pair_but_not_for_symmetric_images(clean: Path) -> None:
    with Image.open(clean / "p06.png") as original:
        original.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(clean / "selfie.png")
    left = np.asarray(draw_photo(9, (256, 576)))
    symmetric = Image.fromarray(np.concatenate([left, left[:, ::-1]], axis=1))
    symmetric.save(clean / "sym.png")
    symmetric.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(clean / "sym_flip.png")
    findings = lint_dataset(clean)
    mirrored = {f.path for f in findings if f.rule == "mirrored-pair"}
    assert mirrored == {clean / "selfie.png"}
    assert "exact-duplicate" in _rules(findings, clean / "sym_flip.png") | _rules(
        findings, clean / "sym.png"
    )


def _exif_rotated(path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    draw_photo(11, (576, 512)).save(path, exif=exif, quality=92)


def test_modes_and_orientation(clean: Path) -> None:
    draw_photo(20, (512, 512)).convert("CMYK").save(clean / "cmyk.jpg", quality=92)
    draw_photo(21, (512, 512)).convert("P").save(clean / "pal.png")
    rgba = draw_photo(22, (512, 512)).convert("RGBA")
    rgba.putalpha(200)
    rgba.save(clean / "alpha.png")
    gray16 = (np.asarray(draw_photo(23, (512, 512)).convert("L"), dtype=np.uint16) * 257).copy()
    Image.fromarray(gray16).save(clean / "deep.png")
    _exif_rotated(clean / "rot.jpg", 6)
    _exif_rotated(clean / "upright.jpg", 1)
    findings = lint_dataset(clean)
    assert "cmyk" in _rules(findings, clean / "cmyk.jpg")
    assert "palette" in _rules(findings, clean / "pal.png")
    assert "alpha" in _rules(findings, clean / "alpha.png")
    assert "16-bit" in _rules(findings, clean / "deep.png")
    assert "exif-rotated" in _rules(findings, clean / "rot.jpg")
    format_rules = {"cmyk", "palette", "alpha", "16-bit", "exif-rotated"}
    assert not format_rules & _rules(findings, clean / "upright.jpg")
    assert not format_rules & _rules(findings, clean / "p00.png")


@pytest.mark.parametrize(
    "count, severity, word",
    [
        (1, Severity.WARNING, "few"),
        (10, Severity.WARNING, "few"),
        (11, Severity.INFO, "good"),
        (20, Severity.INFO, "good"),
        (21, Severity.INFO, "ideal"),
        (50, Severity.INFO, "ideal"),
        (51, Severity.INFO, "many"),
        (100, Severity.INFO, "many"),
        (101, Severity.WARNING, "wasteful"),
        (400, Severity.WARNING, "wasteful"),
    ],
)
def test_image_count_bands(count: int, severity: Severity, word: str) -> None:
    """The guides' bands at both edges: ≤10 few, 11–20 good, 21–50 ideal, 51–100 many."""
    finding = _count_finding(count)
    assert finding.severity is severity and finding.message.startswith(f"{count} images: {word}")
    assert finding.path is None and finding.fix


def _count_on_disk(folder: Path) -> Finding:
    return next(f for f in lint_dataset(folder, trigger="sks") if f.rule == "image-count")


def test_image_count_on_disk_at_the_few_good_edge(clean: Path) -> None:
    for path in clean.glob("p11.*"):
        path.unlink()
    eleven = _count_on_disk(clean)
    assert eleven.severity is Severity.INFO and eleven.message.startswith("11 images: good")
    for path in clean.glob("p10.*"):
        path.unlink()
    ten = _count_on_disk(clean)
    assert ten.severity is Severity.WARNING and ten.message.startswith("10 images: few")


def test_captions_missing_everywhere_or_for_one(clean: Path) -> None:
    (clean / "p01.txt").unlink()
    findings = lint_dataset(clean, trigger="sks")
    assert _rules(findings, clean / "p01.png") == {"missing-caption"}
    assert "missing-caption" not in _rules(findings, clean / "p02.png")
    assert "no-captions" not in _rules(findings)
    for caption in clean.glob("*.txt"):
        caption.unlink()
    findings = lint_dataset(clean, trigger="sks")
    assert "no-captions" in _rules(findings)
    assert "missing-caption" not in _rules(findings)


def test_trigger_from_flag_and_from_kohya_folder(clean: Path, tmp_path: Path) -> None:
    (clean / "p02.txt").write_text("sksfoo person at the beach", encoding="utf-8")
    findings = lint_dataset(clean, trigger="sks")
    assert _rules(findings, clean / "p02.txt") == {"missing-trigger"}
    assert "missing-trigger" not in _rules(findings, clean / "p03.txt")
    assert "missing-trigger" not in _rules(lint_dataset(clean))  # no trigger known
    kohya = tmp_path / "img" / "10_ohwx person"
    shutil.copytree(clean, kohya)
    (kohya / "p04.txt").write_text("ohwx, smiling", encoding="utf-8")
    findings = lint_dataset(tmp_path / "img")
    assert _rules(findings, kohya / "p04.txt") == set()
    assert "missing-trigger" in _rules(findings, kohya / "p05.txt")


def test_long_caption(clean: Path) -> None:
    long_caption = "sks person, " + ", ".join(f"detail {i}" for i in range(40))
    assert clip_token_count(long_caption) > 75
    (clean / "p07.txt").write_text(long_caption, encoding="utf-8")
    findings = lint_dataset(clean, trigger="sks")
    assert _rules(findings, clean / "p07.txt") == {"long-caption"}
    assert "long-caption" not in _rules(findings, clean / "p08.txt")


def test_clip_token_count_matches_clip_bpe() -> None:
    assert clip_token_count("a photo of sks person") == 5
    assert clip_token_count("Kaleidoscopic") == 2  # split into BPE pieces, lower-cased


def test_other_files(clean: Path) -> None:
    (clean / "notes.md").write_text("todo", encoding="utf-8")
    findings = lint_dataset(clean, trigger="sks")
    assert _rules(findings, clean / "notes.md") == {"other-file"}
    assert "other-file" not in _rules(findings, clean / "p00.txt")


# Guide 003's "Quick Caption Guide by Model" examples: only SD 1.5's is a tag list.
GUIDE_CAPTIONS = {
    "xyz_style, digital art, landscape, mountains, sunset, vibrant colors": True,
    "xyz_style digital painting of mountains at sunset, vibrant colors, detailed": False,
    "A beautiful mountain landscape at sunset in the xyz_style, with vibrant orange and "
    "purple colors": False,
}


@pytest.mark.parametrize(("caption", "tags"), GUIDE_CAPTIONS.items())
def test_guide_003_examples_are_told_apart(caption: str, tags: bool) -> None:
    assert looks_like_tags(caption) is tags


def test_trigger_as_a_separate_tag_or_inside_the_sentence() -> None:
    assert trigger_only_as_tag("qz7, a woman smiling in a park", "qz7")
    assert trigger_only_as_tag("a woman smiling in a park, QZ7", "qz7")
    assert not trigger_only_as_tag("a photo of qz7 woman smiling", "qz7")
    assert not trigger_only_as_tag("qz7, a photo of qz7 woman smiling", "qz7")
    assert not trigger_only_as_tag("a photo of a woman", "qz7")  # missing-trigger's case


def test_flux_family_asks_for_sentences_with_the_trigger_inside(clean: Path) -> None:
    for i in range(4):
        (clean / f"p{i:02d}.txt").write_text(
            "sks, 1girl, solo, smiling, outdoors, red dress", encoding="utf-8"
        )
    (clean / "p04.txt").write_text("sks, a woman smiling in a sunny park", encoding="utf-8")
    (clean / "p05.txt").write_text("a photo of a woman in a red dress", encoding="utf-8")
    flux = lint_dataset(clean, family="flux1", trigger="sks")
    advice = {f.rule: f for f in flux if f.path is None and f.rule != "image-count"}
    assert set(advice) == {"tag-captions", "trigger-as-tag"}
    assert advice["tag-captions"].message.startswith("4 of 12 captions are comma-separated tag")
    assert "--captioner" in advice["tag-captions"].fix
    assert advice["trigger-as-tag"].message.startswith("5 of 12 captions have the trigger only")
    assert "'a photo of sks woman smiling in a park'" in advice["trigger-as-tag"].fix
    assert all("\n" not in f.message + f.fix for f in advice.values())
    missing = next(f for f in flux if f.path == clean / "p05.txt")
    assert missing.rule == "missing-trigger" and "in the sentence" in missing.fix
    sd = lint_dataset(clean, family="sd15", trigger="sks")
    assert not {"tag-captions", "trigger-as-tag"} & _rules(sd)  # SD advice unchanged
    assert (
        next(f for f in sd if f.path == clean / "p05.txt").fix == "start the caption with 'sks, '"
    )


def test_flux_sentence_captions_pass_and_clip_length_is_not_flux_advice(clean: Path) -> None:
    for i in range(CLEAN_IMAGES):
        (clean / f"p{i:02d}.txt").write_text(
            f"a photo of sks person standing in front of a wall, picture {i}", encoding="utf-8"
        )
    long_caption = "a photo of sks person " + " and ".join(f"detail {i}" for i in range(40))
    assert clip_token_count(long_caption) > 75
    (clean / "p07.txt").write_text(long_caption, encoding="utf-8")
    flux = lint_dataset(clean, family="flux1", trigger="sks")
    assert _rules([f for f in flux if f.rule != "below-native"]) == {"image-count"}
    assert "long-caption" in _rules(lint_dataset(clean, trigger="sks"))


def test_lint_command_takes_family_flux1(clean: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (clean / "p00.txt").write_text("sks, 1girl, solo, smiling, outdoors", encoding="utf-8")
    assert main(["dataset", "lint", str(clean), "--family", "flux1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rules = {finding["rule"] for finding in report["findings"]}
    assert {"tag-captions", "below-native"} <= rules  # 512 px photos, FLUX.1's native 1024
