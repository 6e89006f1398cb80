"""The batch layout shared by the tracer and the baselines, and the assembly of their maps.

Layout (TRL's): ``prompt_ids`` (B, P) left-padded, ``completion_ids`` (B, C) right-padded, one forward over their
concatenation. Each sample's image positions are indexed by a (B, N_max) tensor padded with 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from .adapters import ImageGrid, ModelAdapter
from .output import ImageLayout, SaliencyMaps
from .rows import completion_rows
from .spans import CompletionSpans, SpecialTokens, completion_spans

ScoresOf = Callable[[int, CompletionSpans], tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]
"""``(sample, spans) -> (scores, defined)`` of a sample that has a map, as in :class:`SaliencyMaps`."""


def padded_positions(mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Column indices of the True entries of each row of a (B, L) mask, padded with 0 to a (B, N_max) tensor."""
    counts = mask.sum(-1).tolist()
    index = torch.zeros(mask.shape[0], max(counts, default=0), dtype=torch.long, device=mask.device)
    for b, count in enumerate(counts):
        index[b, :count] = mask[b].nonzero().squeeze(-1)
    return index, counts


def image_layouts(grids: list[ImageGrid], sizes: Sequence[tuple[int, int]] | None, sample: int) -> list[ImageLayout]:
    """Where each image (or video step) of sample ``sample`` lies among its visual positions.

    ``sizes`` (upsampling sizes) has one entry per image and per video, in prompt order; a video's steps share its.
    """
    items = list(dict.fromkeys((grid.source, grid.index) for grid in grids))
    if sizes is not None and len(sizes) != len(items):
        raise ValueError(
            f"image_sizes[{sample}] lists {len(sizes)} sizes but the sample holds {len(items)} images and videos"
        )
    layouts, start = [], 0
    for grid in grids:
        positions = torch.arange(start + grid.skip_leading, start + grid.num_tokens)
        size = grid.pixels if sizes is None else tuple(int(x) for x in sizes[items.index((grid.source, grid.index))])
        layouts.append(ImageLayout(positions, grid.grid, size, grid.source, grid.index, grid.frames))
        start += grid.num_tokens
    return layouts


@dataclass
class CompletionBatch:
    """What each sample's maps are about: its completion (padding cut off), spans, image count and image layouts.

    ``spans[b]`` is the reason the completion has no valid format where it has none.
    """

    completions: list[torch.Tensor]
    spans: list[CompletionSpans | str]
    image_counts: list[int]
    layouts: list[list[ImageLayout]]

    @classmethod
    def build(
        cls,
        tokens: SpecialTokens,
        prompt_ids: torch.Tensor,
        completions: Sequence[torch.Tensor],
        image_counts: list[int],
        grids: list[list[ImageGrid]],
        image_sizes: Sequence[Sequence[tuple[int, int]]] | None,
    ) -> CompletionBatch:
        """Spans and layouts of ``completions`` (CPU token ids) after the (B, P) ``prompt_ids``."""
        spans = [completion_spans(p.tolist(), c.tolist(), tokens) for p, c in zip(prompt_ids, completions)]
        layouts = [image_layouts(g, None if image_sizes is None else image_sizes[b], b) for b, g in enumerate(grids)]
        return cls(list(completions), spans, image_counts, layouts)

    def mapped(self, b: int) -> bool:
        """Whether sample ``b`` has a map: a valid format and at least one image token."""
        return isinstance(self.spans[b], CompletionSpans) and self.image_counts[b] > 0

    def maps(self, scores_of: ScoresOf) -> list[SaliencyMaps]:
        """One :class:`SaliencyMaps` per sample, with ``scores_of``'s scores where the sample has a map."""
        results = []
        for b, (completion, spans, layouts) in enumerate(zip(self.completions, self.spans, self.layouts)):
            if not isinstance(spans, CompletionSpans):
                results.append(SaliencyMaps(completion, None, layouts, reason=spans))
            elif not self.image_counts[b]:
                results.append(SaliencyMaps(completion, spans, layouts, reason="the sample has no image"))
            else:
                results.append(SaliencyMaps(completion, spans, layouts, *scores_of(b, spans)))
        return results


@dataclass
class TeacherForcedBatch(CompletionBatch):
    """Prompt + completion of each sample in one forward, and where its answer tokens and image positions are.

    ``prompt_length`` is P (padding included). ``answer_rows[b, k]`` is the position whose output predicts answer
    token ``answer_ids[b, k]``; entries where ``answer_valid`` is False are padding (samples without a map, or
    shorter answers). ``image_index[b, :n_b]`` are the absolute positions of sample b's ``n_b = image_counts[b]``
    image tokens (padding: 0), and ``image_mask`` (B, L) marks all image positions.
    """

    model_inputs: dict
    prompt_length: int
    image_mask: torch.Tensor
    image_index: torch.Tensor
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


class SaliencyMethod(Protocol):
    """What the batch builder reads from a saliency method (the tracer or a baseline)."""

    adapter: ModelAdapter
    tokens: SpecialTokens


def teacher_forced_batch(
    method: SaliencyMethod,
    prompt_ids: torch.Tensor,
    completion_ids: torch.Tensor,
    prompt_mask: torch.Tensor | None,
    completion_mask: torch.Tensor | None,
    image_sizes: Sequence[Sequence[tuple[int, int]]] | None,
    vision_inputs: dict,
) -> TeacherForcedBatch:
    """Lay out (left-padded) prompts and (right-padded) completions for one forward; masks default to all ones.

    ``vision_inputs`` are the processor's (``pixel_values``, ``image_grid_thw``, ...); ``image_sizes[b]`` the
    (height, width) of sample b's images and videos (one per video) that maps are upsampled to (default: the size the vision tower saw).
    """
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(f"prompt_ids holds {prompt_ids.shape[0]} samples but completion_ids {completion_ids.shape[0]}")
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids)
    if completion_mask is None:
        completion_mask = torch.ones_like(completion_ids)
    completions = [ids[:n] for ids, n in zip(completion_ids.cpu(), completion_mask.sum(-1).tolist())]
    visual = method.adapter.visual_mask(prompt_ids)
    image_index, image_counts = padded_positions(visual)
    grids = method.adapter.visual_grids(vision_inputs, [ids[row] for ids, row in zip(prompt_ids.cpu(), visual.cpu())])
    samples = CompletionBatch.build(method.tokens, prompt_ids.cpu(), completions, image_counts, grids, image_sizes)

    if "mm_token_type_ids" in vision_inputs:  # the completion holds text tokens only (type 0)
        types = vision_inputs["mm_token_type_ids"]
        vision_inputs = {**vision_inputs, "mm_token_type_ids": torch.cat([types, torch.zeros_like(completion_ids)], 1)}
    prompt_length = prompt_ids.shape[1]
    device = prompt_ids.device
    widths = [s.answer[1] - s.answer[0] if samples.mapped(b) else 0 for b, s in enumerate(samples.spans)]
    answer_rows = torch.zeros(len(widths), max(max(widths, default=0), 1), dtype=torch.long, device=device)
    answer_ids = torch.zeros_like(answer_rows)
    answer_valid = torch.zeros_like(answer_rows, dtype=torch.bool)
    for b, width in enumerate(widths):
        if width:
            answer = torch.arange(*samples.spans[b].answer, device=device)
            answer_rows[b, :width] = completion_rows(prompt_length, answer)
            answer_ids[b, :width] = completion_ids[b, answer]
            answer_valid[b, :width] = True
    return TeacherForcedBatch(
        completions=samples.completions,
        spans=samples.spans,
        image_counts=image_counts,
        layouts=samples.layouts,
        model_inputs={
            "input_ids": torch.cat([prompt_ids, completion_ids], 1),
            "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
            **vision_inputs,
        },
        prompt_length=prompt_length,
        image_mask=torch.cat([visual, torch.zeros_like(completion_ids, dtype=torch.bool)], 1),
        image_index=image_index,
        answer_rows=answer_rows,
        answer_ids=answer_ids,
        answer_valid=answer_valid,
    )
