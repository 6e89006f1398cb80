"""Reward functions by name, weights for TRL, and a weighted sum for use outside TRL."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from .accuracy import accuracy_reward
from .format import format_reward
from .grounding import iou_reward, iou_reward_for
from .saliency import SaliencyReward

RewardFunc = Callable[..., list[float | None]]

# Factories, so that each trainer gets its own SaliencyReward (and its own counts).
REWARD_FUNCS: dict[str, Callable[[], RewardFunc]] = {
    "format": lambda: format_reward,
    "accuracy": lambda: accuracy_reward,
    "iou": lambda: iou_reward,
    "saliency": SaliencyReward,
    "saliency_pg": partial(SaliencyReward, metric="pg"),
    "saliency_if_correct": partial(SaliencyReward, when_correct=True),
    "saliency_direct": partial(SaliencyReward, map_key="saliency_map_direct"),
    "saliency_direct_pg": partial(SaliencyReward, metric="pg", map_key="saliency_map_direct"),
}
DEFAULT_REWARD_WEIGHTS: dict[str, float] = {"format": 1.0, "accuracy": 1.0, "saliency": 1.0}


def get_reward_funcs(
    weights: Mapping[str, float] = DEFAULT_REWARD_WEIGHTS, *, iou_coordinate_frame: str = "auto"
) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions named in `weights` (keys of `REWARD_FUNCS`) and their weights, in the same order; `iou`
    reads boxes in `iou_coordinate_frame` (`grounding.COORDINATE_FRAMES`).

    Made for TRL: `GRPOTrainer(reward_funcs=funcs, args=GRPOConfig(reward_weights=weights, ...))`.
    """
    unknown = [name for name in weights if name not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; known rewards: {sorted(REWARD_FUNCS)}")
    if not weights:
        raise ValueError("at least one reward is needed")
    funcs = [iou_reward_for(iou_coordinate_frame) if name == "iou" else REWARD_FUNCS[name]() for name in weights]
    return funcs, [float(w) for w in weights.values()]


class CombinedReward:
    """A weighted sum of reward functions, itself a reward function; see `combine`."""

    def __init__(self, reward_funcs: Sequence[RewardFunc], weights: Sequence[float], name: str) -> None:
        self.reward_funcs = list(reward_funcs)
        self.weights = [float(w) for w in weights]
        self.__name__ = name

    def __call__(
        self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any
    ) -> list[float | None]:
        per_func = []
        for func in self.reward_funcs:
            rewards = func(prompts, completions, completion_ids, **kwargs)
            if len(rewards) != len(completions):
                name = getattr(func, "__name__", type(func).__name__)
                raise ValueError(f"reward {name!r} returned {len(rewards)} values for {len(completions)} completions")
            per_func.append(rewards)
        totals: list[float | None] = []
        for rewards in zip(*per_func):
            terms = [w * r for w, r in zip(self.weights, rewards) if r is not None]
            totals.append(math.fsum(terms) if terms else None)
        return totals


def combine(
    reward_funcs: Sequence[RewardFunc], weights: Sequence[float] | None = None, name: str = "combined_reward"
) -> CombinedReward:
    """One reward function returning `sum_i weights[i] * reward_funcs[i]`, as TRL's default aggregation does with
    `reward_weights`: a None from one function is left out of the sum; None when every function returns None.

    `weights` defaults to 1 for every function.
    """
    weights = [1.0] * len(reward_funcs) if weights is None else list(weights)
    if not reward_funcs or len(weights) != len(reward_funcs):
        raise ValueError(f"need one weight per reward function, got {len(weights)} for {len(reward_funcs)}")
    if not all(math.isfinite(w) for w in weights):
        raise ValueError(f"weights must be finite, got {weights}")
    return CombinedReward(reward_funcs, weights, name)
