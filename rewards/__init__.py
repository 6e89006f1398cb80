"""Reward functions for GRPO with TRL's signature `f(prompts, completions, completion_ids, **columns)`, and the
pointing-game metrics they are built on (SPEC section 4)."""

from .accuracy import accuracy_reward, answer_matches, choice_letter, normalize_answer, numbers_match, parse_numbers
from .boxes import Box, as_boxes, box_iou, box_mask, find_answer_box
from .combine import DEFAULT_REWARD_WEIGHTS, REWARD_FUNCS, CombinedReward, RewardFunc, combine, get_reward_funcs
from .format import format_reward
from .grounding import COORDINATE_FRAMES, FAMILY_COORDINATE_FRAMES, coordinate_frame_for, iou_reward, iou_reward_for
from .judge import LLMJudge
from .pointing import (
    PointingGameAccumulator,
    PointingScores,
    as_saliency_map,
    box_area_fraction,
    centre_point_game,
    energy_pointing_game,
    is_empty_map,
    pointing_game,
)
from .saliency import SaliencyReward
from .text import Reasoned, answer_text, completion_text, parse_reasoning, prompt_text

__all__ = [
    "COORDINATE_FRAMES",
    "DEFAULT_REWARD_WEIGHTS",
    "FAMILY_COORDINATE_FRAMES",
    "REWARD_FUNCS",
    "Box",
    "CombinedReward",
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
    "box_area_fraction",
    "box_iou",
    "box_mask",
    "centre_point_game",
    "choice_letter",
    "combine",
    "completion_text",
    "coordinate_frame_for",
    "energy_pointing_game",
    "find_answer_box",
    "format_reward",
    "get_reward_funcs",
    "iou_reward",
    "iou_reward_for",
    "is_empty_map",
    "normalize_answer",
    "numbers_match",
    "parse_numbers",
    "parse_reasoning",
    "pointing_game",
    "prompt_text",
]
