"""Configs of tiny, randomly initialised VLMs of real architectures (a few million parameters).

They are the embedded default model and the fixtures of the tracer's tests: the same code paths as
the hub checkpoints, at a size that trains on a laptop CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    LlavaConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
    Qwen3VLConfig,
)

CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "qwen2_5_vl": Qwen2_5_VLConfig,
    "qwen2_vl": Qwen2VLConfig,
    "qwen3_vl": Qwen3VLConfig,
    "llava": LlavaConfig,
}
FAMILIES = tuple(CONFIG_CLASSES)


@dataclass(frozen=True)
class TinyTokenIds:
    """Ids of the special tokens a tiny config must know about (the video and vision-span ids: Qwen families only)."""

    vocab_size: int
    pad: int
    bos: int
    eos: int
    image: int
    video: int | None = None
    vision_start: int | None = None
    vision_end: int | None = None


def tiny_model_config(
    family: str,
    ids: TinyTokenIds,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vision_hidden_size: int = 64,
    vision_depth: int = 2,
    initializer_range: float | str = 0.02,
    vision_window: int = 2,
    vision_full_attention: bool = True,
    intermediate_size: int | None = None,
    vision_patch_size: int | None = None,
) -> PretrainedConfig:
    """Return the config of a tiny ``family`` model (one of ``FAMILIES``) with grouped-query attention.

    The defaults (about 1.5M parameters with a 1k vocabulary) learn the synthetic VQA task on a CPU in minutes.
    LLaVA keeps the LLaVA-1.5 feature selection (``"default"``: the CLS token is dropped), so its image tokens
    form a square patch grid, as the Qwen families' merged patches do. Weights start at std ``initializer_range``
    (the Hub default 0.02), or at 1/sqrt(width) of each tower with ``"width"`` (text 0.088, vision 0.125 at the
    default sizes).

    Qwen2.5-VL only: ``vision_window`` is the side, in merged image tokens, of the vision tower's attention windows
    (the Hub models use 4: 112 px), and ``vision_full_attention`` makes the last vision block attend across the whole
    image as the Hub models' full-attention blocks do. With ``vision_window=1`` and no full-attention block each
    image token is computed from its own 28 x 28 pixels only, so a map over image tokens is a map over image regions
    (the grounded base model, ``vlm/tiny_base/``). ``intermediate_size`` defaults to twice ``hidden_size``.
    ``vision_patch_size`` (Qwen3-VL only; default 16, the hub's) can be 14 so that a merged token covers 28 x 28
    pixels as in the other Qwen families; a Qwen3-VL tower of depth 0 has no DeepStack features.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny model family {family!r}; choose one of {', '.join(FAMILIES)}")
    if family != "llava" and None in (ids.video, ids.vision_start, ids.vision_end):
        raise ValueError(f"{family} needs the video, vision_start and vision_end token ids; got {ids}")
    if vision_window < 1:
        raise ValueError(f"vision_window must be >= 1 merged token, got {vision_window}")
    head_dim = hidden_size // num_heads
    # 0.02 is 1/sqrt(width) for widths near 2500; at these widths it starts every attention nearly uniform, and
    # "width" reads the image sooner (BENCHMARKS.md, "Tiny model initialisation").
    if initializer_range == "width":
        text_init, vision_init = hidden_size**-0.5, vision_hidden_size**-0.5
    elif isinstance(initializer_range, (int, float)) and initializer_range > 0:
        text_init = vision_init = float(initializer_range)
    else:
        raise ValueError(f"initializer_range must be a std > 0 or 'width', got {initializer_range!r}")
    text = {
        "initializer_range": text_init,
        "vocab_size": ids.vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size or 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_kv_heads,
        "max_position_embeddings": 16384,
        "rms_norm_eps": 1e-6,
        "pad_token_id": ids.pad,
        "bos_token_id": ids.bos,
        "eos_token_id": ids.eos,
    }
    # mrope splits the rotary half-dimension into (temporal, height, width) sections.
    half = head_dim // 2
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [half - 2 * (half // 3), half // 3, half // 3],
    }
    text_extra = {
        "qwen2_vl": {"rope_parameters": rope},
        "qwen2_5_vl": {"rope_parameters": rope},
        "qwen3_vl": {"head_dim": head_dim, "rope_parameters": {**rope, "mrope_interleaved": True}},
        "llava": {"model_type": "llama", "head_dim": head_dim},
    }[family]
    qwen_vision = {
        "depth": vision_depth,
        "num_heads": 2,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "initializer_range": vision_init,
    }
    widths = {
        "hidden_size": vision_hidden_size,
        "intermediate_size": 2 * vision_hidden_size,
        "out_hidden_size": hidden_size,
    }
    vision = {
        "qwen2_vl": {**qwen_vision, "embed_dim": vision_hidden_size, "hidden_size": hidden_size, "mlp_ratio": 2},
        "qwen2_5_vl": {
            **qwen_vision,
            **widths,
            "window_size": vision_window * 28,
            "fullatt_block_indexes": [vision_depth - 1] if vision_full_attention else [],
        },
        "qwen3_vl": {
            **qwen_vision,
            **widths,
            "patch_size": vision_patch_size or 16,
            "num_position_embeddings": 144,  # a 12 x 12 grid: the patches of the largest (6 x 6 merged) image
            "deepstack_visual_indexes": [0] if vision_depth else [],
        },
        "llava": {
            "model_type": "clip_vision_model",
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": vision_depth,
            "num_attention_heads": 2,
            "image_size": 112,
            "patch_size": 14,
            "projection_dim": vision_hidden_size,
            "initializer_range": vision_init,
        },
    }[family]
    if family == "llava":
        top = {"vision_feature_layer": -1, "vision_feature_select_strategy": "default", "pad_token_id": ids.pad}
    else:
        top = {
            "initializer_range": text_init,
            "video_token_id": ids.video,
            "vision_start_token_id": ids.vision_start,
            "vision_end_token_id": ids.vision_end,
        }
    return CONFIG_CLASSES[family](
        text_config={**text, **text_extra}, vision_config=vision, image_token_id=ids.image, **top
    )
