"""Loading the checkpoint to evaluate: a base or merged model folder, a hub model, or a LoRA adapter folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from peft import PeftModel
from transformers import PreTrainedModel, ProcessorMixin
from trl import ModelConfig

from vlm import load_model_and_processor, load_processor


def adapter_base(path: str | Path) -> str | None:
    """The base model named by the LoRA adapter saved in ``path``, or None when ``path`` holds no adapter."""
    config_file = Path(path) / "adapter_config.json"
    if not config_file.is_file() or (Path(path) / "config.json").is_file():
        return None
    base = json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{config_file} names no base_model_name_or_path; merge the adapter or fix its config")
    return base


def load_checkpoint(
    model_args: ModelConfig, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a model for inference (eval mode) and its processor, as `vlm.load_model_and_processor` does.

    When ``model_args.model_name_or_path`` is a LoRA adapter folder (``adapter_config.json`` and no
    ``config.json``), its base model is loaded with the same flags, the adapter applied and, unless the base is
    quantized, merged in; the processor saved beside the adapter is used when there is one.
    """
    path = model_args.model_name_or_path
    base = adapter_base(path) if path else None
    if base is None:
        return load_model_and_processor(model_args, min_pixels=min_pixels, max_pixels=max_pixels)
    model, processor = load_model_and_processor(
        replace(model_args, model_name_or_path=base), min_pixels=min_pixels, max_pixels=max_pixels
    )
    model = PeftModel.from_pretrained(model, path)
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        model = model.merge_and_unload()
    model.eval()
    if (Path(path) / "processor_config.json").is_file():
        processor = load_processor(str(path), config=model.config, min_pixels=min_pixels, max_pixels=max_pixels)
    return model, processor
