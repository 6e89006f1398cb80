"""Shared pieces of the GRPO trainer tests: a reward that records what TRL hands the rewards, and the settings of a
short CPU run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steering import steer_to

from rl import SaliencyGRPOConfig


class RecordInputs:
    """A reward of weight 0 that keeps the columns TRL passed to the rewards."""

    __name__ = "record_inputs"

    def __init__(self):
        self.calls: list[dict] = []

    def __call__(self, prompts, completions, completion_ids=None, **columns):
        self.calls.append({"completions": completions, **columns})
        return [0.0] * len(completions)


def short_grpo_args(
    output_dir: str | Path,
    *,
    steer: str | None = None,
    tokenizer: Any = None,
    config_class=SaliencyGRPOConfig,
    **overrides,
):
    """``config_class`` settings of a short CPU run (1 step, 2 generations of up to 24 tokens, every step logged,
    nothing saved or reported, seed 0) with ``overrides``; ``steer`` (with ``tokenizer``) makes every completion spell
    that text (:func:`steering.steer_to`)."""
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "max_steps": 1,
        "num_generations": 2,
        "max_completion_length": 24,
        "learning_rate": 1e-5,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "bf16": False,
        "seed": 0,
    }
    if steer is not None:
        settings["generation_kwargs"] = {"sequence_bias": steer_to(tokenizer, steer)}
    return config_class(**{**settings, **overrides})
