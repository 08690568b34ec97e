"""`lorakit dataset prep --crop face / --fix-orientation` and `dataset lint --faces`, end to end."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lorakit.cli.main import main
from lorakit.dataset.faces import HaarFaceDetector
from tests.test_faces_crop import background, head, portrait
from tests.test_faces_mirror import write_set


def tree_hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def outputs(out: Path) -> list[Path]:
    return sorted(out.glob("img/*/*.png"))


def prep(src: Path, out: Path, *extra: str) -> int:
    return main(
        ["dataset", "prep", str(src), str(out), "--trigger", "sks", "--class", "person", *extra]
    )


def test_prep_crop_face_centres_on_the_head(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    portrait((60, 300), 1.3, size=(900, 700)).save(src / "a.png")
    portrait((560, 20), 1.1, size=(900, 700), kind="gradient").save(src / "b.png")
    background("noise", (500, 400), seed=2).save(src / "c.png")

    assert prep(src, tmp_path / "out", "--crop", "face", "--margin", "0.6", "--size", "256") == 0

    printed = capsys.readouterr().out
    assert "1 image(s) without a detected face" in printed
    crops = outputs(tmp_path / "out")
    assert len(crops) == 3
    detector = HaarFaceDetector()
    for path in crops[:2]:
        with Image.open(path) as image:
            assert image.size == (256, 256)
            faces = detector.detect(image)
        assert len(faces) == 1
        cx, cy = faces[0].center
        # Centred across; lower than the middle leaves room for the shoulders.
        assert abs(cx - 128) < 256 * 0.1
        assert 256 * 0.3 < cy < 256 * 0.5
        assert 256 / 3.2 < faces[0].side < 256 / 1.8


def test_fix_orientation_flips_the_mirrored_in_out_only(tmp_path, capsys):
    src = tmp_path / "src"
    paths = write_set(src, 6, {2})
    before = tree_hashes(src)

    assert prep(src, tmp_path / "out", "--fix-orientation") == 0

    assert tree_hashes(src) == before
    assert "1 mirrored image(s) flipped back" in capsys.readouterr().out
    written = outputs(tmp_path / "out")
    assert len(written) == len(paths)
    for i, (source, target) in enumerate(zip(paths, written, strict=True)):
        original = np.asarray(Image.open(source).convert("RGB"))
        result = np.asarray(Image.open(target).convert("RGB"))
        expected = original[:, ::-1] if i == 2 else original
        assert np.array_equal(result, expected), target.name


def test_without_fix_orientation_nothing_is_flipped(tmp_path):
    src = tmp_path / "src"
    paths = write_set(src, 4, {1})
    assert prep(src, tmp_path / "out") == 0
    for source, target in zip(paths, outputs(tmp_path / "out"), strict=True):
        assert np.array_equal(
            np.asarray(Image.open(source).convert("RGB")), np.asarray(Image.open(target))
        )


def test_lint_faces_reports_face_findings(tmp_path, capsys):
    folder = tmp_path / "photos"
    write_set(folder, 5, {3})
    pair = background("gradient", (800, 480), seed=1)
    pair.paste(head(1.2), (40, 100))
    pair.paste(head(1.1, mirrored=True), (420, 120))
    pair.save(folder / "pair.png")
    background("noise", (600, 600), seed=4).save(folder / "empty.png")

    main(["dataset", "lint", str(folder), "--faces", "--json"])

    report = json.loads(capsys.readouterr().out)
    by_rule: dict[str, set[str]] = {}
    for finding in report["findings"]:
        by_rule.setdefault(finding["rule"], set()).add(Path(finding["path"] or "").name)
    assert by_rule["other-faces"] == {"pair.png"}
    assert by_rule["no-face"] == {"empty.png"}
    assert by_rule["mirrored"] == {"photo_03.png"}
    assert "face-too-small" in by_rule


def test_lint_without_faces_runs_no_face_rules(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    background("noise", (600, 600), seed=4).save(folder / "empty.png")
    main(["dataset", "lint", str(folder), "--json"])
    rules = {f["rule"] for f in json.loads(capsys.readouterr().out)["findings"]}
    assert "no-face" not in rules


def bad_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "bad"
    folder.mkdir()
    portrait((100, 100), 1.2, size=(640, 560)).save(folder / "good.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a photo\n")
    return folder


def one_line_error(capsys, path_part: str) -> None:
    err = capsys.readouterr().err.strip()
    assert err.startswith("lorakit: error: ")
    assert "\n" not in err and "Traceback" not in err
    assert path_part in err


def test_lint_faces_reports_unreadable_files_and_checks_the_rest(tmp_path, capsys):
    folder = bad_folder(tmp_path)
    assert main(["dataset", "lint", str(folder), "--faces", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    unreadable = {Path(f["path"]).name for f in report["findings"] if f["rule"] == "unreadable"}
    assert unreadable == {"empty.png", "notes.jpg"}
    face_rules = {"no-face", "other-faces", "face-cut", "face-too-small", "mirrored"}
    flagged = {Path(f["path"]).name for f in report["findings"] if f["rule"] in face_rules}
    assert flagged <= {"good.png"}


@pytest.mark.parametrize(
    "options", [["--crop", "face"], ["--fix-orientation"], ["--crop", "face", "--fix-orientation"]]
)
def test_prep_with_faces_stops_on_a_bad_file_with_one_line(tmp_path, capsys, options):
    folder = bad_folder(tmp_path)
    before = tree_hashes(folder)
    assert prep(folder, tmp_path / "out", *options) == 2
    one_line_error(capsys, "empty.png")
    assert tree_hashes(folder) == before


def test_prep_negative_margin_is_one_line(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    portrait((100, 100), 1.2).save(src / "a.png")
    assert prep(src, tmp_path / "out", "--crop", "face", "--margin", "-1") == 2
    one_line_error(capsys, "margin")
