"""network stage: LoRA modules injected by kohya names, saved, loaded, converted, verified."""
