"""Baselines on the image-token embeddings entering the text decoder: gradient x activation, Integrated
Gradients and RISE.

The embeddings are changed by a forward pre-hook on the text decoder (owned by :func:`replaced_image_embeddings`,
removed on exit), so the same code serves every family: the vision tower runs as usual and only what the
language model receives at the image positions is scaled or masked. The reference point is the zero embedding.
Qwen3-VL's deepstack features, added inside the decoder, are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..adapters import ModelAdapter
from ..batch import TeacherForcedBatch
from ..spans import SpecialTokens
from .base import Attribution


@contextmanager
def replaced_image_embeddings(
    adapter: ModelAdapter, image_mask: torch.Tensor, replace: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Inside the block, the text decoder receives ``replace(inputs_embeds)`` at ``image_mask`` (B, L) positions."""

    def hook(module, args, kwargs):
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise RuntimeError(
                f"{type(module).__name__} was called without inputs_embeds; cannot reach the image embeddings"
            )
        if embeds.shape[:2] != image_mask.shape:
            raise RuntimeError(
                f"inputs_embeds of shape {tuple(embeds.shape)} do not match the image mask {tuple(image_mask.shape)}"
            )
        return args, {**kwargs, "inputs_embeds": torch.where(image_mask[..., None], replace(embeds), embeds)}

    handle = adapter.text_model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class GradientTimesActivation(Attribution):
    """Gradient x activation on image tokens: ``sum_c dlog p(y_k) / dx_jc * x_jc`` per answer token k, position j.

    Every position keeps its own gradient (Grad-CAM would pool the gradient over positions into one weight per
    channel). The gradient is averaged over the points ``alpha * x`` of :meth:`alphas` (here only ``alpha = 1``);
    summing the answer tokens' rows and clipping at zero (``SaliencyMaps.answer_map``) gives relu of the answer's
    log-probability gradient times activation, summed over channels.
    """

    kind = "gradient"

    def alphas(self) -> list[float]:
        """Points ``alpha * x`` on the path from the zero embedding at which the gradient is taken."""
        return [1.0]

    def answer_scores(self, batch: TeacherForcedBatch) -> torch.Tensor:
        alphas = self.alphas()
        total = 0
        for alpha in tqdm(alphas, desc=f"{self.kind} steps", disable=len(alphas) < 8):
            activations, gradients = self._image_gradients(batch, alpha)
            total = total + gradients
        scores = (total / len(alphas) * activations[:, None]).sum(-1)
        return scores * batch.answer_valid[..., None] * batch.image_valid()[:, None, :]

    def _image_gradients(self, batch: TeacherForcedBatch, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The image embeddings x (B, N, D) and each answer token's gradient at ``alpha * x`` (B, K, N, D)."""
        seen: dict[str, torch.Tensor] = {}

        def scaled(embeds: torch.Tensor) -> torch.Tensor:
            seen["input"] = embeds.detach()
            seen["point"] = (alpha * embeds.detach()).requires_grad_()
            return seen["point"]

        with replaced_image_embeddings(self.adapter, batch.image_mask, scaled), torch.enable_grad():
            log_probs = self.answer_log_probs(batch)
            index = batch.image_index[..., None].expand(-1, -1, seen["input"].shape[-1])
            rows = []
            for k in range(log_probs.shape[1]):
                (grad,) = torch.autograd.grad(
                    log_probs[:, k].sum(), seen["point"], retain_graph=k + 1 < log_probs.shape[1]
                )
                rows.append(grad.gather(1, index))
        return seen["input"].gather(1, index), torch.stack(rows, 1)


class IntegratedGradients(GradientTimesActivation):
    """Integrated Gradients from the zero embedding, midpoint rule with ``steps`` points.

    Completeness: each answer token's scores sum to ``log p(y_k | x) - log p(y_k | x with zero image embeddings)``
    up to the quadrature error, which shrinks as ``1 / steps**2`` once the steps resolve the path. Pre-norm
    decoders change abruptly near the zero embedding: ``RMSNorm(alpha x)`` goes from 0 to ``x / rms(x)`` within
    ``alpha ~ sqrt(eps / mean(x**2))``, often below 0.05, so check completeness and raise ``steps`` when it fails.
    """

    kind = "integrated_gradients"

    def __init__(self, model: nn.Module, tokens: SpecialTokens, steps: int = 32, adapter: ModelAdapter | None = None):
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        super().__init__(model, tokens, adapter)
        self.steps = steps

    def alphas(self) -> list[float]:
        return [(i + 0.5) / self.steps for i in range(self.steps)]


class RISE(Attribution):
    """RISE (Petsiuk et al., 2018) on the patch grid: random smooth masks scale the image embeddings.

    Each answer token's map is the mean of the masks weighted by that token's probability under the mask,
    normalised per position by how much the masks kept it (so a prediction that ignores the image gets a flat
    map at its probability). Masks: a ``cells x cells`` grid of Bernoulli(``keep_probability``) cells per image,
    upsampled bilinearly to one cell larger than the image's patch grid and cropped at a random offset.
    """

    kind = "rise"

    def __init__(
        self,
        model: nn.Module,
        tokens: SpecialTokens,
        num_masks: int = 500,
        cells: int = 4,
        keep_probability: float = 0.5,
        seed: int = 0,
        adapter: ModelAdapter | None = None,
    ):
        if num_masks < 1:
            raise ValueError(f"num_masks must be at least 1, got {num_masks}")
        if cells < 1:
            raise ValueError(f"cells must be at least 1, got {cells}")
        if not 0 < keep_probability <= 1:
            raise ValueError(f"keep_probability must lie in (0, 1], got {keep_probability}")
        super().__init__(model, tokens, adapter)
        self.num_masks, self.cells, self.keep_probability, self.seed = num_masks, cells, keep_probability, seed

    def grid_mask(self, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """One random smooth mask in [0, 1] over a (rows, cols) patch grid."""
        rows, cols = grid
        cell_h, cell_w = -(-rows // self.cells), -(-cols // self.cells)
        coarse = (torch.rand(self.cells + 1, self.cells + 1, generator=generator) < self.keep_probability).float()
        fine = F.interpolate(
            coarse[None, None],
            size=((self.cells + 1) * cell_h, (self.cells + 1) * cell_w),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        top, left = (int(torch.randint(0, n, (), generator=generator)) for n in (cell_h, cell_w))
        return fine[top : top + rows, left : left + cols]

    @torch.no_grad()
    def answer_scores(self, batch: TeacherForcedBatch) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        device = batch.image_index.device
        weighted = torch.zeros(*batch.answer_ids.shape, batch.image_index.shape[1], device=device)
        kept = torch.zeros(batch.image_index.shape, device=device)
        for _ in tqdm(range(self.num_masks), desc="RISE masks"):
            keep = torch.ones(batch.image_index.shape)  # positions off the grid (a CLS feature) are always kept
            for b, layouts in enumerate(batch.layouts):
                for layout in layouts:
                    keep[b, layout.positions] = self.grid_mask(layout.grid, generator).flatten()
            keep = keep.to(device) * batch.image_valid()
            scale = torch.ones(batch.image_mask.shape, device=device)
            for b, count in enumerate(batch.image_counts):
                scale[b, batch.image_index[b, :count]] = keep[b, :count]
            probs = self._masked_probabilities(batch, scale)
            weighted += probs[..., None] * keep[:, None, :]
            kept += keep
        unseen = batch.image_valid() & (kept == 0)
        if unseen.any():
            raise ValueError(
                f"{int(unseen.sum())} image positions were masked out by all {self.num_masks} masks; raise num_masks"
            )
        return weighted / kept.clamp_min(torch.finfo(kept.dtype).tiny)[:, None, :]

    def _masked_probabilities(self, batch: TeacherForcedBatch, scale: torch.Tensor) -> torch.Tensor:
        """(B, K) answer-token probabilities with the image embeddings multiplied by ``scale`` (B, L)."""
        with replaced_image_embeddings(self.adapter, batch.image_mask, lambda e: e * scale[..., None].to(e.dtype)):
            return self.answer_log_probs(batch).exp() * batch.answer_valid
