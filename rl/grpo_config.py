"""Configuration of GRPO with the saliency-alignment reward."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import GRPOConfig


@dataclass
class SaliencyGRPOConfig(GRPOConfig):
    """`trl.GRPOConfig` plus how the saliency maps are captured and which rewards are used.

    Everything of GRPO itself (group size, KL, loss type, vLLM, ...) is TRL's and keeps TRL's meaning.
    """

    reward_funcs: list[str] = field(
        default_factory=lambda: ["format", "accuracy", "saliency"],
        metadata={
            "help": "Reward functions by name, in the order of `reward_weights`. Known names: format, accuracy, "
            "saliency, pointing_game, iou."
        },
    )
    saliency_capture: str = field(
        default="auto",
        metadata={
            "help": "Where the tracer reads the maps: 'generate' (during HF generate, no extra forward), 'score' (a "
            "traced forward over prompt + completion; required with vLLM), or 'auto' ('score' with vLLM, else "
            "'generate').",
            "choices": ["auto", "generate", "score"],
        },
    )
    saliency_map: str = field(
        default="flow",
        metadata={
            "help": "Which map the saliency reward scores: 'flow' (image -> reasoning -> answer, the published "
            "choice) or 'direct' (image -> answer).",
            "choices": ["flow", "direct"],
        },
    )
    saliency_row: str = field(
        default="generator",
        metadata={
            "help": "Row of a thinking token t in the flow map: 'generator' (q(t), the position that generated t; "
            "published) or 'self' (pos(t), the token's own position).",
            "choices": ["generator", "self"],
        },
    )
    saliency_metric: str = field(
        default="energy_pg",
        metadata={"help": "How the saliency reward scores a map: 'energy_pg' or 'pg'.", "choices": ["energy_pg", "pg"]},
    )
