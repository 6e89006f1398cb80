"""The base class of the baseline saliency methods: inputs laid out once, maps assembled once, one piece per method."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ..adapters import ModelAdapter, adapter_for
from ..output import ImageLayout, SaliencyMaps
from ..spans import CompletionSpans, SpecialTokens, completion_spans
from ..tracer import image_layouts


@dataclass
class TeacherForcedBatch:
    """Prompt + completion of each sample in one forward, and where its answer tokens and image positions are.

    ``answer_rows[b, k]`` is the position whose output predicts answer token ``answer_ids[b, k]``; entries where
    ``answer_valid`` is False are padding (samples without a map, or shorter answers). ``image_index[b, :n_b]``
    are the absolute positions of sample b's ``n_b = image_counts[b]`` image tokens (padding: 0), and
    ``image_mask`` (B, L) marks all image positions.
    """

    model_inputs: dict
    image_mask: torch.Tensor
    image_index: torch.Tensor
    image_counts: list[int]
    layouts: list[list[ImageLayout]]
    answer_rows: torch.Tensor
    answer_ids: torch.Tensor
    answer_valid: torch.Tensor

    def image_columns(self, values: torch.Tensor) -> torch.Tensor:
        """(B, K, L) values over positions -> (B, K, N_max) at each sample's image positions (padding: 0)."""
        picked = values.gather(-1, self.image_index[:, None, :].expand(-1, values.shape[1], -1))
        return picked * self.image_valid()[:, None, :]

    def image_valid(self) -> torch.Tensor:
        """(B, N_max) True where ``image_index`` is a real image position."""
        counts = torch.tensor(self.image_counts, device=self.image_index.device)
        return torch.arange(self.image_index.shape[1], device=self.image_index.device)[None] < counts[:, None]


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
        if prompt_ids.shape[0] != completion_ids.shape[0]:
            raise ValueError(
                f"prompt_ids holds {prompt_ids.shape[0]} samples but completion_ids {completion_ids.shape[0]}"
            )
        if prompt_mask is None:
            prompt_mask = torch.ones_like(prompt_ids)
        if completion_mask is None:
            completion_mask = torch.ones_like(completion_ids)
        completions = [ids[:n] for ids, n in zip(completion_ids.cpu(), completion_mask.sum(-1).tolist())]
        image_counts = (prompt_ids == self.adapter.image_token_id).sum(-1).tolist()
        grids = self.adapter.image_grids(vision_inputs, image_counts)
        layouts = [
            image_layouts(grids[b], None if image_sizes is None else image_sizes[b], b) for b in range(len(grids))
        ]
        spans = [completion_spans(p.tolist(), c.tolist(), self.tokens) for p, c in zip(prompt_ids.cpu(), completions)]
        traced = [isinstance(s, CompletionSpans) and count > 0 for s, count in zip(spans, image_counts)]
        batch = _teacher_forced_batch(
            self.adapter.image_token_id,
            prompt_ids,
            completion_ids,
            prompt_mask,
            completion_mask,
            vision_inputs,
            image_counts,
            layouts,
            [s if ok else None for s, ok in zip(spans, traced)],
        )
        scores = self.answer_scores(batch).detach().float().cpu() if any(traced) else None

        results = []
        for b, (completion, span) in enumerate(zip(completions, spans)):
            if not isinstance(span, CompletionSpans):
                results.append(SaliencyMaps(completion, None, layouts[b], reason=span))
                continue
            if not image_counts[b]:
                results.append(SaliencyMaps(completion, span, layouts[b], reason="the sample has no image"))
                continue
            start, end = span.answer
            matrix = torch.zeros(len(completion), image_counts[b])
            matrix[start:end] = scores[b, : end - start, : image_counts[b]]
            positions = torch.arange(len(completion))
            defined = (positions >= start) & (positions < end)
            results.append(SaliencyMaps(completion, span, layouts[b], {self.kind: matrix}, {self.kind: defined}))
        return results


def _teacher_forced_batch(
    image_token_id: int,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    completion_mask: torch.Tensor,
    vision_inputs: dict,
    image_counts: list[int],
    layouts: list[list[ImageLayout]],
    spans: list[CompletionSpans | None],
) -> TeacherForcedBatch:
    device = prompt_ids.device
    prompt_length = prompt_ids.shape[1]
    if "mm_token_type_ids" in vision_inputs:  # the completion holds text tokens only (type 0)
        types = vision_inputs["mm_token_type_ids"]
        vision_inputs = {**vision_inputs, "mm_token_type_ids": torch.cat([types, torch.zeros_like(completion_ids)], 1)}
    input_ids = torch.cat([prompt_ids, completion_ids], 1)
    image_mask = torch.cat([prompt_ids == image_token_id, torch.zeros_like(completion_ids, dtype=torch.bool)], 1)
    image_index = torch.zeros(len(image_counts), max(image_counts, default=0), dtype=torch.long, device=device)
    for b, count in enumerate(image_counts):
        image_index[b, :count] = image_mask[b].nonzero().squeeze(-1)
    widths = [0 if s is None else s.answer[1] - s.answer[0] for s in spans]
    answer_rows = torch.zeros(len(spans), max(max(widths, default=0), 1), dtype=torch.long, device=device)
    answer_valid = torch.zeros_like(answer_rows, dtype=torch.bool)
    for b, span in enumerate(spans):
        if span is not None:
            answer_rows[b, : widths[b]] = prompt_length - 1 + torch.arange(*span.answer, device=device)
            answer_valid[b, : widths[b]] = True
    answer_ids = input_ids.gather(1, answer_rows + 1) * answer_valid
    return TeacherForcedBatch(
        model_inputs={
            "input_ids": input_ids,
            "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
            **vision_inputs,
        },
        image_mask=image_mask,
        image_index=image_index,
        image_counts=image_counts,
        layouts=layouts,
        answer_rows=answer_rows,
        answer_ids=answer_ids,
        answer_valid=answer_valid,
    )
