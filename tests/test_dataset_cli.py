"""The `lorakit dataset` commands end to end, and bad input that must never show a traceback."""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from lorakit.cli.main import main
from tests.helpers.photos import draw_photo


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dataset", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path: Path, side: int = 20000) -> None:
    """A valid PNG whose header says side×side (1-bit grey), in a few hundred bytes."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    idat = zlib.compress(row * 16)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat)
    path.write_bytes(png + _chunk(b"IEND", b""))


def _photos(folder: Path, count: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        draw_photo(i, (320, 320)).save(folder / f"p{i}.png")
    return folder


def _assert_one_line_error(code: int, err: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lorakit: error: ")


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "dataset" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["dataset", "--help"])
    out = capsys.readouterr().out
    assert all(step in out for step in ("scan", "lint", "prep", "plan"))


def _missing(tmp: Path) -> Path:
    return tmp / "nope"


def _empty(tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


def _abc_name(tmp: Path) -> Path:
    _photos(tmp / "img" / "abc_name")
    return tmp / "img"


def _latin1_caption(tmp: Path) -> Path:
    folder = _photos(tmp / "photos")
    (folder / "p0.txt").write_bytes("sks, café".encode("latin-1"))
    return folder


# Every command that reads a dataset folder, as argv after `dataset` (OUT: an output folder).
FOLDER_COMMANDS = {
    "scan": ["scan", "DIR"],
    "lint": ["lint", "DIR"],
    "lint-faces": ["lint", "DIR", "--faces"],
    "prep": ["prep", "DIR", "OUT", "--trigger", "sks", "--class", "man"],
    "prep-face": ["prep", "DIR", "OUT", "--trigger", "sks", "--class", "man", "--crop", "face"],
    "prep-fix": ["prep", "DIR", "OUT", "--trigger", "sks", "--class", "man", "--fix-orientation"],
    "plan": ["plan", "DIR"],
}


def _argv(command: str, folder: Path, out: Path) -> list[str]:
    swap = {"DIR": str(folder), "OUT": str(out)}
    return [swap.get(arg, arg) for arg in FOLDER_COMMANDS[command]]


@pytest.mark.parametrize("make", [_missing, _empty, _abc_name, _latin1_caption])
@pytest.mark.parametrize("command", list(FOLDER_COMMANDS))
def test_bad_folders_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: Callable[[Path], Path], command: str
) -> None:
    code, _, err = _run(capsys, *_argv(command, make(tmp_path), tmp_path / "out"))
    _assert_one_line_error(code, err)
    assert not (tmp_path / "out").exists()


def _zero_byte(folder: Path) -> Path:
    (folder / "zero.png").write_bytes(b"")
    return folder / "zero.png"


def _text_as_jpg(folder: Path) -> Path:
    (folder / "page.jpg").write_text("<html>saved web page</html>", encoding="utf-8")
    return folder / "page.jpg"


def _bomb(folder: Path) -> Path:
    _bomb_png(folder / "bomb.png")
    return folder / "bomb.png"


def _over_our_limit(folder: Path) -> Path:
    """121 MP: Pillow only warns, lorakit's own 100 MP guard must refuse it."""
    _bomb_png(folder / "huge.png", side=11000)
    return folder / "huge.png"


@pytest.fixture(params=[_zero_byte, _text_as_jpg, _bomb, _over_our_limit])
def bad_image(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path]:
    """(folder, bad file): two good photos and one of the issue's bad files."""
    folder = _photos(tmp_path / "photos")
    return folder, request.param(folder)


@pytest.mark.parametrize("command", ["prep", "prep-face", "prep-fix"])
def test_bad_images_stop_prep_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_image: tuple[Path, Path], command: str
) -> None:
    folder, bad = bad_image
    code, _, err = _run(capsys, *_argv(command, folder, tmp_path / "out"))
    _assert_one_line_error(code, err)
    assert str(bad) in err


@pytest.mark.parametrize("command", ["lint", "lint-faces"])
def test_bad_images_are_one_lint_finding_each(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_image: tuple[Path, Path], command: str
) -> None:
    folder, bad = bad_image
    code, out, err = _run(capsys, *_argv(command, folder, tmp_path / "out"), "--json")
    assert code == 1 and err == ""
    about_bad = [f for f in json.loads(out)["findings"] if f["path"] == str(bad)]
    assert [(f["rule"], f["severity"]) for f in about_bad] == [("unreadable", "error")]
    assert "\n" not in about_bad[0]["message"] + about_bad[0]["fix"]


def test_bomb_header_is_really_20000_square(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _bomb_png(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(tmp_path / "bomb.png") as image:
        assert image.size == (20000, 20000)


def test_lint_exit_status_and_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = _photos(tmp_path / "photos", 3)
    code, out, _ = _run(capsys, "lint", str(folder), "--family", "sd15")
    assert code == 0 and "image-count" in out and "below-native" in out
    draw_photo(9, (100, 120)).save(folder / "tiny.png")
    code, out, _ = _run(capsys, "lint", str(folder))
    assert code == 1 and "too-small" in out and "→ replace it with a larger" in out
    assert "1 error, 5 warnings, 0 info" in out  # 3 below-native, few images, no captions


@pytest.mark.parametrize("command", ["scan", "plan"])
def test_scan_and_plan_name_each_bad_image_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, bad_image: tuple[Path, Path], command: str
) -> None:
    folder, bad = bad_image
    code, out, err = _run(capsys, *_argv(command, folder, tmp_path / "out"))
    assert code == 0 and err == ""
    lines = [line for line in out.splitlines() if bad.name in line]
    assert len(lines) == 1 and lines[0].startswith(f"{bad.name}: ")
    assert "remove it" in lines[0] or "downscale it" in lines[0]
    assert not any("p0.png" in line or "p1.png" in line for line in out.splitlines())


def test_scan_table(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _photos(tmp_path / "img" / "12_sks dog", 3)
    code, out, _ = _run(capsys, "scan", str(tmp_path))
    assert code == 0 and "sks dog" in out and "kohya" in out and "36" in out


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--images", "42", "--repeats", "10", "--epochs", "8"], "= 3360 steps"),
        (["--images", "32", "--epochs", "10", "--target-steps", "4800"], "= 15 repeats"),
        (
            ["--images", "42", "--repeats", "10", "--epochs", "8", "--batch-size", "4"],
            "= 105 steps per",
        ),
    ],
)
def test_plan_numbers(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> None:
    code, out, _ = _run(capsys, "plan", *argv)
    assert code == 0 and expected in out


def test_plan_counts_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _photos(tmp_path / "img" / "12_sks dog", 3)
    code, out, _ = _run(capsys, "plan", str(tmp_path), "--epochs", "2")
    assert code == 0 and "3 images × 12 repeats" in out and "= 72 steps" in out


def test_plan_without_images_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "plan", "--epochs", "3")
    _assert_one_line_error(code, err)


def test_prep_square_flag(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    folder = _photos(tmp_path / "photos")
    draw_photo(7, (400, 320)).save(folder / "wide.png")
    argv = ["prep", str(folder), str(tmp_path / "out"), "--trigger", "sks", "--class", "dog"]
    code, out, _ = _run(capsys, *argv, "--square", "--repeats", "4")
    assert code == 0 and "3 images, 4 repeats" in out
    with Image.open(tmp_path / "out" / "img" / "4_sks dog" / "sks_003.png") as image:
        assert image.size == (320, 320)
    code, _, err = _run(capsys, *argv, "--square", "--crop", "face")
    _assert_one_line_error(code, err)
