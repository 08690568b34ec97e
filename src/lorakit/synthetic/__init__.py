"""A small procedural world: scenes with known attributes, the subjects LoRAs learn, and a
classifier that judges generated images. The tiny base model is pretrained on it, the demo
teaches one of its subjects, and `bench/quality.py` scores LoRAs with it."""
