"""Seeing a saliency map: a colour heatmap over the image with the evidence boxes drawn, and side-by-side panels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from data_tools import normalise_boxes, parse_boxes

# Anchors of a perceptually ordered dark-to-bright colormap (black, purple, red, orange, pale yellow).
_ANCHORS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]],
    dtype=np.float64,
)
BOX_COLOUR = (0, 255, 0)


def colormap(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (clipped) to RGB, ``(...)`` -> ``(..., 3)`` uint8, dark = 0, bright = 1."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    channels = [np.interp(values, _ANCHORS, _COLOURS[:, c]) for c in range(3)]
    return np.rint(np.stack(channels, -1)).astype(np.uint8)


def normalised(heatmap: np.ndarray, peak: float | None = None) -> np.ndarray:
    """The map divided by its maximum, or by ``peak`` (a scale shared by the maps of several images; values above it
    clip to 1 in the colormap); a map that is zero everywhere stays zero. It must be finite and >= 0."""
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"a heatmap is a 2-D (height, width) array, got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("the heatmap holds NaN or infinite values")
    if (heatmap < 0).any():
        raise ValueError(f"the heatmap has negative values (min {heatmap.min():.3g}); pass relu'd maps")
    peak = float(heatmap.max(initial=0.0)) if peak is None else float(peak)
    return heatmap / peak if peak > 0 else heatmap


def overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    boxes: Sequence[Sequence[float]] = (),
    opacity: float = 0.5,
    box_width: int | None = None,
    peak: float | None = None,
) -> Image.Image:
    """The image with the (normalised) heatmap blended over it and ``boxes`` drawn as outlines.

    Args:
        image: the image the map explains.
        heatmap: a (height, width) map >= 0, at the image's size or any other (resized bilinearly).
        boxes: evidence boxes ``[x1, y1, x2, y2]`` normalised to [0, 1].
        opacity: weight of the heatmap colour in the blend.
        box_width: outline width in pixels (default: about 1% of the image's shorter side, at least 1).
        peak: the value drawn brightest (default: the map's maximum); give the maps of several images one peak so
            that their colours compare.
    """
    if not 0 <= opacity <= 1:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    image = image.convert("RGB")
    heat = normalised(heatmap, peak)
    if heat.shape != (image.height, image.width):
        heat = np.asarray(Image.fromarray(heat, mode="F").resize(image.size, Image.Resampling.BILINEAR))
    coloured = Image.fromarray(colormap(heat))
    blended = Image.blend(image, coloured, opacity)
    draw = ImageDraw.Draw(blended)
    width = box_width or max(1, round(min(image.size) / 100))
    checked = normalise_boxes(parse_boxes(list(boxes)), "xyxy_norm", image.width, image.height) if boxes else []
    for x1, y1, x2, y2 in checked:
        corners = [x1 * (image.width - 1), y1 * (image.height - 1), x2 * (image.width - 1), y2 * (image.height - 1)]
        draw.rectangle([round(c) for c in corners], outline=BOX_COLOUR, width=width)
    return blended


def side_by_side(panels: Sequence[Image.Image], titles: Sequence[str] | None = None, gap: int = 4) -> Image.Image:
    """Panels in one row, each scaled to the height of the tallest, with an optional title strip above each."""
    if not panels:
        raise ValueError("side_by_side needs at least one panel")
    if titles is not None and len(titles) != len(panels):
        raise ValueError(f"{len(titles)} titles for {len(panels)} panels")
    height = max(p.height for p in panels)
    scaled = [p.convert("RGB").resize((round(p.width * height / p.height), height)) for p in panels]
    strip = 14 if titles else 0
    sheet = Image.new("RGB", (sum(p.width for p in scaled) + gap * (len(scaled) - 1), height + strip), "white")
    draw = ImageDraw.Draw(sheet)
    x = 0
    for i, panel in enumerate(scaled):
        sheet.paste(panel, (x, strip))
        if titles:
            draw.text((x + 2, 1), titles[i], fill=(0, 0, 0))
        x += panel.width + gap
    return sheet
