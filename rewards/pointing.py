"""Pointing game metrics on saliency maps, their baselines, and an aggregator for evaluation.

A saliency map is a 2-D array at the image's pixel size, `map[row, col]`; boxes are normalised xyxy (see
`boxes.as_boxes` for the accepted forms and `boxes.box_mask` for which pixels belong to a box).

A map is *empty* when it has no positive mass or any non-finite value (NaN, inf). The metrics return None for an
empty map: as a reward it scores 0 and is counted (see `SaliencyReward`), as an evaluation metric it is excluded
and counted (see `PointingGameAccumulator`). Negative values carry no mass: only `max(map, 0)` counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .boxes import as_boxes, box_mask


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
