"""Pointing game metrics on saliency maps, their baselines, and an aggregator for evaluation.

A saliency map is a 2-D array at the image's pixel size, `map[row, col]`; boxes are normalised xyxy (see
`boxes.as_boxes` for the accepted forms and `boxes.box_mask` for which pixels belong to a box).

A map is *empty* when it has no positive mass or any non-finite value (NaN, inf). The metrics return None for an
empty map: as a reward it scores 0 and is counted (see `SaliencyReward`), as an evaluation metric it is excluded
and counted (see `PointingGameAccumulator`). Negative values carry no mass: only `max(map, 0)` counts.

Several images per prompt (or the temporal steps of a video) have one map each, with the boxes that lie on that
image; an image without evidence has no boxes. `multi_energy_pointing_game` and `multi_pointing_game` score the
maps together: mass (or the peak) on an evidence-free image counts as outside the boxes, so a map that looks at the
wrong image scores low. The maps must be in comparable units (`saliency.ImageMap.upsampled_mass`: saliency per
vision token, whatever size each image is upsampled to). With one map they equal the single-image metrics.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .boxes import Box, as_boxes, box_mask


def as_saliency_map(saliency_map: Any) -> np.ndarray:
    """`saliency_map` as a float64 `(height, width)` array; a `ValueError` when it is not 2-D with both sides >= 1."""
    array = np.asarray(saliency_map, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"a saliency map must be a 2-D array (height, width) with both sides >= 1, got {array.shape}")
    return array


def is_empty_map(saliency_map: Any) -> bool:
    """True when the map has a non-finite value or no value above 0 (it then points nowhere)."""
    array = as_saliency_map(saliency_map)
    return not bool(np.isfinite(array).all()) or not bool((array > 0).any())


def energy_pointing_game(saliency_map: Any, boxes: Any) -> float | None:
    """Positive saliency mass inside the union of `boxes` divided by the total positive mass; None for an empty map.

    In [0, 1]. A uniform map scores `box_area_fraction`; multiplying the map by a positive constant changes nothing.
    """
    array = as_saliency_map(saliency_map)
    if is_empty_map(array):
        return None
    return _energy(array, box_mask(array.shape, as_boxes(boxes)))


def _energy(array: np.ndarray, mask: np.ndarray) -> float:
    positive = np.maximum(array, 0.0)
    positive /= positive.max()  # keeps the sums finite for maps with huge values
    # Summing the two parts separately makes "all mass inside" exactly 1.0 and a uniform map exactly the area fraction.
    inside, outside = positive[mask].sum(), positive[~mask].sum()
    return float(inside / (inside + outside))


def pointing_game(saliency_map: Any, boxes: Any, tolerance_px: float = 0.0) -> float | None:
    """1.0 when the map's maximum lies inside (or within `tolerance_px` pixels of) the union of `boxes`, else 0.0.

    Ties: when several pixels share the maximum, all of them must be inside for a hit, and a constant map (every
    pixel equal) is a miss whatever the boxes, since it points at nothing. None for an empty map.
    """
    array = as_saliency_map(saliency_map)
    if is_empty_map(array):
        return None
    return _pointing(array, box_mask(array.shape, as_boxes(boxes), tolerance_px))


def _pointing(array: np.ndarray, region: np.ndarray) -> float:
    peak = array.max()
    if array.min() == peak:
        return 0.0
    return 1.0 if bool(region[array == peak].all()) else 0.0


def as_saliency_maps(value: Any) -> list[np.ndarray]:
    """One map or several: a 2-D map gives ``[map]``; a list of 2-D maps (one per image or video step) gives each.

    A `ValueError` when neither (an empty list, or an entry that is not 2-D with both sides >= 1).
    """
    if isinstance(value, (list, tuple)) and value and all(np.ndim(entry) == 2 for entry in value):
        return [as_saliency_map(entry) for entry in value]
    return [as_saliency_map(value)]


def boxes_per_map(
    num_maps: int,
    boxes: Any,
    box_image: Sequence[int] | None = None,
    box_frame: Sequence[int] | None = None,
    map_frames: Sequence[tuple[int, int] | None] | None = None,
) -> list[list[Box]]:
    """The boxes of each of `num_maps` maps, from a row's `bbox` and the image or frame each box lies on.

    `box_image[i]` is the index of the image (= of the map) box i lies on; `box_frame[i]` the video frame it lies on,
    given to the map whose `map_frames` range (half-open) holds that frame: a video step's map gets the boxes of all
    the frames the processor merged into it. Without either, all boxes belong to the only map. A box on no map is a
    `ValueError` naming it. A map may get no box (an image without evidence).
    """
    parsed = as_boxes(boxes) if boxes is not None and not (isinstance(boxes, (list, tuple)) and not boxes) else []
    out: list[list[Box]] = [[] for _ in range(num_maps)]
    if box_image is None and box_frame is None:
        if num_maps != 1 and parsed:
            raise ValueError(
                f"{num_maps} maps (images or video steps) but no bbox_image or bbox_frame says which "
                "image or frame each box lies on"
            )
        out[0] += parsed
        return out
    if box_image is not None and box_frame is not None:
        raise ValueError("a row gives boxes either by image (bbox_image) or by video frame (bbox_frame), not both")
    index = list(box_image if box_image is not None else box_frame)
    if len(index) != len(parsed):
        name = "bbox_image" if box_image is not None else "bbox_frame"
        raise ValueError(f"{name} has {len(index)} entries for {len(parsed)} boxes")
    for i, (box, where) in enumerate(zip(parsed, index)):
        if box_image is not None:
            targets = [int(where)] if 0 <= int(where) < num_maps else []
        else:
            if map_frames is None or len(map_frames) != num_maps:
                raise ValueError("boxes given by video frame (bbox_frame) need the frame range of each map")
            targets = [m for m, span in enumerate(map_frames) if span is not None and span[0] <= int(where) < span[1]]
        if not targets:
            what = "image" if box_image is not None else "frame"
            raise ValueError(f"box {i} lies on {what} {where}, which none of the {num_maps} maps covers")
        out[targets[0]].append(box)
    return out


def _peak_normalised(arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """The positive parts of the maps divided by their common maximum; None when they are empty together."""
    if not all(np.isfinite(a).all() for a in arrays):
        return None
    peak = max(float(a.max()) for a in arrays)
    if not peak > 0:
        return None
    return [np.maximum(a, 0.0) / peak for a in arrays]


def multi_energy_pointing_game(maps: Any, boxes: Sequence[Any]) -> float | None:
    """Energy-PG over several images: positive mass inside each map's own boxes, summed over the maps, divided by
    the total positive mass of all maps; None when they are empty together (no positive mass, or a non-finite value).

    `boxes[i]` are map i's boxes (any form `as_boxes` accepts; empty for an image without evidence, all of whose
    mass is outside). In [0, 1]; one map: `energy_pointing_game`; scaling every map by the same positive constant
    changes nothing.
    """
    arrays = as_saliency_maps(maps)
    if len(boxes) != len(arrays):
        raise ValueError(f"{len(boxes)} box lists for {len(arrays)} maps")
    positives = _peak_normalised(arrays)
    if positives is None:
        return None
    inside = outside = 0.0
    for positive, own in zip(positives, boxes):
        mask = box_mask(positive.shape, as_boxes(own)) if len(own) else np.zeros(positive.shape, dtype=bool)
        inside += positive[mask].sum()
        outside += positive[~mask].sum()
    return float(inside / (inside + outside))


def multi_pointing_game(maps: Any, boxes: Sequence[Any], tolerance_px: float = 0.0) -> float | None:
    """Pointing game over several images: 1.0 when the highest value over all maps lies inside (or within
    `tolerance_px` of) the boxes of the map it is on, else 0.0; None when the maps are empty together.

    Ties as in `pointing_game`: every pixel at the maximum, on any map, must be inside its own map's boxes, and maps
    that are all one constant value are a miss. A peak on an image without evidence is a miss. One map:
    `pointing_game`.
    """
    arrays = as_saliency_maps(maps)
    if len(boxes) != len(arrays):
        raise ValueError(f"{len(boxes)} box lists for {len(arrays)} maps")
    if _peak_normalised(arrays) is None:
        return None
    peak = max(float(a.max()) for a in arrays)
    if all(float(a.min()) == peak for a in arrays):
        return 0.0
    for array, own in zip(arrays, boxes):
        at_peak = array == peak
        if not at_peak.any():
            continue
        if not len(own) or not bool(box_mask(array.shape, as_boxes(own), tolerance_px)[at_peak].all()):
            return 0.0
    return 1.0


def frame_energy_pointing_games(
    maps: Any, map_frames: Sequence[tuple[int, int]], boxes: Any, box_frame: Sequence[int]
) -> dict[int, float | None]:
    """Energy-PG per video frame that carries boxes: the map of the step the frame was merged into, against that
    frame's own boxes (None where the map is empty). The clip's score is `multi_energy_pointing_game` over the steps
    with `boxes_per_map(..., box_frame=..., map_frames=...)`."""
    arrays = as_saliency_maps(maps)
    per_frame: dict[int, list[Box]] = {}
    for box, frame in zip(as_boxes(boxes), box_frame, strict=True):
        per_frame.setdefault(int(frame), []).append(box)
    scores: dict[int, float | None] = {}
    for frame, own in sorted(per_frame.items()):
        steps = [m for m, (start, end) in enumerate(map_frames) if start <= frame < end]
        if not steps:
            raise ValueError(f"frame {frame} lies in none of the steps {list(map_frames)}")
        scores[frame] = energy_pointing_game(arrays[steps[0]], own)
    return scores


def box_area_fraction(shape: tuple[int, int], boxes: Any) -> float:
    """The fraction of the image's pixels inside the union of `boxes`: what a uniform map scores on energy-PG."""
    return float(box_mask(shape, as_boxes(boxes)).mean())


def centre_point_game(shape: tuple[int, int], boxes: Any, tolerance_px: float = 0.0) -> float:
    """The centre-point baseline for the pointing game: 1.0 when the image centre lies inside (or within
    `tolerance_px` pixels of) the union of `boxes`, else 0.0."""
    height, width = int(shape[0]), int(shape[1])
    for x1, y1, x2, y2 in as_boxes(boxes):
        dx = max(x1 - 0.5, 0.5 - x2, 0.0) * width
        dy = max(y1 - 0.5, 0.5 - y2, 0.0) * height
        if math.hypot(dx, dy) <= tolerance_px:
            return 1.0
    return 0.0


@dataclass(frozen=True)
class PointingScores:
    """The pointing-game scores of one map, with the two baselines computed on the same boxes."""

    energy_pg: float
    pg: float
    box_area_fraction: float
    centre_point_pg: float


class PointingGameAccumulator:
    """Collects pointing-game scores over an evaluation set; rows without a usable map are excluded and counted.

    >>> acc = PointingGameAccumulator()
    >>> acc.add(np.array([[0.0, 1.0], [0.0, 0.0]]), [0.5, 0.0, 1.0, 0.5])
    PointingScores(energy_pg=1.0, pg=1.0, box_area_fraction=0.25, centre_point_pg=1.0)
    >>> acc.add(None, [0.0, 0.0, 1.0, 1.0])  # a completion without a map
    >>> acc.summary()["n_scored"], acc.summary()["n_no_map"]
    (1, 1)
    """

    def __init__(self, tolerance_px: float = 0.0) -> None:
        self.tolerance_px = tolerance_px
        self.scores: list[PointingScores] = []
        self.n_no_map = 0
        self.n_empty_map = 0

    def add(self, saliency_map: Any | None, boxes: Any) -> PointingScores | None:
        """Score one row; None (and counted) when `saliency_map` is None or empty."""
        if saliency_map is None:
            self.n_no_map += 1
            return None
        array = as_saliency_map(saliency_map)
        if is_empty_map(array):
            self.n_empty_map += 1
            return None
        box_list = as_boxes(boxes)
        inside = box_mask(array.shape, box_list)
        scores = PointingScores(
            energy_pg=_energy(array, inside),
            pg=_pointing(array, box_mask(array.shape, box_list, self.tolerance_px)),
            box_area_fraction=float(inside.mean()),
            centre_point_pg=centre_point_game(array.shape, box_list, self.tolerance_px),
        )
        self.scores.append(scores)
        return scores

    def summary(self) -> dict[str, float | int | None]:
        """Means over the scored rows (None when no row was scored) and the counts of scored and excluded rows."""
        n = len(self.scores)

        def mean(name: str) -> float | None:
            return math.fsum(getattr(s, name) for s in self.scores) / n if n else None

        return {
            "energy_pg": mean("energy_pg"),
            "pg": mean("pg"),
            "box_area_fraction": mean("box_area_fraction"),
            "centre_point_pg": mean("centre_point_pg"),
            "n_scored": n,
            "n_no_map": self.n_no_map,
            "n_empty_map": self.n_empty_map,
        }
