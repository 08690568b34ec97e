"""WD14 tagging end to end: a real ONNX graph in the release layout, real images on disk.

The tiny tagger averages the NHWC input over the image, scales it to 0–1, and maps the
three channel means through a matrix to per-tag logits, then a sigmoid. For a solid
square image the expected probabilities therefore follow from the colour and the
matrix alone, which is how every expectation below is computed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from lorakit.captioning.wd14 import TagThresholds, WD14Tagger
from lorakit.cli.main import main
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError

TAGS = [
    ("general", 9),
    ("sensitive", 9),
    ("questionable", 9),
    ("explicit", 9),
    ("1girl", 0),
    ("red_shirt", 0),
    ("blue_sky", 0),
    ("nose", 0),
    ("^_^", 0),
    ("woman", 0),
    ("lips", 0),
    ("hatsune_miku", 4),
    ("solo", 0),
]
# Rows: the logits a pure blue, green and red image gets (input is BGR, so row 0 = blue).
WEIGHTS = np.array(
    [
        [2.0, -1.0, -3.0, -4.0, 3.0, -4.0, 4.0, 1.0, -4.0, 0.2, -4.0, 4.0, -1.0],
        [-1.0, 2.0, -3.0, -4.0, 1.0, -4.0, -4.0, -4.0, 3.0, -4.0, 1.5, 1.0, -0.3],
        [3.0, -2.0, -3.0, -4.0, 2.5, 4.0, -4.0, 0.5, -4.0, 1.0, 0.8, -4.0, 0.0],
    ],
    dtype=np.float32,
)
COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def build_tagger(folder: Path, size: int = 16, batch: int | str = "batch") -> Path:
    """Write model.onnx + selected_tags.csv the way the SmilingWolf releases lay them out."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(TAGS)
    nodes = [
        helper.make_node("ReduceMean", ["input_1:0"], ["mean"], axes=[1, 2], keepdims=0),
        helper.make_node("Mul", ["mean", "scale"], ["unit"]),
        helper.make_node("MatMul", ["unit", "weights"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["predictions_sigmoid"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_tagger",
        [helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("predictions_sigmoid", TensorProto.FLOAT, [batch, n])],
        initializer=[
            helper.make_tensor("scale", TensorProto.FLOAT, [1], [1 / 255]),
            helper.make_tensor("weights", TensorProto.FLOAT, [3, n], WEIGHTS.flatten().tolist()),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    with (folder / "selected_tags.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["tag_id", "name", "category", "count"])
        for index, (name, category) in enumerate(TAGS):
            writer.writerow([1000 + index, name, category, 500 - index])
    return folder


def expected_probabilities(bgr_means: tuple[float, float, float]) -> np.ndarray:
    return 1 / (1 + np.exp(-(np.array(bgr_means) @ WEIGHTS)))


def expected_tags(
    rgb: tuple[int, int, int], general: float, character: float, ratings: bool = False
) -> list[str]:
    """Tags a solid image should get, most confident first, names as they are written."""
    probs = expected_probabilities((rgb[2] / 255, rgb[1] / 255, rgb[0] / 255))
    picked = [
        i
        for i, (_, category) in enumerate(TAGS)
        if (category == 0 and probs[i] >= general) or (category == 4 and probs[i] >= character)
    ]
    if ratings:
        picked.append(max(range(4), key=lambda i: probs[i]))
    picked.sort(key=lambda i: -probs[i])
    names = [TAGS[i][0] for i in picked]
    return [name if name == "^_^" else name.replace("_", " ") for name in names]


@pytest.fixture(scope="module")
def tagger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tagger(tmp_path_factory.mktemp("wd14") / "wd-tiny-tagger")


def make_dataset(folder: Path, names: list[str], size: int = 32) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        Image.new("RGB", (size, size), COLOURS[name]).save(folder / f"{index:02d}_{name}.png")
    return folder


def caption_of(folder: Path, stem: str) -> str:
    return (folder / f"{stem}.txt").read_text(encoding="utf-8")


@pytest.mark.parametrize(("general", "character"), [(0.35, 0.85), (0.6, 0.7)])
def test_thresholds_prefix_undesired_and_batches(
    tagger_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    general: float,
    character: float,
) -> None:
    names = ["red", "blue", "green", "red", "blue"]
    data = make_dataset(tmp_path / "photos", names)
    rc = main(
        [
            "caption",
            str(data),
            "--tagger",
            str(tagger_dir),
            "--prefix",
            "qz7, woman",
            "--undesired",
            "nose, lips",
            "--general-threshold",
            str(general),
            "--character-threshold",
            str(character),
            "--batch-size",
            "2",
        ]
    )
    assert rc == 0
    expected_counts: dict[str, int] = {}
    for index, name in enumerate(names):
        tags = expected_tags(COLOURS[name], general, character)
        body = [t for t in tags if t not in {"nose", "lips", "woman"}]
        assert caption_of(data, f"{index:02d}_{name}") == ", ".join(["qz7", "woman", *body]) + "\n"
        for tag in ["qz7", "woman", *body]:
            expected_counts[tag] = expected_counts.get(tag, 0) + 1
    rows = [line.split("│") for line in capsys.readouterr().out.splitlines()]
    summary = {row[1].strip(): int(row[2]) for row in rows if len(row) == 5}
    assert summary == expected_counts  # the tag frequency summary, one row per tag
    green = caption_of(data, "02_green")
    assert "^_^" in green
    assert ("hatsune miku" in green) == (character <= 0.73)


def test_ratings_are_opt_in_and_sorted_by_confidence(tagger_dir: Path, tmp_path: Path) -> None:
    data = make_dataset(tmp_path, ["red", "green"])
    base = ["caption", str(data), "--tagger", str(tagger_dir)]
    assert main(base) == 0
    assert caption_of(data, "00_red").strip() == ", ".join(
        expected_tags(COLOURS["red"], 0.35, 0.85)
    )
    assert "general" not in caption_of(data, "00_red")
    assert main([*base, "--include-ratings", "--overwrite"]) == 0
    for index, name in enumerate(["red", "green"]):
        expected = expected_tags(COLOURS[name], 0.35, 0.85, ratings=True)
        assert caption_of(data, f"{index:02d}_{name}").strip() == ", ".join(expected)
    assert "general" in caption_of(data, "00_red") and "sensitive" in caption_of(data, "01_green")


def test_padding_resize_and_fixed_batch_model(tmp_path: Path) -> None:
    """A wide image is centred on white before resizing; a batch-1 model still takes batches."""
    fixed = WD14Tagger(build_tagger(tmp_path / "fixed", size=16, batch=1))
    dynamic = WD14Tagger(build_tagger(tmp_path / "dynamic", size=16))
    assert (fixed.input_size, fixed.max_batch, dynamic.max_batch) == (16, 1, None)
    wide = Image.new("RGB", (48, 24), COLOURS["red"])
    square = Image.new("RGB", (20, 20), COLOURS["blue"])
    probs = fixed.probabilities([wide, square, wide])
    assert probs.shape == (3, len(TAGS))
    # Half the padded square is white: channel means are B = G = 0.5, R = 1.
    np.testing.assert_allclose(probs[0], expected_probabilities((0.5, 0.5, 1.0)), atol=0.02)
    np.testing.assert_allclose(probs[1], expected_probabilities((1.0, 0.0, 0.0)), atol=1e-4)
    np.testing.assert_allclose(dynamic.probabilities([wide, square, wide]), probs, atol=1e-5)


def test_transparent_pixels_are_tagged_as_white(tagger_dir: Path, tmp_path: Path) -> None:
    Image.new("RGBA", (32, 32), (0, 0, 255, 0)).save(tmp_path / "clear.png")
    assert main(["caption", str(tmp_path), "--tagger", str(tagger_dir)]) == 0
    white = expected_tags((255, 255, 255), 0.35, 0.85)
    assert caption_of(tmp_path, "clear").strip() == ", ".join(white)
    assert white != expected_tags(COLOURS["blue"], 0.35, 0.85)


def test_existing_captions_need_a_policy(
    tagger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path, ["red", "blue"])
    (data / "00_red.txt").write_text("qz7, my own words\n", encoding="utf-8")
    base = ["caption", str(data), "--tagger", str(tagger_dir), "--prefix", "qz7, woman"]
    assert main(base) == 2
    assert "--overwrite, --append or --skip" in capsys.readouterr().err
    assert not (data / "01_blue.txt").exists()

    assert main([*base, "--skip"]) == 0
    assert caption_of(data, "00_red") == "qz7, my own words\n"
    blue = [t for t in expected_tags(COLOURS["blue"], 0.35, 0.85) if t != "woman"]
    assert caption_of(data, "01_blue").strip() == ", ".join(["qz7", "woman", *blue])

    assert main([*base, "--append"]) == 0
    red = [t for t in expected_tags(COLOURS["red"], 0.35, 0.85) if t != "woman"]
    assert caption_of(data, "00_red").strip() == ", ".join(["qz7", "woman", "my own words", *red])
    assert caption_of(data, "01_blue").count("blue sky") == 1

    assert main([*base, "--overwrite"]) == 0
    assert caption_of(data, "00_red").strip() == ", ".join(["qz7", "woman", *red])


def test_trainer_reads_what_caption_writes(tagger_dir: Path, tmp_path: Path) -> None:
    """Default options on both sides: the trainer's own dataset code (a TOML config that
    names only the model and the run folder) trains on every caption `caption` wrote."""
    from lorakit.training.config import load_config
    from lorakit.training.data import build_items

    subset = make_dataset(tmp_path / "run" / "img" / "10_qz7 woman", ["red", "green", "blue"])
    (subset / "01_green.caption").write_text("a caption in another extension")
    run = ["caption", str(tmp_path / "run"), "--tagger", str(tagger_dir), "--prefix", "qz7"]
    assert main(run) == 0
    config_file = tmp_path / "train.toml"
    config_file.write_text(
        f'[model]\npath = "unused"\n[dataset]\npath = "{(tmp_path / "run").as_posix()}"\n',
        encoding="utf-8",
    )
    items = build_items(load_config(config_file), 64)
    captions = {item.path.name: item.caption for item in [*items.train, *items.validation]}
    assert sorted(captions) == ["00_red.png", "01_green.png", "02_blue.png"]
    for name, caption in captions.items():
        colour = name.split("_")[1].removesuffix(".png")
        assert caption == ", ".join(["qz7", *expected_tags(COLOURS[colour], 0.35, 0.85)])


def test_missing_or_broken_tagger_is_one_line(
    tagger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path / "photos", ["red"])
    assert main(["caption", str(data), "--tagger", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "model.onnx" in err and "selected_tags.csv" in err and "Hugging Face" in err
    half = tmp_path / "half"
    half.mkdir()
    (half / "model.onnx").write_bytes((tagger_dir / "model.onnx").read_bytes())
    assert main(["caption", str(data), "--tagger", str(half)]) == 2
    assert "missing selected_tags.csv" in capsys.readouterr().err
    bad = ["caption", str(data), "--tagger", str(tagger_dir), "--general-threshold", "1.5"]
    assert main(bad) == 2
    assert "general threshold 1.5" in capsys.readouterr().err
    assert list(data.glob("*.txt")) == []


def test_tag_list_must_match_the_model(tagger_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mismatch"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((tagger_dir / "model.onnx").read_bytes())
    lines = (tagger_dir / "selected_tags.csv").read_text().splitlines()
    (folder / "selected_tags.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(LorakitError, match=r"scores 13 tags but selected_tags\.csv lists 12"):
        WD14Tagger(folder, TagThresholds())


def test_other_extension_and_unreadable_image(
    tagger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_dataset(tmp_path, ["blue"])
    assert main(["caption", str(data), "--tagger", str(tagger_dir), "--ext", "caption"]) == 0
    expected = ", ".join(expected_tags(COLOURS["blue"], 0.35, 0.85))
    assert scan_dataset(data, caption_ext=".caption").records[0].caption == expected
    assert not list(data.glob("*.txt"))
    (data / "broken.png").write_bytes(b"not a png")
    assert main(["caption", str(data), "--tagger", str(tagger_dir), "--skip"]) == 2
    assert "broken.png: cannot read image" in capsys.readouterr().err
