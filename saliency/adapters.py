"""Per-family adapters: where a VLM keeps its decoder layers, final norm, lm_head, image tokens and patch grid."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel


def unwrap_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside a PEFT or DDP wrapper."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def effective_weight(linear: nn.Module, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The weight a (possibly LoRA-wrapped, possibly quantized) linear layer really applies, optionally only ``rows``.

    Un-merged, enabled LoRA adapters add ``B @ A * scaling``; only the requested rows of ``B`` are used, so the
    rows of a vocabulary-sized layer never need the full delta.
    """
    from peft.tuners.lora import LoraLayer
    from peft.utils.integrations import dequantize_module_weight

    base = linear.get_base_layer() if isinstance(linear, LoraLayer) else linear
    weight = dequantize_module_weight(base)
    weight = weight if rows is None else weight[rows]
    if not isinstance(linear, LoraLayer) or linear.disable_adapters:
        return weight
    weight = weight.float()
    for name in linear.active_adapters:
        if name in linear.merged_adapters or name not in linear.lora_A:
            continue
        if linear.use_dora.get(name, False):
            raise NotImplementedError(f"DoRA adapter {name!r} is not supported by the tracer; merge it first")
        if getattr(linear, "fan_in_fan_out", False):
            raise NotImplementedError("LoRA with fan_in_fan_out=True is not supported by the tracer")
        lora_b = linear.lora_B[name].weight.float()
        lora_b = lora_b if rows is None else lora_b[rows]
        weight = weight + lora_b @ linear.lora_A[name].weight.float() * linear.scaling[name]
    return weight


@contextmanager
def whole_parameters(modules: list[nn.Module]) -> Iterator[None]:
    """Inside the block, the parameters of ``modules`` are whole even where DeepSpeed ZeRO-3 partitioned them.

    Gathering is collective: under ZeRO-3 every rank must enter the block. Without partitioned parameters
    (no DeepSpeed, ZeRO-1/2) it does nothing.
    """
    partitioned = [p for module in modules for p in module.parameters() if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


@dataclass
class ImageGrid:
    """One image's run of image tokens in the sequence (or one temporal step of a video's): the grid they tile.

    ``source`` is ``"image"`` or ``"video"``; ``index`` counts the sample's images (or its videos) from 0;
    ``frames`` is the half-open range of the video's frames the step covers (the processor merges
    ``temporal_patch_size`` consecutive frames into one step), None for an image.
    """

    num_tokens: int
    grid: tuple[int, int]
    pixels: tuple[int, int]  # (height, width) of the image as the vision tower saw it
    skip_leading: int = 0  # tokens at the start of the run that are not on the grid (a CLS feature)
    source: str = "image"
    index: int = 0
    frames: tuple[int, int] | None = None


class ModelAdapter:
    """Where the tracer finds the parts of one model family. Subclasses say how images map onto the sequence."""

    model_types: tuple[str, ...] = ()

    def __init__(self, model: nn.Module):
        self.model = unwrap_model(model)
        config = self.model.config
        missing = [
            what
            for what, ok in (
                (
                    "model.language_model (the text decoder)",
                    hasattr(getattr(self.model, "model", None), "language_model"),
                ),
                ("lm_head", hasattr(self.model, "lm_head")),
                ("config.image_token_id", getattr(config, "image_token_id", None) is not None),
            )
            if not ok
        ]
        if not missing:
            text = self.model.model.language_model
            missing = [
                what
                for what, ok in (
                    (
                        "language_model.layers[*].self_attn.o_proj",
                        all(
                            hasattr(layer, "self_attn") and hasattr(layer.self_attn, "o_proj")
                            for layer in getattr(text, "layers", [])
                        ),
                    ),
                    ("language_model.layers", len(getattr(text, "layers", [])) > 0),
                    ("language_model.norm", hasattr(text, "norm")),
                )
                if not ok
            ]
        if missing:
            raise ValueError(
                f"{type(self.model).__name__} is missing what the saliency tracer needs: {', '.join(missing)}"
            )
        self.text_model: nn.Module = self.model.model.language_model
        self.text_config = self.text_model.config
        self.image_token_id: int = config.image_token_id
        self.video_token_id: int | None = getattr(config, "video_token_id", None)

    def visual_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """True at the image tokens and (for families that take video) the video tokens of ``input_ids``."""
        mask = input_ids == self.image_token_id
        return mask if self.video_token_id is None else mask | (input_ids == self.video_token_id)

    @property
    def attentions(self) -> list[nn.Module]:
        return [layer.self_attn for layer in self.text_model.layers]

    @property
    def final_norm(self) -> nn.Module:
        return self.text_model.norm

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    @property
    def norm_eps(self) -> float:
        norm = self.final_norm
        for name in ("variance_epsilon", "eps"):
            if hasattr(norm, name):
                return float(getattr(norm, name))
        raise ValueError(f"cannot find the epsilon of the final norm {type(norm).__name__}")

    @property
    def norm_centers(self) -> bool:
        """True for LayerNorm (the mean is subtracted), False for RMSNorm."""
        return isinstance(self.final_norm, nn.LayerNorm)

    def norm_gain(self) -> torch.Tensor:
        return self.final_norm.weight

    def readout_modules(self) -> list[nn.Module]:
        """The modules whose weights the maps read: every layer's o_proj, the final norm and the lm_head."""
        return [attention.o_proj for attention in self.attentions] + [self.final_norm, self.lm_head]

    def o_proj_weight(self, layer: int) -> torch.Tensor:
        """The (hidden, heads * head_dim) matrix of layer ``layer``'s output projection, adapters included."""
        return effective_weight(self.attentions[layer].o_proj)

    def image_grids(self, vision_inputs: dict, token_counts: list[int]) -> list[list[ImageGrid]]:
        """Per sample, the grid of each of its images in order, given how many image tokens each sample holds."""
        raise NotImplementedError

    def visual_grids(self, vision_inputs: dict, visual_ids: list[torch.Tensor]) -> list[list[ImageGrid]]:
        """Per sample, the grids of its images and video steps in sequence order.

        ``visual_ids[b]`` are the token ids at sample b's visual positions (:meth:`visual_mask`), in order. Families
        without video (no ``config.video_token_id``) hold image tokens only there (:meth:`image_grids`).
        """
        return self.image_grids(vision_inputs, [len(ids) for ids in visual_ids])


class QwenVLAdapter(ModelAdapter):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL: image tokens tile ``image_grid_thw`` after the spatial merge, row-major.

    A video of ``video_grid_thw`` (t, h, w) is t temporal steps (each ``temporal_patch_size`` frames merged by the
    processor) of ``h * w / merge**2`` tokens each, step-major (Qwen3-VL puts a timestamp between steps).
    """

    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")

    def _grids(self, thw: Any, source: str) -> list[list[ImageGrid]]:
        """Per image (or video) of ``thw``, its grids: one for an image, one per temporal step for a video."""
        thw = [] if thw is None else torch.as_tensor(thw).tolist()
        vision = self.model.config.vision_config
        merge, frames_per_step = vision.spatial_merge_size, vision.temporal_patch_size
        out = []
        for index, (t, h, w) in enumerate(thw):
            if source == "image" and t != 1:
                raise ValueError(f"image_grid_thw has temporal size {t}; pass videos as video_grid_thw")
            pixels = (h * vision.patch_size, w * vision.patch_size)
            out.append(
                [
                    ImageGrid(
                        num_tokens=h * w // merge**2,
                        grid=(h // merge, w // merge),
                        pixels=pixels,
                        source=source,
                        index=index,
                        frames=None if source == "image" else (step * frames_per_step, (step + 1) * frames_per_step),
                    )
                    for step in range(t)
                ]
            )
        return out

    def image_grids(self, vision_inputs: dict, token_counts: list[int]) -> list[list[ImageGrid]]:
        ids = [torch.full((count,), self.image_token_id) for count in token_counts]
        return self.visual_grids({k: v for k, v in vision_inputs.items() if k != "video_grid_thw"}, ids)

    def visual_grids(self, vision_inputs: dict, visual_ids: list[torch.Tensor]) -> list[list[ImageGrid]]:
        queues = {
            self.image_token_id: iter(self._grids(vision_inputs.get("image_grid_thw"), "image")),
            self.video_token_id: iter(self._grids(vision_inputs.get("video_grid_thw"), "video")),
        }
        out = []
        for sample, ids in enumerate(visual_ids):
            ids, mine, offset, counts = ids.tolist(), [], 0, {"image": 0, "video": 0}
            while offset < len(ids):
                grids = next(queues[ids[offset]], None)
                size = 0 if grids is None else sum(g.num_tokens for g in grids)
                if grids is None or ids[offset : offset + size] != [ids[offset]] * size:
                    kind = "image" if ids[offset] == self.image_token_id else "video"
                    raise ValueError(f"sample {sample}: its {kind} tokens do not match {kind}_grid_thw")
                source = grids[0].source
                mine += [replace(g, index=counts[source]) for g in grids]  # counted per sample
                counts[source] += 1
                offset += size
            out.append(mine)
        for source, queue in zip(("image", "video"), queues.values()):
            if next(queue, None) is not None:
                raise ValueError(f"{source}_grid_thw lists more {source}s than the input_ids hold")
        return out


class LlavaAdapter(ModelAdapter):
    """LLaVA: each image is a fixed square patch grid of the vision tower (plus CLS with the "full" strategy)."""

    model_types = ("llava",)

    def image_grids(self, vision_inputs: dict, token_counts: list[int]) -> list[list[ImageGrid]]:
        config = self.model.config
        side = config.vision_config.image_size // config.vision_config.patch_size
        cls = 1 if config.vision_feature_select_strategy == "full" else 0
        size = config.vision_config.image_size
        grid = ImageGrid(num_tokens=side * side + cls, grid=(side, side), pixels=(size, size), skip_leading=cls)
        out = []
        for sample, count in enumerate(token_counts):
            if count % grid.num_tokens:
                raise ValueError(
                    f"sample {sample}: {count} image tokens is not a whole number of {grid.num_tokens}-token images"
                )
            out.append([grid] * (count // grid.num_tokens))
        return out


ADAPTERS: tuple[type[ModelAdapter], ...] = (QwenVLAdapter, LlavaAdapter)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """The adapter of ``model``'s family (PEFT-wrapped models too); a clear error for an unsupported family."""
    inner = unwrap_model(model)
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls(inner)
    supported = ", ".join(t for cls in ADAPTERS for t in cls.model_types)
    raise ValueError(
        f"the saliency tracer has no adapter for model_type {model_type!r} ({type(inner).__name__}); "
        f"supported: {supported}. Write a ModelAdapter subclass saying where its layers, final norm, lm_head, "
        "image tokens and patch grid are, and pass it as adapter="
    )
