"""The output type shared by the tracer and the baselines: per-token scores over a completion's image positions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from .spans import CompletionSpans


@dataclass(frozen=True)
class ImageLayout:
    """Where one image's positions lie among a sample's image positions, and how they tile the image.

    ``positions`` indexes the sample's image positions (the columns of the score matrices); they fill the
    ``grid`` (rows, cols) row-major. ``size`` is the image's (height, width) in pixels, the size maps are
    upsampled to. ``source`` says what the positions belong to: ``"image"`` number ``index`` of the sample (from
    0, in prompt order), or one temporal step of ``"video"`` number ``index``, which covers the video's frames
    ``frames`` (half-open; the processor merges ``temporal_patch_size`` consecutive frames into one step, and pads
    a clip with an odd frame count by repeating its last frame, so the last step's range may pass the clip's end).
    """

    positions: torch.Tensor
    grid: tuple[int, int]
    size: tuple[int, int]
    source: str = "image"
    index: int = 0
    frames: tuple[int, int] | None = None


@dataclass(frozen=True)
class ImageMap:
    """A saliency map of one image (or video step) on its patch grid; :meth:`upsampled` gives it at pixel size.

    ``source``, ``index`` and ``frames`` say which image or video frames it belongs to, as in :class:`ImageLayout`.
    """

    grid: torch.Tensor
    size: tuple[int, int]
    source: str = "image"
    index: int = 0
    frames: tuple[int, int] | None = None

    def upsampled(self) -> np.ndarray:
        """The map resized bilinearly to the image's (height, width), mirrored at the edges, as float32 numpy.

        Each cell's value sits at its centre and pixels between centres interpolate linearly (``torch`` bilinear
        with ``align_corners=False``, which it equals there). Between the outermost centres and the image edge the
        map is mirrored about those centres instead of held flat, so every cell's value peaks at its own centre,
        also at the border: held flat, a border cell's peak became a plateau reaching the image edge, and the
        pointing game, which asks every maximal pixel to lie in the boxes, missed an object beside the edge that
        the map pointed at (BENCHMARKS.md, "The pointing game at the image border").
        """
        grid = self.grid.detach().cpu().double()
        rows = _mirrored_bilinear(self.size[0], grid.shape[0])
        cols = _mirrored_bilinear(self.size[1], grid.shape[1])
        return (rows @ grid @ cols.T).float().numpy()

    def upsampled_mass(self) -> np.ndarray:
        """:meth:`upsampled` scaled by grid cells / pixels: its pixel sum is about the grid's sum (exactly for a map
        that is flat at the edges), so maps of images of different sizes compare as saliency per vision token."""
        cells, pixels = self.grid.numel(), self.size[0] * self.size[1]
        return self.upsampled() * np.float32(cells / pixels)


def _mirrored_bilinear(size: int, cells: int) -> torch.Tensor:
    """The ``(size, cells)`` matrix of linear interpolation weights that resizes ``cells`` samples to ``size``
    pixels: pixel ``p`` reads source coordinate ``(p + 0.5) * cells / size - 0.5`` (cell centres at integers),
    mirrored about the first and last centres when it falls outside them."""
    source = (torch.arange(size, dtype=torch.float64) + 0.5) * cells / size - 0.5
    if cells == 1:
        return torch.ones(size, 1, dtype=torch.float64)
    source = source.abs()
    source = torch.where(source > cells - 1, 2 * (cells - 1) - source, source).clamp(0, cells - 1)
    low = source.floor().long().clamp(max=cells - 2)
    frac = source - low
    weights = torch.zeros(size, cells, dtype=torch.float64)
    weights[torch.arange(size), low] = 1 - frac
    weights[torch.arange(size), low + 1] = frac
    return weights


@dataclass
class SaliencyMaps:
    """Saliency of one completion over the image positions of its sample.

    ``scores[kind]`` is a (completion tokens, image positions) float32 matrix: row ``k`` is the per-token map of
    completion token ``k`` (``"direct"``: the logit decomposition, ``"flow"``: the reasoning-flow map; baselines
    add their own kinds). ``defined[kind]`` marks the tokens that have a map of that kind (flow maps exist for
    answer tokens only). A completion without a valid format, or a sample without an image, has no map:
    ``scores`` is empty and ``reason`` says why.
    """

    completion_ids: torch.Tensor
    spans: CompletionSpans | None
    images: list[ImageLayout]
    scores: dict[str, torch.Tensor] = field(default_factory=dict)
    defined: dict[str, torch.Tensor] = field(default_factory=dict)
    reason: str | None = None

    @property
    def has_map(self) -> bool:
        return self.reason is None

    def map_over(self, tokens: Iterable[int] | slice, kind: str = "flow") -> list[ImageMap]:
        """``relu(sum of the per-token maps of kind over the completion tokens)``, one map per image."""
        if not self.has_map:
            raise ValueError(f"this completion has no saliency map: {self.reason}")
        if kind not in self.scores:
            raise KeyError(f"no {kind!r} maps; available: {', '.join(sorted(self.scores))}")
        index = (
            torch.arange(len(self.completion_ids))[tokens]
            if isinstance(tokens, slice)
            else torch.tensor(list(tokens), dtype=torch.long)
        )
        if index.numel() == 0:
            raise ValueError("the token span is empty")
        if (index < 0).any() or (index >= len(self.completion_ids)).any():
            raise IndexError(f"token indices must lie in [0, {len(self.completion_ids)}), got {index.tolist()}")
        missing = index[~self.defined[kind][index]]
        if missing.numel():
            raise ValueError(f"completion tokens {missing.tolist()} have no {kind!r} map")
        total = self.scores[kind][index].sum(0).clamp_min(0)
        return [
            ImageMap(total[image.positions].reshape(image.grid), image.size, image.source, image.index, image.frames)
            for image in self.images
        ]

    def answer_map(self, kind: str = "flow") -> list[ImageMap] | None:
        """The aggregate map ``M = relu(sum over answer tokens)`` per image, or None without a valid map."""
        if not self.has_map:
            return None
        start, end = self.spans.answer
        return self.map_over(range(start, end), kind)
