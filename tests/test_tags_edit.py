"""Tag editing across caption files: dry-run diffs, --write, globs, byte-exact round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lorakit.captioning.prefix import CaptionStyle
from lorakit.captioning.tags import CaptionText, tag_frequencies, unique_tags
from lorakit.cli.main import main

# Caption files as people really leave them: odd spacing, CRLF, a BOM, trailing commas.
ORIGINALS = {
    "01_front.txt": b"qz7, woman, smile, earrings\n",
    "02_side.txt": b"qz7,woman,Red_Shirt",
    "03_side_b.txt": b"\xef\xbb\xbfqz7, woman, earrings, looking at viewer,\r\n",
    "04_back.txt": b"  qz7 ,  woman  \n\n",
    "05_empty.txt": b"",
}
TEXTS = [
    "",
    "   \n",
    "a",
    "a, b, c\n",
    "a,b",
    "a , b ,c,",
    ",",
    "\ufeffa, b\r\n",
    "a, , b",
    "qz7, woman, from behind, ^_^",
]


def make_dataset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in ORIGINALS.items():
        Image.new("RGB", (16, 16), (90, 90, 90)).save(folder / name.replace(".txt", ".png"))
        (folder / name).write_bytes(data)
    Image.new("RGB", (16, 16), (10, 10, 10)).save(folder / "06_side_uncaptioned.png")
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("text", TEXTS)
def test_parse_render_and_add_remove_are_byte_exact(text: str) -> None:
    caption = CaptionText.parse(text)
    assert caption.render() == text
    assert caption.add("from side")
    assert "from side" in caption.render()
    assert caption.remove("from side")
    assert caption.render() == text


def test_edits_match_tags_by_key_and_never_duplicate() -> None:
    caption = CaptionText.parse("qz7, Red_Shirt, earrings, red shirt\n")
    assert not caption.add("red shirt")
    assert caption.remove("RED SHIRT")
    assert caption.render() == "qz7, earrings\n"
    assert caption.replace("earrings", "jewelry") and caption.render() == "qz7, jewelry\n"
    assert caption.replace("jewelry", "qz7") and caption.render() == "qz7\n"
    assert not caption.replace("absent", "x")
    kaomoji = CaptionText.parse("^_^, smile")
    assert not kaomoji.remove("^ ^") and kaomoji.remove("^_^") and kaomoji.render() == "smile"


def test_style_puts_prefix_first_once_and_drops_undesired() -> None:
    style = CaptionStyle.from_text(prefix="qz7, woman,", undesired="nose, lips, 1girl")
    generated = ["1girl", "Woman", "long_hair", "nose", "smile", "long hair"]
    assert style.compose(generated) == "qz7, woman, long_hair, smile"
    assert style.compose(["smile"], existing="qz7, 1girl, from side") == (
        "qz7, woman, 1girl, from side, smile"
    )
    assert unique_tags(["a", "A", "b_c", "b c", ""]) == ["a", "b_c"]


def test_frequencies_count_captions_not_repeats() -> None:
    counts = tag_frequencies(["qz7, red_shirt, Red shirt", "qz7, smile", "qz7"])
    assert counts == {"qz7": 3, "red shirt": 1, "smile": 1}


def test_dry_run_shows_diff_then_write_applies_and_remove_restores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path / "img" / "10_qz7 woman")
    before = snapshot(data)
    assert main(["tags", str(tmp_path), "add", "from side", "--files", "*side*"]) == 0
    out = capsys.readouterr().out
    assert snapshot(data) == before
    assert "+qz7,woman,Red_Shirt,from side" in out
    assert "+\ufeffqz7, woman, earrings, looking at viewer, from side," in out
    assert "2 of 2 caption files would change" in out and "1 matching images have no" in out

    assert main(["tags", str(tmp_path), "add", "from side", "--files", "*side*", "--write"]) == 0
    after = snapshot(data)
    assert after["02_side.txt"] == b"qz7,woman,Red_Shirt,from side"
    assert after["03_side_b.txt"] == (
        b"\xef\xbb\xbfqz7, woman, earrings, looking at viewer, from side,\r\n"
    )
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"02_side.txt", "03_side_b.txt"}
    assert not (data / "06_side_uncaptioned.txt").exists()

    assert main(["tags", str(tmp_path), "remove", "from side", "--write"]) == 0
    assert snapshot(data) == before


def test_remove_and_replace_across_all_files(tmp_path: Path) -> None:
    data = make_dataset(tmp_path)
    before = snapshot(data)
    assert main(["tags", str(data), "remove", "earrings, smile", "--write"]) == 0
    assert (data / "01_front.txt").read_bytes() == b"qz7, woman\n"
    assert (data / "03_side_b.txt").read_bytes() == (
        b"\xef\xbb\xbfqz7, woman, looking at viewer,\r\n"
    )
    assert main(["tags", str(data), "replace", "red shirt", "blue dress", "--write"]) == 0
    assert (data / "02_side.txt").read_bytes() == b"qz7,woman,blue dress"
    untouched = {"04_back.txt", "05_empty.txt", "04_back.png", "06_side_uncaptioned.png"}
    assert all(snapshot(data)[name] == before[name] for name in untouched)


def test_listing_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path)
    before = snapshot(data)
    assert main(["tags", str(data)]) == 0
    lines = capsys.readouterr().out.splitlines()
    cells = [line.split("│") for line in lines if line.count("│") == 4]
    counts = {row[1].strip(): int(row[2]) for row in cells}
    expected = {"qz7": 4, "woman": 4, "earrings": 2, "smile": 1, "looking at viewer": 1}
    assert counts == {**expected, "Red Shirt": 1}
    assert main(["tags", str(data), "add", "x", "--files", "*nothing*"]) == 2
    assert "no image matches --files" in capsys.readouterr().err
    assert main(["tags", str(data), "add", " , "]) == 2
    assert "no tag given" in capsys.readouterr().err
    assert snapshot(data) == before
