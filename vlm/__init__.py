"""Vision-language model loading (dtype, attention, LoRA, QLoRA) and the tiny embedded default models."""

from .checkpoints import ExactResumeMixin, adapter_base, load_full_weights, resolve_resume_checkpoint
from .loading import (
    load_model_and_processor,
    load_processor,
    lora_config,
    merge_lora_adapter,
    model_input_size,
    set_pixel_budget,
    vision_module_names,
)
from .tiny_configs import FAMILIES, TinyTokenIds, tiny_model_config


def __getattr__(name: str):
    # Imported on first use so that `python -m vlm.build_tiny` does not find its module already imported.
    if name == "build_tiny_vlm":
        from .build_tiny import build_tiny_vlm

        return build_tiny_vlm
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FAMILIES",
    "ExactResumeMixin",
    "TinyTokenIds",
    "adapter_base",
    "build_tiny_vlm",
    "load_full_weights",
    "load_model_and_processor",
    "load_processor",
    "lora_config",
    "merge_lora_adapter",
    "model_input_size",
    "resolve_resume_checkpoint",
    "set_pixel_budget",
    "tiny_model_config",
    "vision_module_names",
]
