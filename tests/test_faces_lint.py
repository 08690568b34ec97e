"""Face lint findings: no face, other people, faces cut by the border, faces too small."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from lorakit.dataset.faces import lint_faces
from lorakit.dataset.findings import Severity
from tests.test_faces_crop import FakeDetector, background, head, portrait
from tests.test_faces_mirror import write_set


def save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path


def rules(findings, path: Path) -> set[str]:
    return {f.rule for f in findings if f.path == path}


def test_real_photos_report_other_people_cut_faces_small_faces_and_no_face(tmp_path):
    alone = save(portrait((200, 150), 1.2, size=(700, 600)), tmp_path / "alone.png")
    pair = background("gradient", (800, 480), seed=1)
    pair.paste(head(1.2), (40, 100))
    pair.paste(head(1.1, mirrored=True), (420, 120))
    pair_path = save(pair, tmp_path / "pair.png")
    # Half the hair and the edge of the left cheek lie outside the photo. (Cut deeper,
    # the cascades no longer see a face at all, and "no-face" is reported instead.)
    cut = save(portrait((-74, 40), 1.0, size=(400, 400)), tmp_path / "cut.png")
    small = save(portrait((150, 120), 0.5, size=(500, 400), kind="noise"), tmp_path / "small.png")
    empty = save(background("noise", (400, 400), seed=5), tmp_path / "empty.png")

    findings = lint_faces([alone, pair_path, cut, small, empty], target_side=256)

    assert rules(findings, alone) == set()
    assert rules(findings, pair_path) == {"other-faces"}
    assert "face-cut" in rules(findings, cut)
    assert rules(findings, small) == {"face-too-small"}
    assert rules(findings, empty) == {"no-face"}
    for finding in findings:
        assert finding.severity is Severity.WARNING
        assert finding.message and finding.fix
        assert "\n" not in finding.message + finding.fix


def test_mirrored_selfies_are_lint_findings(tmp_path):
    paths = write_set(tmp_path, 6, {2})
    findings = lint_faces(paths, target_side=128)
    mirrored = [f for f in findings if f.rule == "mirrored"]
    assert [f.path for f in mirrored] == [paths[2]]
    assert "confidence" in mirrored[0].message


def test_cut_rule_counts_a_tenth_of_the_face_as_the_border_zone(tmp_path):
    path = save(Image.new("RGB", (1000, 1000)), tmp_path / "blank.png")
    cases = {
        (11, 400, 111, 500): False,  # 11 px from the left edge, zone 10 px
        (9, 400, 109, 500): True,
        (400, 400, 500, 500): False,
        (400, 891, 500, 991): True,  # 9 px from the bottom
        (889, 10, 989, 110): False,
    }
    for box, cut in cases.items():
        found = rules(lint_faces([path], 128, FakeDetector([box])), path)
        assert ("face-cut" in found) is cut, box


def test_small_rule_compares_the_face_crop_with_the_target_side(tmp_path):
    path = save(Image.new("RGB", (2000, 2000)), tmp_path / "blank.png")
    # A 200 px face gives a 200 × (1 + 2·0.6 + 0.2) = 480 px crop.
    face = FakeDetector([(800, 800, 1000, 1000)])
    assert "face-too-small" in rules(lint_faces([path], 512, face), path)
    assert "face-too-small" not in rules(lint_faces([path], 480, face), path)
    message = next(f.message for f in lint_faces([path], 960, face) if f.path == path)
    assert "200 px" in message and "480 px" in message and "2.0×" in message


def test_small_image_limits_the_crop_too(tmp_path):
    path = save(Image.new("RGB", (300, 300)), tmp_path / "small.png")
    found = rules(lint_faces([path], 512, FakeDetector([(100, 100, 160, 160)])), path)
    assert found == {"face-too-small"}
