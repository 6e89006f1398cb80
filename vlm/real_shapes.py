"""The hub VLMs' real shapes, cut to a few layers with random weights: real-scale tests without real weights.

Each entry carries the numbers of one hub model's public ``config.json`` and ``preprocessor_config.json`` (widths,
query and key/value heads, vocabulary, rope, vision tower, image processor) and is built by the same transformers
config classes as the tiny models (``vlm.tiny_configs.CONFIG_CLASSES``); only the depth of each tower is cut.

    model, processor = build_real_shape("qwen2_5_vl_7b", num_layers=2, vision_depth=2)

Sources: the ``config.json`` / ``preprocessor_config.json`` of the hub repositories named in ``RealShape.hub``
(the Qwen3-VL-4B numbers also as transformers' ``Qwen3VLConfig`` documents them). The pixel budget is the one of
the toolkit's 3B/7B recipes (``configs/grpo/qwen2_5_vl_{3b,7b}.yaml``: ``max_pixels: 262144``, 512 x 512).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (
    AutoModelForImageTextToText,
    CLIPImageProcessorPil,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    ProcessorMixin,
    Qwen2VLImageProcessorPil,
)
from transformers.initialization import no_init_weights
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

from .build_tiny import family_tokenizer
from .loading import image_only_processor_class
from .tiny_configs import CONFIG_CLASSES, TinyTokenIds

RECIPE_MAX_PIXELS = 262144  # configs/grpo/qwen2_5_vl_{3b,7b}.yaml and configs/sft/qwen2_5_vl_{3b,7b}_zero3.yaml


@dataclass(frozen=True)
class RealShape:
    """One hub model's shapes: text and vision config entries, top-level entries and image processor settings."""

    hub: str
    family: str
    text: dict
    vision: dict
    top: dict
    image_processor: dict = field(default_factory=dict)


# Qwen special tokens, the same in every Qwen2-VL / Qwen2.5-VL / Qwen3-VL config.json.
_QWEN_IDS = {
    "bos_token_id": 151643,  # <|endoftext|>
    "eos_token_id": 151645,  # <|im_end|>
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}
# Qwen2-VL / Qwen2.5-VL preprocessor_config.json: 14-px patches, 2 x 2 merge, min_pixels 56 * 56 (the recipes set
# max_pixels, the hub's 12845056 would give 16k tokens).
_QWEN2_PIXELS = {"patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, "min_pixels": 3136}
# Qwen3-VL preprocessor_config.json: 16-px patches, size.shortest_edge 65536 (min pixels), mean = std = 0.5.
_QWEN3_PIXELS = {
    "patch_size": 16,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "min_pixels": 65536,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
_QWEN2_TEXT = {"rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 32768}
_QWEN2_ROPE = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}
# Qwen2-VL vision tower (both sizes): 32 blocks of width 1280, 16 heads, MLP ratio 4, quick GELU.
_QWEN2_VISION = {"depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_act": "quick_gelu",
                 "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}  # fmt: skip
# Qwen2.5-VL vision tower (both sizes): 32 blocks of width 1280 with SwiGLU 3420, windows of 112 px (4 x 4 merged
# tokens) except the full-attention blocks 7, 15, 23, 31.
_QWEN2_5_VISION = {"depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16, "hidden_act": "silu",
                   "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
                   "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2}  # fmt: skip
_QWEN3_TEXT = {"head_dim": 128, "rms_norm_eps": 1e-6, "hidden_act": "silu", "max_position_embeddings": 262144}
_QWEN3_ROPE = {
    "rope_type": "default",
    "rope_theta": 5000000.0,
    "mrope_section": [24, 20, 20],
    "mrope_interleaved": True,
}
_QWEN3_VISION = {"hidden_act": "gelu_pytorch_tanh", "num_heads": 16, "patch_size": 16, "spatial_merge_size": 2,
                 "temporal_patch_size": 2, "num_position_embeddings": 2304}  # fmt: skip

REAL_SHAPES: dict[str, RealShape] = {
    "qwen2_vl_2b": RealShape(
        hub="Qwen/Qwen2-VL-2B-Instruct",
        family="qwen2_vl",
        text={
            **_QWEN2_TEXT,
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "rope_parameters": _QWEN2_ROPE,
        },
        vision={**_QWEN2_VISION, "hidden_size": 1536},
        top={**_QWEN_IDS, "tie_word_embeddings": True},
        image_processor=_QWEN2_PIXELS,
    ),
    "qwen2_vl_7b": RealShape(
        hub="Qwen/Qwen2-VL-7B-Instruct",
        family="qwen2_vl",
        text={
            **_QWEN2_TEXT,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "rope_parameters": _QWEN2_ROPE,
        },
        vision={**_QWEN2_VISION, "hidden_size": 3584},
        top={**_QWEN_IDS, "tie_word_embeddings": False},
        image_processor=_QWEN2_PIXELS,
    ),
    "qwen2_5_vl_3b": RealShape(
        hub="Qwen/Qwen2.5-VL-3B-Instruct",
        family="qwen2_5_vl",
        text={
            **_QWEN2_TEXT,
            "hidden_size": 2048,
            "intermediate_size": 11008,
            "num_hidden_layers": 36,
            "num_attention_heads": 16,
            "num_key_value_heads": 2,
            "vocab_size": 151936,
            "max_position_embeddings": 128000,
            "rope_parameters": _QWEN2_ROPE,
        },
        vision={**_QWEN2_5_VISION, "out_hidden_size": 2048},
        top={**_QWEN_IDS, "tie_word_embeddings": True},
        image_processor=_QWEN2_PIXELS,
    ),
    "qwen2_5_vl_7b": RealShape(
        hub="Qwen/Qwen2.5-VL-7B-Instruct",
        family="qwen2_5_vl",
        text={
            **_QWEN2_TEXT,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "vocab_size": 152064,
            "max_position_embeddings": 128000,
            "rope_parameters": _QWEN2_ROPE,
        },
        vision={**_QWEN2_5_VISION, "out_hidden_size": 3584},
        top={**_QWEN_IDS, "tie_word_embeddings": False},
        image_processor=_QWEN2_PIXELS,
    ),
    "qwen3_vl_2b": RealShape(
        hub="Qwen/Qwen3-VL-2B-Instruct",
        family="qwen3_vl",
        text={
            **_QWEN3_TEXT,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "vocab_size": 151936,
            "rope_parameters": _QWEN3_ROPE,
        },
        vision={
            **_QWEN3_VISION,
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
        },
        top={**_QWEN_IDS, "tie_word_embeddings": True},
        image_processor=_QWEN3_PIXELS,
    ),
    "qwen3_vl_4b": RealShape(
        hub="Qwen/Qwen3-VL-4B-Instruct",
        family="qwen3_vl",
        text={
            **_QWEN3_TEXT,
            "hidden_size": 2560,
            "intermediate_size": 9728,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 151936,
            "rope_parameters": _QWEN3_ROPE,
        },
        vision={
            **_QWEN3_VISION,
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "out_hidden_size": 2560,
            "deepstack_visual_indexes": [5, 11, 17],
        },
        top={**_QWEN_IDS, "tie_word_embeddings": True},
        image_processor=_QWEN3_PIXELS,
    ),
    "qwen3_vl_8b": RealShape(
        hub="Qwen/Qwen3-VL-8B-Instruct",
        family="qwen3_vl",
        text={
            **_QWEN3_TEXT,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "vocab_size": 151936,
            "rope_parameters": _QWEN3_ROPE,
        },
        vision={
            **_QWEN3_VISION,
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "out_hidden_size": 4096,
            "deepstack_visual_indexes": [8, 16, 24],
        },
        top={**_QWEN_IDS, "tie_word_embeddings": False},
        image_processor=_QWEN3_PIXELS,
    ),
    "llava_1_5_7b": RealShape(
        hub="llava-hf/llava-1.5-7b-hf",
        family="llava",
        # Vicuna-7B (Llama): multi-head attention (32 key/value heads), 32000 tokens + image and pad tokens.
        text={
            "model_type": "llama",
            "hidden_size": 4096,
            "intermediate_size": 11008,
            "num_hidden_layers": 32,
            "num_attention_heads": 32,
            "num_key_value_heads": 32,
            "vocab_size": 32064,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 4096,
            "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
        },
        # CLIP ViT-L/14 at 336 px: 24 x 24 patches, 24 blocks of width 1024, 16 heads.
        vision={
            "model_type": "clip_vision_model",
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_hidden_layers": 24,
            "num_attention_heads": 16,
            "image_size": 336,
            "patch_size": 14,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        top={
            "image_token_id": 32000,
            "pad_token_id": 32001,
            "vision_feature_layer": -2,
            "vision_feature_select_strategy": "default",
            "projector_hidden_act": "gelu",
            "tie_word_embeddings": False,
        },
        # preprocessor_config.json: shortest edge to 336, centre crop 336 x 336, OpenAI CLIP mean and std.
        image_processor={
            "size": {"shortest_edge": 336},
            "crop_size": {"height": 336, "width": 336},
            "do_center_crop": True,
        },
    ),
}


# The tokenizer's training text: the real-shape models are driven by a few hundred token ids at most.
_TEXTS = (
    "What colour is the square? What shape is left of the circle? Answer with one word.",
    "<think>The red circle is at the top left, next to a blue square.</think>red",
    "<think>There are two green triangles and one yellow star below them.</think>two",
)
_POOL = 1_048_573  # a prime: rows of any width read the pool at shifting offsets


def initialise_fast(model: PreTrainedModel, seed: int = 0) -> None:
    """Random weights for ``model`` built under ``no_init_weights``, at the cost of a memory copy.

    Every linear, convolution and embedding weight is a window, at a random offset, of one pool of 2 x 1048573
    normal draws scaled to the config's ``initializer_range``, repeated over the tensor; biases are 0. Every other
    module (norms, rotary frequencies, ...) is initialised by the model's own ``_init_weights``.
    """
    generator = torch.Generator().manual_seed(seed)
    std = model.config.get_text_config().initializer_range
    pool = torch.randn(2 * _POOL, generator=generator) * std
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d, nn.Embedding)):
                flat = module.weight.view(-1)
                start = int(torch.randint(_POOL, (1,), generator=generator))
                for begin in range(0, flat.numel(), _POOL):
                    chunk = flat[begin : begin + _POOL]
                    chunk.copy_(pool[start : start + chunk.numel()])
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            else:
                model._init_weights(module)
    model.tie_weights()


def real_shape_config(
    name: str, num_layers: int = 2, vision_depth: int = 2, ids: TinyTokenIds | None = None
) -> PretrainedConfig:
    """The config of ``name`` (a key of ``REAL_SHAPES``) with ``num_layers`` decoder and ``vision_depth`` vision blocks.

    The cut keeps each tower's kinds of blocks: Qwen2.5-VL's last block attends across the image (the others in
    windows), Qwen3-VL's DeepStack takes the first ``min(3, vision_depth, num_layers)`` blocks, LLaVA still reads
    its features from the second-to-last CLIP block. ``ids`` replaces the hub's special token ids (vocabulary size
    kept) so that a small tokenizer can drive the model.
    """
    if name not in REAL_SHAPES:
        raise ValueError(f"unknown real shape {name!r}; choose one of {', '.join(REAL_SHAPES)}")
    if num_layers < 1 or vision_depth < 1:
        raise ValueError(f"num_layers and vision_depth must be >= 1, got {num_layers} and {vision_depth}")
    shape = REAL_SHAPES[name]
    text = {**shape.text, "num_hidden_layers": num_layers}
    vision = dict(shape.vision)
    top = dict(shape.top)
    if shape.family == "llava":
        vision["num_hidden_layers"] = vision_depth
    else:
        vision["depth"] = vision_depth
    if shape.family == "qwen2_5_vl":
        vision["fullatt_block_indexes"] = [vision_depth - 1]
    if shape.family == "qwen3_vl":
        vision["deepstack_visual_indexes"] = list(range(min(3, vision_depth, num_layers)))
    if ids is not None:
        top["image_token_id"] = ids.image
        if shape.family == "llava":
            top["pad_token_id"] = ids.pad
        else:
            top.update(
                bos_token_id=ids.bos,
                eos_token_id=ids.eos,
                video_token_id=ids.video,
                vision_start_token_id=ids.vision_start,
                vision_end_token_id=ids.vision_end,
            )
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in top:
            text[key] = top[key]
    return CONFIG_CLASSES[shape.family](text_config=text, vision_config=vision, **top)


def real_shape_image_processor(name: str, max_pixels: int = RECIPE_MAX_PIXELS) -> Qwen2VLImageProcessorPil:
    """The image processor of ``name`` as its hub repository sets it, with the recipes' ``max_pixels`` (Qwen only)."""
    shape = REAL_SHAPES[name]
    if shape.family == "llava":
        return CLIPImageProcessorPil(**shape.image_processor)
    return Qwen2VLImageProcessorPil(**shape.image_processor, max_pixels=max_pixels)


def build_real_shape(
    name: str,
    num_layers: int = 2,
    vision_depth: int = 2,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    max_pixels: int = RECIPE_MAX_PIXELS,
    texts: tuple[str, ...] = _TEXTS,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """``name``'s model, cut and randomly initialised in ``dtype``, and a processor with its real image settings.

    The processor's tokenizer is a small BPE trained on ``texts`` (default: the synthetic corpus) with the family's
    special tokens, whose ids the config takes; the embedding and lm_head keep the hub's vocabulary size. Weights
    are drawn by ``initialise_fast`` (a 7B-wide embedding drawn by ``normal_`` alone takes minutes on a busy CPU).
    """
    family = REAL_SHAPES[name].family
    tokenizer, ids, stop_ids = family_tokenizer(family, texts, vocab_size=1024)
    config = real_shape_config(name, num_layers, vision_depth, ids)
    with no_init_weights():
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype).eval()
    initialise_fast(model, seed)
    model.generation_config.pad_token_id = ids.pad
    model.generation_config.eos_token_id = stop_ids
    image_processor = real_shape_image_processor(name, max_pixels)
    if family == "llava":
        vision = config.vision_config
        processor = LlavaProcessor(
            image_processor=image_processor,
            tokenizer=tokenizer,
            patch_size=vision.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token
            chat_template=tokenizer.chat_template,
        )
    else:
        processor_class = image_only_processor_class(PROCESSOR_MAPPING[type(config)])
        processor = processor_class(
            image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
        )
    return model, processor


def example_inputs(
    processor: ProcessorMixin,
    size: tuple[int, int] = (1024, 768),
    completion: str = "<think>The red square is at the top left.</think>red",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """A one-image prompt with a random (width, height) ``size`` image, and ``completion`` then the end of the turn.

    Returns ``prompt_ids`` (1, P), ``prompt_mask``, ``completion_ids`` (1, C) and the processor's other inputs.
    """
    from PIL import Image

    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=torch.Generator().manual_seed(seed))
    image = Image.fromarray(pixels.to(torch.uint8).numpy())
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = dict(processor(text=[text], images=[image], return_tensors="pt"))
    end = processor.tokenizer.eos_token
    completion_ids = processor.tokenizer(completion + end, add_special_tokens=False, return_tensors="pt").input_ids
    return inputs.pop("input_ids"), inputs.pop("attention_mask"), completion_ids, inputs
