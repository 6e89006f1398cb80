"""Per-row scores of an evaluation and their summary: means with seeded bootstrap intervals, overall and per source.

A row's scores are a flat dict: ``format`` and ``accuracy`` (0/1), and per traced map kind (``flow``, ``direct``)
``<kind>/energy_pg``, ``<kind>/pg``, ``<kind>/box_area_fraction``, ``<kind>/centre_point_pg`` (None when the row
has no usable map) and ``<kind>/status`` (``scored``, ``no_map`` or ``empty_map``). On a decoy benchmark (rows
with ``decoy_answer`` and ``decoy_bbox``, :data:`data_tools.schema.DECOY_FEATURES`) also ``follows_cue`` (the answer
is what the cue says, scored like accuracy) and ``<kind>/cue_energy`` (the map's positive mass on the cue's box),
None on rows without a cue.

A row of several images or a clip's frames (:func:`several_pointing_scores`) has the same keys, scored over all its
maps with the multi-image rewards (mass or peak on an image without evidence counts as outside the boxes), and
its baselines taken over all its images; a clip also has ``<kind>/frame_<f>_energy_pg`` per frame
(:func:`frame_scores`).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rewards import (
    PointingGameAccumulator,
    accuracy_reward,
    as_boxes,
    box_mask,
    centre_point_game,
    energy_pointing_game,
    format_reward,
    frame_energy_pointing_games,
    multi_energy_pointing_game,
    multi_pointing_game,
)

POINTING_FIELDS = ("energy_pg", "pg", "box_area_fraction", "centre_point_pg")
MAP_STATUSES = ("scored", "no_map", "empty_map")


def answer_scores(completions: Sequence[str], solutions: Sequence[str]) -> list[dict[str, float]]:
    """``{"format", "accuracy"}`` of each completion (the format and accuracy rewards, 0 or 1)."""
    fmt = format_reward(None, list(completions))
    acc = accuracy_reward(None, list(completions), solution=list(solutions))
    return [{"format": f, "accuracy": a} for f, a in zip(fmt, acc)]


def pointing_scores(kind: str, saliency_map: np.ndarray | None, boxes: Any, tolerance_px: float = 0.0) -> dict:
    """The pointing-game scores of one map and their baselines, keyed ``<kind>/<field>``, plus ``<kind>/status``."""
    accumulator = PointingGameAccumulator(tolerance_px)
    scores = accumulator.add(saliency_map, boxes)
    status = "scored" if scores is not None else ("no_map" if accumulator.n_no_map else "empty_map")
    values = {f"{kind}/{name}": None if scores is None else getattr(scores, name) for name in POINTING_FIELDS}
    return {**values, f"{kind}/status": status}


def several_pointing_scores(
    kind: str, maps: Sequence[np.ndarray] | None, boxes: Sequence[Any], tolerance_px: float = 0.0
) -> dict:
    """:func:`pointing_scores` of a row of several images (or a clip's frames, one map per frame): ``boxes[i]`` are
    map i's boxes (`rewards.boxes_per_map`), the maps in comparable units (`saliency.ImageMap.upsampled_mass`).

    ``energy_pg`` / ``pg`` are `rewards.multi_energy_pointing_game` / `rewards.multi_pointing_game`; the baselines
    are their values for a uniform map over all the images (``box_area_fraction``: the boxes' share of all the
    pixels) and for a map that peaks at every image's centre (``centre_point_pg``: 1.0 when each image's centre lies
    in its own boxes, so 0.0 as soon as one image has no evidence).
    """
    if not maps:
        return {**{f"{kind}/{name}": None for name in POINTING_FIELDS}, f"{kind}/status": "no_map"}
    energy = multi_energy_pointing_game(maps, boxes)
    if energy is None:
        return {**{f"{kind}/{name}": None for name in POINTING_FIELDS}, f"{kind}/status": "empty_map"}
    shapes = [np.asarray(m).shape for m in maps]
    inside = sum(_box_pixels(shape, own) for shape, own in zip(shapes, boxes))
    values = {
        "energy_pg": energy,
        "pg": multi_pointing_game(maps, boxes, tolerance_px),
        "box_area_fraction": inside / sum(shape[0] * shape[1] for shape in shapes),
        "centre_point_pg": float(
            all(len(own) and centre_point_game(shape, own, tolerance_px) for shape, own in zip(shapes, boxes))
        ),
    }
    return {**{f"{kind}/{name}": values[name] for name in POINTING_FIELDS}, f"{kind}/status": "scored"}


def _box_pixels(shape: tuple[int, int], boxes: Any) -> int:
    """The number of pixels of a ``shape`` image inside the union of ``boxes`` (0 without boxes)."""
    return int(box_mask(shape, as_boxes(boxes)).sum()) if len(boxes) else 0


def frame_scores(
    kind: str, maps: Sequence[np.ndarray] | None, boxes: Any, box_frame: Sequence[int]
) -> dict[str, float | None]:
    """Energy-PG of each frame of a clip given as frames (one map per frame) that carries boxes, keyed
    ``<kind>/frame_<f>_energy_pg`` (`rewards.frame_energy_pointing_games`; None without a usable map)."""
    frames = sorted({int(f) for f in box_frame})
    if not maps:
        return {f"{kind}/frame_{f}_energy_pg": None for f in frames}
    spans = [(i, i + 1) for i in range(len(maps))]
    scores = frame_energy_pointing_games(maps, spans, boxes, box_frame)
    return {f"{kind}/frame_{f}_energy_pg": scores[f] for f in frames}


def cue_scores(
    completion: str, maps: Mapping[str, np.ndarray | None], decoy_answer: str, decoy_boxes: Any
) -> dict[str, float | None]:
    """``follows_cue`` and ``<kind>/cue_energy`` of one decoy-benchmark row (None without a cue or a usable map)."""
    if not decoy_answer:
        return {"follows_cue": None, **{f"{kind}/cue_energy": None for kind in maps}}
    scores: dict[str, float | None] = {"follows_cue": accuracy_reward(None, [completion], solution=[decoy_answer])[0]}
    for kind, saliency_map in maps.items():
        scores[f"{kind}/cue_energy"] = None if saliency_map is None else energy_pointing_game(saliency_map, decoy_boxes)
    return scores


def mean_interval(
    values: Sequence[float | None], *, bootstrap_samples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict[str, float | int | None]:
    """Mean of the non-None ``values`` and its percentile bootstrap interval over the rows.

    Rows are resampled with replacement, None rows included (they stay excluded from each resample's mean), so
    the interval also reflects how many rows are scored. Returns ``{"mean", "low", "high", "n"}``; means are None
    without any value, bounds None without resamples. The same seed and row count draw the same resamples.
    """
    array = np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)
    scored = ~np.isnan(array)
    n = int(scored.sum())
    result: dict[str, float | int | None] = {
        "mean": float(array[scored].mean()) if n else None,
        "low": None,
        "high": None,
        "n": n,
    }
    if not n or not bootstrap_samples:
        return result
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(array), size=(bootstrap_samples, len(array)))
    counts = scored[draws].sum(1)
    sums = np.where(scored, array, 0.0)[draws].sum(1)
    means = sums[counts > 0] / counts[counts > 0]
    tail = (1 - confidence) / 2 * 100
    result["low"], result["high"] = (float(x) for x in np.percentile(means, [tail, 100 - tail]))
    return result


def spread(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the values that exist, e.g. one metric over training seeds (None where
    there are none; a standard deviation of 0 for one value)."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    return statistics.fmean(present), statistics.stdev(present) if len(present) > 1 else 0.0


def summarise(
    rows: Sequence[Mapping[str, Any]],
    sources: Sequence[str],
    *,
    bootstrap_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Every numeric score of ``rows`` as :func:`mean_interval`, every ``*/status`` as counts; overall and per source.

    A score that only some rows have (a clip's per-frame scores) counts as None on the others."""
    if len(rows) != len(sources):
        raise ValueError(f"got {len(sources)} sources for {len(rows)} rows")

    keys = list(dict.fromkeys(key for row in rows for key in row))  # rows of several images add per-frame keys

    def summary(indices: Sequence[int]) -> dict[str, Any]:
        out: dict[str, Any] = {"n": len(indices)}
        for key in keys:
            column = [rows[i].get(key) for i in indices]
            if key.endswith("/status"):
                out[key.removesuffix("/status") + "/counts"] = {s: column.count(s) for s in MAP_STATUSES}
            else:
                out[key] = mean_interval(column, bootstrap_samples=bootstrap_samples, confidence=confidence, seed=seed)
        return out

    groups: dict[str, list[int]] = defaultdict(list)
    for i, source in enumerate(sources):
        groups[source].append(i)
    return {**summary(range(len(rows))), "per_source": {s: summary(ix) for s, ix in sorted(groups.items())}}


def answer_metrics(completions: Sequence[str], solutions: Sequence[str], sources: Sequence[str]) -> dict:
    """Format rate and accuracy (fractions in [0, 1]) overall and per `dataset` source, with row counts."""
    summary = summarise(answer_scores(completions, solutions), sources, bootstrap_samples=0)

    def flat(group: dict) -> dict:
        return {
            "n": group["n"],
            "format_rate": group["format"]["mean"] or 0.0,
            "accuracy": group["accuracy"]["mean"] or 0.0,
        }

    return {**flat(summary), "per_source": {s: flat(g) for s, g in summary["per_source"].items()}}
