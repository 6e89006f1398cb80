"""Saliency tracer: where in the image a VLM's answer (and the reasoning that carried it) came from.

Direct (logit-decomposition) and reasoning-flow maps of SPEC section 3, captured inside the model's own forward
pass, during ``generate`` or in one scoring forward, without ``output_attentions`` or any L x L matrix.

    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))
    traced = tracer.generate(**processor(text=..., images=..., return_tensors="pt"), max_new_tokens=64)
    heatmap = traced.maps[0].answer_map("flow")[0].upsampled()   # (height, width) float32
"""

from .adapters import ADAPTERS, ImageGrid, LlavaAdapter, ModelAdapter, QwenVLAdapter, adapter_for, effective_weight
from .baselines import (
    BASELINES,
    RISE,
    AttentionRollout,
    Attribution,
    GradientTimesActivation,
    IntegratedGradients,
    RawAttention,
)
from .heatmap import colormap, overlay, side_by_side
from .map_arguments import MAP_KINDS, MapKind, SaliencyMapArguments
from .output import ImageLayout, ImageMap, SaliencyMaps
from .spans import CompletionSpans, SpecialTokens, completion_spans, find_spans, prompt_opens_thinking
from .tracer import GenerationRecording, SaliencyTracer, TracedGeneration

__all__ = [
    "ADAPTERS",
    "BASELINES",
    "MAP_KINDS",
    "RISE",
    "AttentionRollout",
    "Attribution",
    "CompletionSpans",
    "GenerationRecording",
    "GradientTimesActivation",
    "ImageGrid",
    "ImageLayout",
    "ImageMap",
    "IntegratedGradients",
    "LlavaAdapter",
    "MapKind",
    "ModelAdapter",
    "QwenVLAdapter",
    "RawAttention",
    "SaliencyMapArguments",
    "SaliencyMaps",
    "SaliencyTracer",
    "SpecialTokens",
    "TracedGeneration",
    "adapter_for",
    "colormap",
    "completion_spans",
    "effective_weight",
    "find_spans",
    "overlay",
    "prompt_opens_thinking",
    "side_by_side",
]
