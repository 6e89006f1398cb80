"""The base class of the baseline saliency methods: inputs laid out once, maps assembled once, one piece per method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..adapters import ModelAdapter, adapter_for
from ..batch import TeacherForcedBatch, teacher_forced_batch
from ..output import SaliencyMaps
from ..spans import CompletionSpans, SpecialTokens


class Attribution:
    """Per-answer-token saliency over image positions, as :class:`~saliency.SaliencyMaps` of kind :attr:`kind`.

    Subclasses implement :meth:`answer_scores`; this class lays out the inputs (TRL's layout, as
    :meth:`saliency.SaliencyTracer.score`) and builds the maps. Maps are defined for the answer tokens only.

    Args:
        model: a supported transformers VLM (the families of :func:`saliency.adapter_for`), PEFT-wrapped or not.
        tokens: ids of ``<think>``, ``</think>`` and the stop tokens (``SpecialTokens.from_tokenizer``).
        adapter: overrides the family adapter found from the model's config.
    """

    kind: ClassVar[str]

    def __init__(self, model: nn.Module, tokens: SpecialTokens, adapter: ModelAdapter | None = None):
        self.model = model
        self.tokens = tokens
        self.adapter = adapter or adapter_for(model)

    def answer_scores(self, batch: TeacherForcedBatch) -> torch.Tensor:
        """(B, K_max, N_max) score of each answer token (``batch.answer_valid``) at each image position."""
        raise NotImplementedError

    def answer_log_probs(self, batch: TeacherForcedBatch, **forward_kwargs) -> torch.Tensor:
        """(B, K_max) log-probability of each answer token given everything before it (0 where not valid).

        Only the answer rows go through the lm_head (``logits_to_keep``), never the whole sequence.
        """
        output = self.model(**batch.model_inputs, logits_to_keep=batch.answer_rows, **forward_kwargs)
        logits = output.logits.to(torch.promote_types(output.logits.dtype, torch.float32))
        log_probs = logits.log_softmax(-1).gather(-1, batch.answer_ids[..., None])[..., 0]
        return log_probs * batch.answer_valid

    def attribute(
        self,
        prompt_ids: torch.Tensor,
        completion_ids: torch.Tensor,
        prompt_mask: torch.Tensor | None = None,
        completion_mask: torch.Tensor | None = None,
        image_sizes: Sequence[Sequence[tuple[int, int]]] | None = None,
        **vision_inputs,
    ) -> list[SaliencyMaps]:
        """Maps of (left-padded) prompts and (right-padded) completions; arguments as :meth:`SaliencyTracer.score`."""
        batch = teacher_forced_batch(
            self, prompt_ids, completion_ids, prompt_mask, completion_mask, image_sizes, vision_inputs
        )
        mapped = any(batch.mapped(b) for b in range(len(batch.spans)))
        scores = self.answer_scores(batch).detach().float().cpu() if mapped else None

        def scores_of(b: int, spans: CompletionSpans) -> tuple[dict, dict]:
            start, end = spans.answer
            matrix = torch.zeros(len(batch.completions[b]), batch.image_counts[b])
            matrix[start:end] = scores[b, : end - start, : batch.image_counts[b]]
            positions = torch.arange(len(batch.completions[b]))
            return {self.kind: matrix}, {self.kind: (positions >= start) & (positions < end)}

        return batch.maps(scores_of)
