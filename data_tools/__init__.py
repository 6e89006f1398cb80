"""Data for grounded reasoning: the synthetic shapes set, loaders and converters for public data, validation."""

from .prompts import SYSTEM_PROMPT, format_assistant, sft_messages
from .schema import EVAL_FEATURES, RL_FEATURES, SFT_FEATURES
from .synthetic import (
    QUESTION_TYPES,
    SyntheticConfig,
    corpus_texts,
    generate_split,
    generate_synthetic,
    make_example,
)

__all__ = [
    "EVAL_FEATURES",
    "QUESTION_TYPES",
    "RL_FEATURES",
    "SFT_FEATURES",
    "SYSTEM_PROMPT",
    "SyntheticConfig",
    "corpus_texts",
    "format_assistant",
    "generate_split",
    "generate_synthetic",
    "make_example",
    "sft_messages",
]
