"""Held-out evaluation of a base, SFT or GRPO checkpoint."""

from .generation import build_prompts, generate_completions
from .metrics import answer_metrics

__all__ = ["answer_metrics", "build_prompts", "generate_completions"]
