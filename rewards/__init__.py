"""Reward functions for GRPO with TRL's signature `f(prompts, completions, completion_ids, **columns)`, chosen by
name or dotted import path (`get_reward_funcs`), and the pointing-game metrics they are built on (SPEC section 4)."""

import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .accuracy import accuracy_reward, answer_matches, choice_letter, normalize_answer, numbers_match, parse_numbers
from .boxes import Box, as_boxes, box_iou, box_mask, find_answer_box
from .format import format_reward
from .grounding import COORDINATE_FRAMES, FAMILY_COORDINATE_FRAMES, coordinate_frame_for, iou_reward, iou_reward_for
from .judge import LLMJudge
from .pointing import (
    PointingGameAccumulator,
    PointingScores,
    as_saliency_map,
    as_saliency_maps,
    box_area_fraction,
    boxes_per_map,
    centre_point_game,
    energy_pointing_game,
    frame_energy_pointing_games,
    is_empty_map,
    multi_energy_pointing_game,
    multi_pointing_game,
    pointing_game,
)
from .saliency import SaliencyReward
from .text import Reasoned, answer_text, completion_text, parse_reasoning, prompt_text

RewardFunc = Callable[..., list[float | None]]

# Factories, so that each trainer gets its own SaliencyReward (and its own counts). Each takes the options
# `get_reward_funcs` passes on and reads those it needs.
REWARD_FUNCS: dict[str, Callable[..., RewardFunc]] = {
    "format": lambda **_: format_reward,
    "accuracy": lambda **_: accuracy_reward,
    "iou": lambda iou_coordinate_frame, **_: iou_reward_for(iou_coordinate_frame),
    "judge": lambda judge, **_: _judge(judge),
    "saliency": lambda **_: SaliencyReward(),
    "saliency_pg": lambda pointing_tolerance_px, **_: SaliencyReward(metric="pg", tolerance_px=pointing_tolerance_px),
    "saliency_if_correct": lambda **_: SaliencyReward(when_correct=True),
    "saliency_direct": lambda **_: SaliencyReward(map_key="saliency_map_direct"),
    "saliency_direct_pg": lambda pointing_tolerance_px, **_: SaliencyReward(
        metric="pg", map_key="saliency_map_direct", tolerance_px=pointing_tolerance_px
    ),
}
DEFAULT_REWARD_FUNCS: tuple[str, ...] = ("format", "accuracy", "saliency")


def get_reward_funcs(
    names: Sequence[str] = DEFAULT_REWARD_FUNCS,
    *,
    iou_coordinate_frame: str = "auto",
    pointing_tolerance_px: float = 0.0,
    judge: Mapping[str, Any] | None = None,
) -> list[RewardFunc]:
    """The reward functions `names` name, in order, for `trl.GRPOTrainer(reward_funcs=...)`; TRL weighs them with
    `GRPOConfig.reward_weights`.

    A name is a key of `REWARD_FUNCS` or, as in TRL's example scripts, a dotted import path to a reward function
    (`my_pkg.my_module.my_reward`, importable from the working directory). Options: `iou` reads boxes in
    `iou_coordinate_frame` (`grounding.COORDINATE_FRAMES`); the pointing-game rewards (`saliency_pg`,
    `saliency_direct_pg`) count a peak within `pointing_tolerance_px` pixels of a box as a hit; `judge` holds the
    `LLMJudge` arguments of the `judge` reward (`base_url` and `model` at least). Errors name `--reward_funcs`.
    """
    if not names:
        raise ValueError("--reward_funcs: at least one reward is needed")
    options = {
        "iou_coordinate_frame": iou_coordinate_frame,
        "pointing_tolerance_px": pointing_tolerance_px,
        "judge": judge,
    }
    return [REWARD_FUNCS[name](**options) if name in REWARD_FUNCS else _imported(name) for name in names]


def _judge(settings: Mapping[str, Any] | None) -> LLMJudge:
    settings = dict(settings or {})
    if not settings.get("base_url") or not settings.get("model"):
        raise ValueError("the judge reward asks the chat model --judge_model at --judge_base_url: set both")
    return LLMJudge(**settings)


def _imported(path: str) -> RewardFunc:
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(
            f"--reward_funcs: {path!r} is neither a known reward ({', '.join(REWARD_FUNCS)}) nor a dotted import path to "
            "one (my_pkg.my_module.my_reward)"
        )
    if os.getcwd() not in sys.path:  # as TRL's scripts do: modules of the working directory import
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"--reward_funcs: cannot import the reward {path!r}: {error}") from error
    if not callable(func):
        raise TypeError(f"--reward_funcs: {path!r} is a {type(func).__name__}, not a reward function")
    return func


__all__ = [
    "COORDINATE_FRAMES",
    "DEFAULT_REWARD_FUNCS",
    "FAMILY_COORDINATE_FRAMES",
    "REWARD_FUNCS",
    "Box",
    "LLMJudge",
    "PointingGameAccumulator",
    "PointingScores",
    "Reasoned",
    "RewardFunc",
    "SaliencyReward",
    "accuracy_reward",
    "answer_matches",
    "answer_text",
    "as_boxes",
    "as_saliency_map",
    "as_saliency_maps",
    "box_area_fraction",
    "box_iou",
    "box_mask",
    "boxes_per_map",
    "centre_point_game",
    "choice_letter",
    "completion_text",
    "coordinate_frame_for",
    "energy_pointing_game",
    "find_answer_box",
    "format_reward",
    "frame_energy_pointing_games",
    "get_reward_funcs",
    "iou_reward",
    "iou_reward_for",
    "is_empty_map",
    "multi_energy_pointing_game",
    "multi_pointing_game",
    "normalize_answer",
    "numbers_match",
    "parse_numbers",
    "parse_reasoning",
    "pointing_game",
    "prompt_text",
]
