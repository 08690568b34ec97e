"""Plugging a YuNet `.onnx` detector in through `load_detector`.

No YuNet weights ship in a registry package, so the test builds a tiny ONNX graph with
YuNet's interface (input `input` [1, 3, H, W]; outputs cls/obj/bbox/kps for strides 8, 16
and 32, decoded by `cv2.FaceDetectorYN`). Its "face" is a bright 32 × 32 cell: the stride-32
scores are the cells' mean brightness, every other output is zero, so OpenCV decodes a
32 px box centred on the cell's top-left grid point.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper
from PIL import Image

from lorakit.dataset.faces import YuNetFaceDetector, face_crop_box, load_detector


def bright_cell_yunet(path: Path) -> Path:
    nodes = [helper.make_node("ReduceMean", ["input"], ["gray"], axes=[1], keepdims=1)]
    outputs = []
    for s in (8, 16, 32):
        nodes += [
            helper.make_node(
                "AveragePool", ["gray"], [f"pool{s}"], kernel_shape=[s, s], strides=[s, s]
            ),
            helper.make_node("Mul", [f"pool{s}", "zero"], [f"zero{s}"]),
            helper.make_node("Mul", [f"pool{s}", "unit" if s == 32 else "zero"], [f"score{s}"]),
            helper.make_node("Identity", [f"score{s}"], [f"cls_{s}"]),
            helper.make_node("Identity", [f"score{s}"], [f"obj_{s}"]),
            helper.make_node("Concat", [f"zero{s}"] * 4, [f"bbox_{s}"], axis=1),
            helper.make_node("Concat", [f"zero{s}"] * 10, [f"kps_{s}"], axis=1),
        ]
        outputs += [f"cls_{s}", f"obj_{s}", f"bbox_{s}", f"kps_{s}"]
    graph = helper.make_graph(
        nodes,
        "bright_cell_yunet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [
            helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, None, None, None])
            for o in outputs
        ],
        initializer=[
            helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
            helper.make_tensor("unit", TensorProto.FLOAT, [], [1 / 255]),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_a_yunet_model_path_plugs_in(tmp_path):
    detector = load_detector(bright_cell_yunet(tmp_path / "yunet.onnx"))
    assert isinstance(detector, YuNetFaceDetector)
    image = Image.new("RGB", (256, 192))
    image.paste((255, 255, 255), (64, 96, 96, 128))  # grid cell row 3, column 2
    [face] = detector.detect(image)
    # Centre at the grid point (2·32, 3·32), 32 px wide.
    assert (face.left, face.top, face.right, face.bottom) == (48, 80, 80, 112)
    assert face.score > 0.9


def test_large_photos_are_detected_at_analysis_size_and_mapped_back(tmp_path):
    detector = load_detector(bright_cell_yunet(tmp_path / "yunet.onnx"))
    image = Image.new("RGB", (2048, 1536))
    image.paste((255, 255, 255), (128, 192, 192, 256))  # a 32 px cell once halved to 1024
    [face] = detector.detect(image)
    assert (face.left, face.top, face.right, face.bottom) == (96, 160, 160, 224)
    box = face_crop_box(image, 0.6, detector)
    assert box is not None and box[2] - box[0] == round(64 * 2.4)
