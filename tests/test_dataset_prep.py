"""prep: kohya layout, conversions, idempotence, an untouched source, stale files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.dataset.prep import prep_dataset
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError
from tests.helpers.photos import draw_photo


def _tree(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: relative path → (sha256, mtime_ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def src(tmp_path: Path) -> Path:
    """Three awkward photos: EXIF-rotated JPEG, transparent PNG, CMYK JPEG."""
    folder = tmp_path / "photos"
    folder.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    draw_photo(1, (480, 320)).save(folder / "a_rotated.jpg", exif=exif, quality=92)
    rgba = Image.new("RGBA", (400, 400), (0, 0, 0, 0))
    rgba.paste(draw_photo(2, (200, 200)), (100, 100))
    rgba.save(folder / "b_cutout.png")
    draw_photo(3, (360, 300)).convert("CMYK").save(folder / "c_print.jpg", quality=92)
    (folder / "a_rotated.txt").write_text("ohwx man, outdoors", encoding="utf-8")
    (folder / "b_cutout.txt").write_text("a man, studio", encoding="utf-8")
    return folder


def test_layout_conversions_and_captions(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = prep_dataset(src, out, trigger="ohwx", class_name="man")
    folder = out / "img" / "133_ohwx man"  # round(400 / 3)
    assert result.folder == folder and result.repeats == 133
    assert sorted(p.name for p in folder.iterdir()) == [
        f"ohwx_00{i}.{ext}" for i in (1, 2, 3) for ext in ("png", "txt")
    ]
    with Image.open(folder / "ohwx_001.png") as first:
        assert (first.mode, first.size) == ("RGB", (320, 480))  # EXIF rotation applied
        assert "exif" not in first.info
    with Image.open(folder / "ohwx_002.png") as cutout:
        assert cutout.mode == "RGB" and cutout.getpixel((5, 5)) == (255, 255, 255)
    with Image.open(folder / "ohwx_003.png") as cmyk:
        assert cmyk.mode == "RGB"
    captions = [(folder / f"ohwx_00{i}.txt").read_text(encoding="utf-8") for i in (1, 2, 3)]
    assert captions == ["ohwx man, outdoors\n", "ohwx, a man, studio\n", "ohwx, man\n"]
    assert result.trigger_added == [folder / "ohwx_002.txt"]
    assert result.captions_created == [folder / "ohwx_003.txt"]
    scan = scan_dataset(out)
    assert scan.layout == "kohya" and {r.repeats for r in scan.records} == {133}


def test_second_run_is_identical_and_source_untouched(src: Path, tmp_path: Path) -> None:
    before = _tree(src)
    out = tmp_path / "run"
    first = prep_dataset(src, out, trigger="ohwx", class_name="man", crop="square", size=256)
    after_first = _tree(out)
    second = prep_dataset(src, out, trigger="ohwx", class_name="man", crop="square", size=256)
    assert _tree(out) == after_first  # same bytes, files not even rewritten
    assert second.written == [] and len(first.written) == 3
    assert _tree(src) == before


def test_stale_files_from_earlier_runs_are_removed(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    prep_dataset(src, out, trigger="ohwx", class_name="man", repeats=5)
    (src / "c_print.jpg").unlink()
    result = prep_dataset(src, out, trigger="ohwx", class_name="man", repeats=7)
    assert [p.name for p in (out / "img").iterdir()] == ["7_ohwx man"]
    assert sorted(p.name for p in (out / "img" / "7_ohwx man").iterdir()) == [
        "ohwx_001.png",
        "ohwx_001.txt",
        "ohwx_002.png",
        "ohwx_002.txt",
    ]
    assert len(result.removed) == 6


def test_other_subsets_in_the_output_are_kept(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    other = out / "img" / "3_old_ohwx man"  # another subset whose name merely ends alike
    other.mkdir(parents=True)
    draw_photo(5, (300, 300)).save(other / "ohwx_001.png")
    prep_dataset(src, out, trigger="ohwx", class_name="man")
    assert (other / "ohwx_001.png").is_file()


@pytest.mark.parametrize(
    "settings, size",
    [
        ({"crop": "square", "size": 128}, (128, 128)),
        ({"crop": "square"}, (300, 300)),
        ({"max_side": 240}, (240, 200)),
        ({"max_side": 600}, (360, 300)),  # never upscaled unless asked
        ({"max_side": 600, "upscale": True}, (600, 500)),
        ({"crop": "square", "size": 400, "upscale": True}, (400, 400)),
    ],
)
def test_crop_and_resize(tmp_path: Path, settings: dict, size: tuple[int, int]) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    draw_photo(4, (360, 300)).save(src / "x.png")
    result = prep_dataset(src, tmp_path / "out", trigger="sks", class_name="dog", **settings)
    with Image.open(result.images[0]) as image:
        assert image.size == size


def test_square_crop_is_centred(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # white centre third
    Image.fromarray(pixels).save(src / "x.png")
    result = prep_dataset(src, tmp_path / "out", trigger="sks", class_name="dog", crop="square")
    with Image.open(result.images[0]) as image:
        assert np.asarray(image).min() == 255


@pytest.mark.parametrize(
    "settings, fragment",
    [
        ({"trigger": "two words"}, "one word"),
        ({"class_name": "a/b"}, "plain words"),
        ({"crop": "circle"}, "unknown crop"),
        ({"size": 512}, "--size needs"),
        ({"repeats": 0}, "at least 1"),
    ],
)
def test_bad_options(src: Path, tmp_path: Path, settings: dict, fragment: str) -> None:
    options = {"trigger": "sks", "class_name": "man", **settings}
    with pytest.raises(LorakitError, match=fragment):
        prep_dataset(src, tmp_path / "out", **options)


def test_output_inside_source_is_refused(src: Path) -> None:
    before = _tree(src)
    with pytest.raises(LorakitError, match="inside the source"):
        prep_dataset(src, src / "out", trigger="sks", class_name="man")
    assert _tree(src) == before


def test_kohya_source_is_flattened_into_one_subset(src: Path, tmp_path: Path) -> None:
    kohya = tmp_path / "old" / "img" / "10_x person"
    shutil.copytree(src, kohya)
    result = prep_dataset(tmp_path / "old", tmp_path / "new", trigger="ohwx", class_name="man")
    assert len(result.images) == 3 and result.folder.name == "133_ohwx man"


def test_sixteen_bit_grey_keeps_its_tones(tmp_path: Path) -> None:
    src = tmp_path / "photos"
    src.mkdir()
    grey = np.asarray(draw_photo(6, (300, 300)).convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(src / "deep.png")
    result = prep_dataset(src, tmp_path / "out", trigger="sks", class_name="dog")
    with Image.open(result.images[0]) as image:
        converted = np.asarray(image.convert("L"), dtype=np.int16)
    assert np.abs(converted - grey).max() <= 1  # not clipped to white by a naive convert
