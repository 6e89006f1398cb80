"""Baseline saliency methods with the tracer's output type (:class:`saliency.SaliencyMaps`), for comparisons.

    maps = IntegratedGradients(model, tokens, steps=32).attribute(prompt_ids, completion_ids, **vision_inputs)
    heatmap = maps[0].answer_map("integrated_gradients")[0].upsampled()

Kinds: ``"attention"`` (raw attention to the image), ``"rollout"`` (attention rollout), ``"gradient"``
(gradient x activation on image embeddings), ``"integrated_gradients"``, ``"rise"``.
"""

from ..batch import TeacherForcedBatch
from ..spans import completion_spans
from .attention import AttentionAttribution, AttentionRollout, RawAttention, attention_rollout, eager_attention
from .base import Attribution
from .embedding import RISE, GradientTimesActivation, IntegratedGradients, replaced_image_embeddings

BASELINES: dict[str, type[Attribution]] = {
    cls.kind: cls for cls in (RawAttention, AttentionRollout, GradientTimesActivation, IntegratedGradients, RISE)
}

__all__ = [
    "BASELINES",
    "RISE",
    "AttentionAttribution",
    "AttentionRollout",
    "Attribution",
    "GradientTimesActivation",
    "IntegratedGradients",
    "RawAttention",
    "TeacherForcedBatch",
    "attention_rollout",
    "completion_spans",
    "eager_attention",
    "replaced_image_embeddings",
]
