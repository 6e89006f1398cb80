"""Attention grounding: an auxiliary SFT loss that asks the attention of the answer's tokens over the image to lie
on the evidence boxes (a training-time counterpart of the energy-based pointing game).

For each row, each chosen decoder layer and each token the assistant writes, the head-averaged attention over the
row's image tokens (of all its images: attention on an image without evidence counts outside) is scored by how much
of it falls on the evidence, a token counting by the fraction of its patch
that the boxes cover (what energy-PG of the token map upsampled to pixels would give). The loss is minus the log of
that fraction, averaged over the answer's tokens, the layers and the rows that have boxes. It reads the attention
probabilities, so it needs eager attention; it is meant for pre-training small models such as the embedded tiny base
(``configs/sft/tiny_base_attention.yaml``), where the attention is cheap to keep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from saliency.adapters import ImageGrid

EPS = 1e-6


def evidence_coverage(boxes: Sequence[Sequence[float]], grid: tuple[int, int]) -> torch.Tensor:
    """Fraction of each cell of a ``(rows, cols)`` token grid (row-major, flattened) covered by the union of
    ``boxes`` (normalised xyxy). Overlapping boxes are summed and clipped at 1."""
    rows, cols = grid
    y0 = torch.arange(rows, dtype=torch.float64) / rows
    x0 = torch.arange(cols, dtype=torch.float64) / cols
    coverage = torch.zeros(rows, cols, dtype=torch.float64)
    for bx0, by0, bx1, by1 in boxes:
        dy = (torch.minimum(y0 + 1 / rows, torch.tensor(by1)) - torch.maximum(y0, torch.tensor(by0))).clamp(min=0)
        dx = (torch.minimum(x0 + 1 / cols, torch.tensor(bx1)) - torch.maximum(x0, torch.tensor(bx0))).clamp(min=0)
        coverage += torch.outer(dy * rows, dx * cols)
    return coverage.clamp(max=1).flatten().float()


def row_coverage(
    boxes: Any, grids: Sequence[ImageGrid], row: int, box_images: Sequence[int] | None = None
) -> torch.Tensor | None:
    """The coverage of every image token of one row, its images in order (leading tokens off a grid count 0, and so
    does every token of an image without evidence), or None without boxes.

    ``box_images`` ties each box to the image it lies on (the row's ``bbox_image``); without it every box lies on
    the row's one image, and a row of several images is refused, naming it.
    """
    if boxes is None or len(boxes) == 0:
        return None
    if box_images is None:
        if len(grids) != 1:
            raise ValueError(
                f"row {row}: {len(grids)} images but no `bbox_image` to say which image each `bbox` box lies on"
            )
        box_images = [0] * len(boxes)
    if len(box_images) != len(boxes) or any(not 0 <= index < len(grids) for index in box_images):
        raise ValueError(
            f"row {row}: `bbox_image` {list(box_images)} must give one image index in 0..{len(grids) - 1} per "
            f"`bbox` box ({len(boxes)} boxes)"
        )
    parts = []
    for index, grid in enumerate(grids):
        own = [box for box, on in zip(boxes, box_images) if on == index]
        parts += [torch.zeros(grid.skip_leading), evidence_coverage(own, grid.grid)]
    return torch.cat(parts)


def attention_grounding_loss(
    attentions: Sequence[torch.Tensor],
    input_ids: torch.Tensor,
    labels: torch.Tensor,
    image_token_id: int,
    coverages: Sequence[torch.Tensor | None],
) -> torch.Tensor:
    """Minus the log fraction of the answer tokens' image attention that falls on the evidence.

    ``attentions``: one ``(batch, heads, query, key)`` probability tensor per layer; ``labels`` mark the trained
    tokens (-100 elsewhere), so the attention rows scored are those that predict them; ``coverages``: per row, the
    coverage of its image tokens in sequence order (:func:`row_coverage`), None for a row without boxes. Returns 0
    (with a gradient path) when no row has boxes.
    """
    predicting = torch.zeros_like(labels, dtype=torch.bool)
    predicting[:, :-1] = labels[:, 1:] != -100
    image = input_ids == image_token_id
    terms = []
    for row, coverage in enumerate(coverages):
        if coverage is None or not predicting[row].any():
            continue
        columns = image[row].nonzero().squeeze(1)
        if len(columns) != len(coverage):
            raise ValueError(f"row {row}: {len(columns)} image tokens in input_ids but {len(coverage)} on its grid")
        coverage = coverage.to(attentions[0].device, attentions[0].dtype)
        answer = predicting[row].nonzero().squeeze(1)
        for layer in attentions:
            # only the answer rows' image columns: the head mean of the full (query, key) matrix costs more than the loss
            on_image = layer[row][:, answer][:, :, columns].mean(0)  # (answer tokens, image tokens)
            inside = on_image @ coverage
            terms.append((torch.log(on_image.sum(-1) + EPS) - torch.log(inside + EPS)).mean())
    if not terms:
        return sum(layer.sum() for layer in attentions) * 0.0
    return torch.stack(terms).mean()


@contextmanager
def recorded_attention(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Record the attention probabilities each of ``modules`` (decoder self-attention blocks that return
    ``(output, weights)``) computes during the forward passes inside the block; the hooks are always removed."""
    weights: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: Any) -> None:
        probabilities = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probabilities is None:
            raise RuntimeError(
                "the attention block returned no attention probabilities: attention grounding needs "
                "--attn_implementation eager"
            )
        weights.append(probabilities)

    handles = [module.register_forward_hook(keep) for module in modules]
    try:
        yield weights
    finally:
        for handle in handles:
            handle.remove()
