"""The saliency-alignment reward: how well the policy's own saliency map points at the annotated evidence."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .accuracy import answer_matches
from .boxes import as_boxes
from .pointing import as_saliency_maps, boxes_per_map, multi_energy_pointing_game, multi_pointing_game
from .text import answer_text, completion_text, parse_reasoning

SALIENCY_METRICS = ("energy_pg", "pg")
OUTCOMES = ("scored", "bad_format", "no_map", "empty_map")
PLACEMENT_COLUMNS = ("bbox_image", "bbox_frame", "saliency_frames")
"""Optional columns placing a row's boxes on its images or video frames, and each map's frames (see SaliencyReward)."""


class SaliencyReward:
    """Reward function: the pointing-game score of each completion's saliency map times its format reward.

    Reads two columns, one entry per completion: `map_key` (default `saliency_map`; a 2-D float array at the
    image's pixel size, or None when the completion has no map) and `box_key` (default `bbox`; the row's
    normalised xyxy boxes, in any form `boxes.as_boxes` accepts). The tracer decides which map fills a column
    (flow or direct); point `map_key` at another column, e.g. `saliency_map_direct`, to reward that one.

    Several images or a video: the map entry is then a list of 2-D arrays, one per image or video step, in
    comparable units (`saliency.ImageMap.upsampled_mass`), and the row says where each box lies: `bbox_image`
    (per box, the index of its image) or `bbox_frame` (per box, its video frame) with `saliency_frames` (per map,
    the half-open frame range of its step; the trainer writes it). The score is then `multi_energy_pointing_game`
    / `multi_pointing_game`: mass (or the peak) on an image or step without evidence counts as outside the boxes,
    so a map on the wrong image scores low; for a video it is the score over the clip, each step against the boxes
    of the frames merged into it. These columns may be absent or None on single-image rows.

    Every completion ends in one outcome, counted in `counts` (cumulative, per process, cleared by
    `reset_counts`): `scored`; `bad_format` (no valid `<think>...</think>answer`, reward 0); `no_map` (the map is
    None, reward 0); `empty_map` (no positive mass or a non-finite value, reward 0). When TRL passes `log_metric`,
    the batch fractions of the last three are logged under `<name>/<outcome>`.

    With `when_correct`, only completions whose answer matches the row's `solution` column (the rule of
    `accuracy_reward`) are scored; a wrong answer gets 0 and the outcome `wrong_answer`. The map then only ranks
    right answers against each other, so the saliency term cannot pay for a wrong answer with a better map.

    Args:
        metric: `"energy_pg"` (default, in [0, 1]) or `"pg"` (0 or 1).
        map_key: column holding the maps.
        box_key: column holding the boxes.
        tolerance_px: pointing-game tolerance in pixels (`pg` only).
        name: the name TRL logs the reward under; default `saliency_<metric>`, with the part of `map_key` after
            `saliency_map_` inserted (`saliency_direct_energy_pg` for `saliency_map_direct`) and `_if_correct`
            appended with `when_correct`.
        when_correct: score right answers only (reads the `solution` column).
    """

    def __init__(
        self,
        metric: str = "energy_pg",
        map_key: str = "saliency_map",
        box_key: str = "bbox",
        tolerance_px: float = 0.0,
        name: str | None = None,
        when_correct: bool = False,
    ) -> None:
        if metric not in SALIENCY_METRICS:
            raise ValueError(f"metric must be one of {SALIENCY_METRICS}, got {metric!r}")
        if metric == "energy_pg" and tolerance_px:
            raise ValueError("tolerance_px applies to the pointing game only (metric='pg')")
        self.metric = metric
        self.map_key = map_key
        self.box_key = box_key
        self.tolerance_px = tolerance_px
        self.when_correct = when_correct
        if name is None:
            variant = map_key.removeprefix("saliency_map").strip("_")
            gate = "if_correct" if when_correct else ""
            name = "_".join(part for part in ("saliency", variant, metric, gate) if part)
        self.__name__ = name
        self.outcomes = OUTCOMES + ("wrong_answer",) if when_correct else OUTCOMES
        self.counts = dict.fromkeys(self.outcomes, 0)

    def reset_counts(self) -> dict[str, int]:
        """Return the counts so far and start again from zero."""
        counts, self.counts = self.counts, dict.fromkeys(self.outcomes, 0)
        return counts

    def _score(self, maps: list[Any], boxes: list[list[Any]]) -> float | None:
        if self.metric == "pg":
            return multi_pointing_game(maps, boxes, self.tolerance_px)
        return multi_energy_pointing_game(maps, boxes)

    def __call__(
        self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float]:
        keys = (self.map_key, self.box_key, "solution") if self.when_correct else (self.map_key, self.box_key)
        for key in keys:
            if key not in kwargs:
                hint = "; the trainer must add the saliency map of each completion" if key == self.map_key else ""
                raise ValueError(
                    f"{self.__name__} reads the column {key!r}, which is missing (columns: {sorted(kwargs)}){hint}"
                )
            if len(kwargs[key]) != len(completions):
                raise ValueError(f"column {key!r} has {len(kwargs[key])} entries for {len(completions)} completions")
        batch = dict.fromkeys(self.outcomes, 0)
        rewards = []
        solutions = kwargs["solution"] if self.when_correct else [None] * len(completions)
        for key in PLACEMENT_COLUMNS:
            if kwargs.get(key) is not None and len(kwargs[key]) != len(completions):
                raise ValueError(f"column {key!r} has {len(kwargs[key])} entries for {len(completions)} completions")
        placement = [kwargs.get(key) or [None] * len(completions) for key in PLACEMENT_COLUMNS]
        for row, (completion, saliency_map, boxes, solution, box_image, box_frame, map_frames) in enumerate(
            zip(completions, kwargs[self.map_key], kwargs[self.box_key], solutions, *placement)
        ):
            boxes = as_boxes(boxes, row=row, field=self.box_key)
            score = None
            text = completion_text(completion)
            if parse_reasoning(text) is None:
                outcome = "bad_format"
            elif self.when_correct and not answer_matches(answer_text(text), solution):
                outcome = "wrong_answer"
            elif saliency_map is None:
                outcome = "no_map"
            else:
                try:
                    maps = as_saliency_maps(saliency_map)
                except ValueError as error:
                    raise ValueError(f"row {row}, column {self.map_key!r}: {error}") from None
                try:
                    placed = boxes_per_map(len(maps), boxes, box_image, box_frame, map_frames)
                except ValueError as error:
                    raise ValueError(f"row {row}, column {self.box_key!r}: {error}") from None
                score = self._score(maps, placed)
                outcome = "empty_map" if score is None else "scored"
            batch[outcome] += 1
            rewards.append(0.0 if score is None else score)
        for outcome, count in batch.items():
            self.counts[outcome] += count
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric) and completions:
            for outcome in self.outcomes[1:]:
                log_metric(f"{self.__name__}/{outcome}", batch[outcome] / len(completions))
        return rewards
