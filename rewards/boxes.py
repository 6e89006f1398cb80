"""Boxes: the `bbox` column, pixel membership on a map, IoU, and boxes stated in answers.

All boxes here are `(x1, y1, x2, y2)` normalised to [0, 1]: x by the image width, y by the image height.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from data_tools import normalise_boxes, parse_boxes

Box = tuple[float, float, float, float]

_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"


def as_boxes(value: Any, *, row: int | None = None, field: str = "bbox") -> list[Box]:
    """The boxes of one row's `bbox` value, read and checked by `data_tools` (`parse_boxes`, `normalise_boxes`).

    Accepts the public data's string `"[x1, y1, x2, y2]"`, a list/array of 4 numbers, or a list of such boxes.
    Coordinates must be normalised xyxy inside [0, 1] with a positive area; anything else raises a `ValueError`
    naming `row` and `field`.
    """
    try:
        boxes = normalise_boxes(parse_boxes(value), "xyxy_norm", 1, 1)
    except ValueError as error:
        where = f"row {row}, " if row is not None else ""
        raise ValueError(f"{where}field {field!r}: {error}") from None
    return [(x1, y1, x2, y2) for x1, y1, x2, y2 in boxes]


def box_mask(shape: tuple[int, int], boxes: Sequence[Box], tolerance_px: float = 0.0) -> np.ndarray:
    """Boolean `(height, width)` mask of the pixels that belong to the union of `boxes`.

    Pixel `(r, c)` belongs to a box when its centre `((c + 0.5) / width, (r + 0.5) / height)` lies inside the box
    (bounds included), or within `tolerance_px` pixels of it (Euclidean distance in pixels). A box too small to
    contain any pixel centre still covers the one pixel that contains the box's centre, so that no annotated box is
    ever empty.
    """
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"map shape must be at least 1x1, got {shape}")
    if tolerance_px < 0 or not math.isfinite(tolerance_px):
        raise ValueError(f"tolerance_px must be a finite number >= 0, got {tolerance_px}")
    centres_x = (np.arange(width) + 0.5) / width
    centres_y = (np.arange(height) + 0.5) / height
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        # Distance from each pixel centre to the box along each axis, in pixels (0 inside, bounds included).
        dx = np.maximum(np.maximum(x1 - centres_x, centres_x - x2), 0.0) * width
        dy = np.maximum(np.maximum(y1 - centres_y, centres_y - y2), 0.0) * height
        if tolerance_px == 0:
            inside = (dy == 0)[:, None] & (dx == 0)[None, :]
        else:
            inside = np.hypot(dy[:, None], dx[None, :]) <= tolerance_px
        if not (dx == 0).any() or not (dy == 0).any():
            centre_col = min(int((x1 + x2) / 2 * width), width - 1)
            centre_row = min(int((y1 + y2) / 2 * height), height - 1)
            inside[centre_row, centre_col] = True
        mask |= inside
    return mask


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two xyxy boxes; 0.0 when the union has no area.

    Lengths are measured in units of the two boxes' joint extent (IoU does not change under scaling x and y), so
    boxes far smaller than a pixel, whose areas would underflow to 0 in absolute units, still compare correctly.
    """
    span_x = max(a[2], b[2]) - min(a[0], b[0])
    span_y = max(a[3], b[3]) - min(a[1], b[1])
    if not (span_x > 0 and span_y > 0):
        return 0.0
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) / span_x
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1])) / span_y
    intersection = inter_w * inter_h
    area_a = (a[2] - a[0]) / span_x * ((a[3] - a[1]) / span_y)
    area_b = (b[2] - b[0]) / span_x * ((b[3] - b[1]) / span_y)
    union = area_a + area_b - intersection
    if not union > 0:
        return 0.0
    return min(1.0, max(0.0, intersection / union))


_N = rf"\s*({_NUMBER})\s*"
_QWEN_BOX = re.compile(rf"<\|box_start\|>\s*\({_N},{_N}\)\s*,?\s*\({_N},{_N}\)\s*<\|box_end\|>")
_TAGGED_BOX = re.compile(r"<box>([^<]{0,200})</box>")
_UNTAGGED_BOXES = (
    re.compile(rf"\[{_N},{_N},{_N},{_N}\]"),  # [x1, y1, x2, y2]
    re.compile(rf"\({_N},{_N}\)\s*(?:,|to|-)?\s*\({_N},{_N}\)"),  # (x1, y1), (x2, y2)
    re.compile(rf"\({_N},{_N},{_N},{_N}\)"),  # (x1, y1, x2, y2)
)


def _to_box(coords: Sequence[float], scale_x: float, scale_y: float) -> Box:
    x1, y1, x2, y2 = coords
    x1, x2 = sorted((x1 / scale_x, x2 / scale_x))
    y1, y2 = sorted((y1 / scale_y, y2 / scale_y))
    return tuple(min(1.0, max(0.0, c)) for c in (x1, y1, x2, y2))  # type: ignore[return-value]


def find_answer_box(
    text: str, image_size: tuple[int, int] | None = None, coordinate_range: float | tuple[float, float] | None = None
) -> Box | None:
    """The first box stated in `text`, normalised to [0, 1], or None when there is none that can be read.

    Notations, in this order of precedence:

    1. Qwen2-VL grounding tokens `<|box_start|>(x1,y1),(x2,y2)<|box_end|>`: coordinates on a 0-1000 grid.
    2. `<box>x1, y1, x2, y2</box>` (the numbers may carry brackets or parentheses).
    3. Otherwise the earliest of `[x1, y1, x2, y2]` (also inside JSON such as `{"bbox_2d": [...]}`),
       `(x1, y1), (x2, y2)` and `(x1, y1, x2, y2)`.

    Scale of notations 2 and 3: `coordinate_range` when given, one number for both axes (e.g. 1000 for Qwen-style
    text whose special tokens were stripped by decoding) or `(width, height)` (pixels of a known frame); otherwise
    normalised when all four numbers lie in [0, 1], else pixels, divided by `image_size = (width, height)`; pixels
    with no known image size give None. Corners are put in order and the box is clipped to the image.
    """
    match = _QWEN_BOX.search(text)
    if match:
        return _to_box([float(g) for g in match.groups()], 1000.0, 1000.0)
    coords: list[float] | None = None
    tagged = _TAGGED_BOX.search(text)
    if tagged:
        numbers = re.findall(_NUMBER, tagged.group(1))
        if len(numbers) == 4:
            coords = [float(n) for n in numbers]
    if coords is None:
        matches = [m for m in (pattern.search(text) for pattern in _UNTAGGED_BOXES) if m]
        if not matches:
            return None
        first = min(matches, key=lambda m: m.start())
        coords = [float(g) for g in first.groups()]
    if coordinate_range is not None:
        scale_x, scale_y = coordinate_range if isinstance(coordinate_range, tuple) else (coordinate_range,) * 2
        return _to_box(coords, float(scale_x), float(scale_y))
    if all(0.0 <= c <= 1.0 for c in coords):
        return _to_box(coords, 1.0, 1.0)
    if image_size is None:
        return None
    return _to_box(coords, float(image_size[0]), float(image_size[1]))
