"""The format reward: `<think>reasoning</think>answer`."""

from __future__ import annotations

from typing import Any

from .text import completion_text, parse_reasoning


def format_reward(prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any) -> list[float]:
    """1.0 for exactly one `<think>non-empty</think>` followed by a non-empty answer, else 0.0 (see `text.layout`)."""
    return [1.0 if parse_reasoning(completion_text(completion)) is not None else 0.0 for completion in completions]
