"""Attention-weight baselines: raw attention to the image and attention rollout (Abnar & Zuidema, 2020).

Both need the full attention matrices, so they run the text decoder with eager attention and
``output_attentions=True`` (they are baselines: the tracer is what keeps the model's fast attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import torch

from ..adapters import ModelAdapter
from ..attention_implementation import attention_implementation
from ..batch import TeacherForcedBatch
from .base import Attribution


def eager_attention(adapter: ModelAdapter) -> AbstractContextManager[None]:
    """Run the text decoder with eager attention inside the block; its own implementation is restored on exit."""
    return attention_implementation(adapter.text_model, "eager")


def attention_rollout(attentions: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (B, K) of the rollout ``Â_L ... Â_1`` with ``Â_l = rownorm((mean_h A_l + I) / 2)``.

    ``attentions`` are the layers' (B, H, L, L) weights, first layer first. The product is taken from the top
    down on the requested rows only, (B, K, L) at a time, never as a full L x L product.
    """
    batch, _, length, _ = attentions[0].shape
    flow = torch.zeros(batch, rows.shape[1], length, dtype=attentions[0].dtype, device=rows.device)
    flow.scatter_(-1, rows[..., None], 1.0)
    for weights in reversed(attentions):
        mixed = 0.5 * weights.mean(1) + 0.5 * torch.eye(length, dtype=weights.dtype, device=weights.device)
        flow = flow @ (mixed / mixed.sum(-1, keepdim=True))
    return flow


class AttentionAttribution(Attribution):
    """Scores read from the model's attention weights; subclasses say how the layers' weights combine."""

    def combine(self, attentions: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        """(B, K, L) weight of every position for the (B, K) query ``rows``, from the layers' (B, H, L, L)."""
        raise NotImplementedError

    @torch.no_grad()
    def answer_scores(self, batch: TeacherForcedBatch) -> torch.Tensor:
        with eager_attention(self.adapter):
            output = self.model(**batch.model_inputs, output_attentions=True, logits_to_keep=1)
        attentions = [a.float() for a in output.attentions]
        if len(attentions) != len(self.adapter.attentions):
            raise RuntimeError(
                f"the model returned {len(attentions)} attention maps for {len(self.adapter.attentions)} decoder layers"
            )
        return batch.image_columns(self.combine(attentions, batch.answer_rows))


class RawAttention(AttentionAttribution):
    """Attention paid by each answer token's row to the image positions, averaged over layers and heads."""

    kind = "attention"

    def combine(self, attentions: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        total = 0
        for weights in attentions:
            total = total + weights.mean(1).gather(1, rows[..., None].expand(-1, -1, weights.shape[-1]))
        return total / len(attentions)


class AttentionRollout(AttentionAttribution):
    """Attention rollout: attention flow through the residual stream, ``(A + I) / 2`` per layer, heads averaged."""

    kind = "rollout"

    def combine(self, attentions: Sequence[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
        return attention_rollout(attentions, rows)
