"""The output type shared by the tracer and the baselines: per-token scores over a completion's image positions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

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
        """The map resized bilinearly to the image's (height, width), as float32 numpy."""
        resized = F.interpolate(self.grid[None, None].float(), size=self.size, mode="bilinear", align_corners=False)
        return resized[0, 0].numpy()

    def upsampled_mass(self) -> np.ndarray:
        """:meth:`upsampled` scaled by grid cells / pixels: its pixel mean times the pixel count equals the grid's mean
        times the cell count, so maps of images of different sizes compare as saliency per vision token."""
        cells, pixels = self.grid.numel(), self.size[0] * self.size[1]
        return self.upsampled() * np.float32(cells / pixels)


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
