"""Data for grounded reasoning: the synthetic shapes set, loaders and converters for public data, validation."""

from .loaders import SOURCES, MissingSplitError, load_source, read_jsonl, read_records
from .prompts import CAPTION_PROMPT, SYSTEM_PROMPT, caption_messages, format_assistant, prompt_messages, sft_messages
from .schema import EVAL_FEATURES, RL_FEATURES, SFT_FEATURES
from .training_arguments import PromptArguments, TrainingDataArguments, check_choices
from .validation import (
    BBOX_FORMATS,
    BadRowsError,
    RowIssue,
    ValidationReport,
    load_image,
    normalise_boxes,
    parse_boxes,
    rows_to_dataset,
    validate_rows,
)

_SYNTHETIC = {
    "QUESTION_TYPES",
    "SyntheticConfig",
    "caption_text",
    "corpus_texts",
    "generate_split",
    "generate_synthetic",
    "make_example",
}


def __getattr__(name: str):
    # Imported on first use so that `python -m data_tools.synthetic` does not find its module already imported.
    if name in _SYNTHETIC:
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BBOX_FORMATS",
    "CAPTION_PROMPT",
    "EVAL_FEATURES",
    "QUESTION_TYPES",
    "RL_FEATURES",
    "SFT_FEATURES",
    "SOURCES",
    "SYSTEM_PROMPT",
    "BadRowsError",
    "MissingSplitError",
    "PromptArguments",
    "RowIssue",
    "SyntheticConfig",
    "TrainingDataArguments",
    "ValidationReport",
    "caption_messages",
    "caption_text",
    "check_choices",
    "corpus_texts",
    "format_assistant",
    "generate_split",
    "generate_synthetic",
    "load_image",
    "load_source",
    "make_example",
    "normalise_boxes",
    "parse_boxes",
    "prompt_messages",
    "read_jsonl",
    "read_records",
    "rows_to_dataset",
    "sft_messages",
    "validate_rows",
]
