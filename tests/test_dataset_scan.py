"""Scanning flat folders, kohya `img/N_name` folders and run folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError


def _png(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 80, 40)).save(path)
    return path


def test_flat_folder_with_captions_and_mixed_case(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.JPG")
    for name in ("c.jpeg", "d.BMP", "e.WebP", "f.Png"):
        _png(tmp_path / name)
    (tmp_path / "a.txt").write_text("  sks person, smiling \n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("hello")
    (tmp_path / "clip.gif").write_bytes(b"GIF89a")
    (tmp_path / ".hidden.png").write_bytes(b"")
    scan = scan_dataset(tmp_path)
    assert scan.layout == "flat"
    names = ["a.png", "b.JPG", "c.jpeg", "d.BMP", "e.WebP", "f.Png"]
    assert [r.path.name for r in scan.records] == names
    a, b = scan.records[:2]
    assert a.caption == "sks person, smiling" and a.caption_path == tmp_path / "a.txt"
    assert b.caption is None and b.caption_path is None
    assert (a.repeats, a.subset) == (1, "")
    assert scan.other_files == [tmp_path / "clip.gif", tmp_path / "notes.md"]


def test_kohya_layout_from_run_folder(tmp_path: Path) -> None:
    _png(tmp_path / "img" / "10_sks person" / "x.png")
    _png(tmp_path / "img" / "3_style" / "y.webp")
    (tmp_path / "img" / "3_style" / "y.caption").write_text("a style", encoding="utf-8")
    for root in (tmp_path, tmp_path / "img"):
        scan = scan_dataset(root, caption_ext="caption")
        assert scan.layout == "kohya"
        assert {(r.subset, r.repeats) for r in scan.records} == {("sks person", 10), ("style", 3)}
        assert next(r for r in scan.records if r.subset == "style").caption == "a style"


def test_single_kohya_subset_keeps_its_repeats(tmp_path: Path) -> None:
    _png(tmp_path / "5_sks dog" / "x.png")
    scan = scan_dataset(tmp_path / "5_sks dog")
    assert (scan.layout, scan.records[0].repeats, scan.records[0].subset) == ("kohya", 5, "sks dog")


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p / "missing", "not found"),
        (lambda p: p, "no images"),
        (lambda p: _png(p / "img" / "abc_name" / "x.png").parents[1], "repeat count"),
        (lambda p: (_png(p / "10_a" / "x.png"), _png(p / "y.png"))[1].parent, "both images"),
    ],
)
def test_bad_folders_are_one_line_errors(tmp_path: Path, make, fragment: str) -> None:
    with pytest.raises(LorakitError) as info:
        scan_dataset(make(tmp_path))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_non_utf8_caption(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    (tmp_path / "a.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(LorakitError, match="UTF-8"):
        scan_dataset(tmp_path)
