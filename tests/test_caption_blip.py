"""BLIP-style captioning end to end with a tiny random BLIP saved by `save_pretrained`.

The expected captions come from calling transformers' BLIP classes directly, one image at
a time, with the same generation settings; lorakit must produce the same text through
its Auto-class loading, its batching (batch size 2 over 3 images) and its caption files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
)

from lorakit.captioning.blip import GenerationSettings
from lorakit.cli.main import main
from lorakit.dataset.scan import scan_dataset
from lorakit.errors import LorakitError

WORDS = "a photo of woman man red blue shirt the with smile sitting outside hair dress sky"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
COLOURS = [(230, 30, 30), (30, 30, 230), (30, 200, 30)]


def build_blip(folder: Path) -> Path:
    """A 1-layer BLIP with a WordPiece vocabulary written here (BLIP's real tokenizer is BERT)."""
    vocab = [*SPECIAL, *WORDS.split(), "[DEC]"]
    source = folder / "vocab_source"
    source.mkdir(parents=True)
    (source / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer.from_pretrained(source, bos_token="[DEC]", local_files_only=True)
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    # A wide initialisation makes the random captions depend visibly on the image.
    layers = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "initializer_range": 0.3,
    }
    config = BlipConfig(
        vision_config={**layers, "num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        text_config={
            **layers,
            "num_attention_heads": 2,
            "vocab_size": len(vocab),
            "max_position_embeddings": 64,
            "encoder_hidden_size": 16,
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        initializer_range=0.3,
    )
    torch.manual_seed(0)
    model_dir = folder / "blip-tiny"
    BlipForConditionalGeneration(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_blip(tmp_path_factory.mktemp("blip"))


def reference_captions(
    model_dir: Path, images: list[Image.Image], settings: GenerationSettings
) -> list[str]:
    processor = BlipProcessor.from_pretrained(model_dir, local_files_only=True)
    model = BlipForConditionalGeneration.from_pretrained(model_dir, local_files_only=True).eval()
    texts = []
    for image in images:
        inputs = processor(images=image, return_tensors="pt")
        with torch.inference_mode():
            tokens = model.generate(
                **inputs,
                num_beams=settings.beams,
                min_length=settings.min_length,
                max_length=settings.max_length,
            )
        texts.append(processor.decode(tokens[0], skip_special_tokens=True).strip())
    return texts


def make_photos(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, colour in enumerate(COLOURS):
        image = Image.new("RGB", (40 + 8 * index, 36), colour)
        image.paste((255, 255, 255), (4 * index, 4, 4 * index + 12, 20))
        paths.append(folder / f"photo_{index}.jpg")
        image.save(paths[-1], quality=95)
    return paths


def test_caption_files_match_direct_generation(blip_dir: Path, tmp_path: Path) -> None:
    results = {}
    for settings in (GenerationSettings(3, 4, 6), GenerationSettings(1, 8, 9)):
        data = tmp_path / f"beams{settings.beams}"
        paths = make_photos(data)
        args = ["caption", str(data), "--captioner", str(blip_dir), "--prefix", "qz7, woman"]
        args += ["--beams", str(settings.beams), "--min-length", str(settings.min_length)]
        args += ["--max-length", str(settings.max_length), "--batch-size", "2"]
        assert main(args) == 0
        images = [Image.open(p).convert("RGB") for p in paths]
        expected = reference_captions(blip_dir, images, settings)
        written = [p.with_suffix(".txt").read_text(encoding="utf-8") for p in paths]
        assert written == [", ".join(["qz7", "woman", *filter(None, [t])]) + "\n" for t in expected]
        records = scan_dataset(data).records
        assert [r.caption for r in records] == [w.strip() for w in written]
        results[settings] = expected
    short, long = results.values()
    assert short != long
    assert len(set(short)) == len(short), "captions should differ per image to check batching"
    assert max(len(t.split()) for t in short) <= 5


def test_missing_captioner_files_are_named(
    blip_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_photos(tmp_path / "photos")
    assert main(["caption", str(tmp_path / "photos"), "--captioner", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.json" in err and "Hugging Face" in err
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_bytes((blip_dir / "config.json").read_bytes())
    assert main(["caption", str(tmp_path / "photos"), "--captioner", str(partial)]) == 2
    err = capsys.readouterr().err
    assert "missing weights" in err and "processor files" in err
    assert list((tmp_path / "photos").glob("*.txt")) == []


def test_generation_settings_are_checked() -> None:
    with pytest.raises(LorakitError, match="min length"):
        GenerationSettings(beams=2, min_length=20, max_length=10)
