"""Vision-language model loading (dtype, attention, LoRA, QLoRA) and the tiny embedded default models."""

from .build_tiny import build_tiny_vlm
from .loading import (
    load_model_and_processor,
    load_processor,
    lora_config,
    merge_lora_adapter,
    set_pixel_budget,
    vision_module_names,
)
from .tiny_configs import FAMILIES, TinyTokenIds, tiny_model_config

__all__ = [
    "FAMILIES",
    "TinyTokenIds",
    "build_tiny_vlm",
    "load_model_and_processor",
    "load_processor",
    "lora_config",
    "merge_lora_adapter",
    "set_pixel_budget",
    "tiny_model_config",
    "vision_module_names",
]
