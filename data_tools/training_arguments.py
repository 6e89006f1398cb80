"""The command-line fields shared by the stages: the system prompt (every stage), a training stage's rows (SFT and
GRPO), and the check of fixed choices that the argument parser leaves to the dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import datasets

from .prompts import SYSTEM_PROMPT


def check_choices(args: Any) -> None:
    """Reject a value outside its field's choices: a `Literal` type, or for a list field (whose items the parser
    cannot type as a `Literal`) the `choices` of its metadata. The parser checks the command line, not the recipe."""
    hints = get_type_hints(type(args))
    for f in fields(args):
        hint = hints[f.name]
        if get_origin(hint) is Literal:
            choices = get_args(hint)
        elif list in {get_origin(hint), *map(get_origin, get_args(hint))}:  # list[str], list[str] | None
            choices = tuple(f.metadata.get("choices", ()))
        else:
            continue
        value = getattr(args, f.name)
        for item in value if isinstance(value, list) else [value]:
            if choices and item not in choices:
                raise ValueError(f"--{f.name} {item!r}: choose one of {', '.join(map(str, choices))}")


@dataclass
class PromptArguments:
    """`--system_prompt`, one field for every stage that builds prompts from rows."""

    system_prompt: str = field(
        default=SYSTEM_PROMPT,
        metadata={
            "help": "System prompt of every prompt built from a row (default: data_tools.SYSTEM_PROMPT, the one the "
            "synthetic SFT rows carry). Give every stage of a run the same one."
        },
    )


@dataclass
class TrainingDataArguments(PromptArguments):
    """Where a stage's training rows come from, how images are sized, and what happens to rows that fail validation.

    A stage's script arguments inherit these and redeclare `dataset_source` (its layouts) and the split's default.
    """

    dataset_name: str = field(
        default="outputs/data",
        metadata={
            "help": "A data set saved with `save_to_disk` (e.g. by `python -m data_tools.synthetic`), a local "
            ".json/.jsonl/.parquet file (e.g. a cold-start JSON with `--dataset_source llava_cot`) or a hub name."
        },
    )
    dataset_source: str = field(default="", metadata={"help": "Layout of `dataset_name` (set by each stage)."})
    image_dir: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths in the data are resolved against."}
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (after validation); all rows when unset."}
    )
    on_bad_row: Literal["error", "skip"] = field(
        default="error",
        metadata={
            "help": "Rows that fail validation: 'error' stops before training and lists every bad row; 'skip' "
            "leaves them out and writes the rejection report to <output_dir>/rejected_rows.jsonl."
        },
    )
    max_image_side: int | None = field(
        default=None,
        metadata={
            "help": "Resize images whose longer side exceeds this many pixels (boxes stay right); none when unset."
        },
    )
    min_pixels: int | None = field(
        default=None,
        metadata={"help": "Processor's lower pixel limit per image (Qwen families); model default when unset."},
    )
    max_pixels: int | None = field(
        default=None,
        metadata={"help": "Processor's upper pixel limit per image (Qwen families); model default when unset."},
    )

    def __post_init__(self) -> None:
        if not self.dataset_source:
            raise ValueError("--dataset_source must name the layout of --dataset_name")
        check_choices(self)
        for name in ("max_train_samples", "max_image_side", "min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 when set (unset: no limit), got {value}")

    def load_train_rows(self, loader: Callable[..., datasets.Dataset], output_dir: str | Path) -> datasets.Dataset:
        """The validated training rows from ``loader`` (a stage's `load_*_dataset`), cut to `max_train_samples`."""
        rows = loader(
            self.dataset_name,
            source=self.dataset_source,
            split=self.dataset_train_split,
            image_dir=self.image_dir,
            on_bad_row=self.on_bad_row,
            max_image_side=self.max_image_side,
            report_path=Path(output_dir) / "rejected_rows.jsonl",
            system_prompt=self.system_prompt,
        )
        if not len(rows):
            raise ValueError(
                f"--dataset_name {self.dataset_name!r} split {self.dataset_train_split!r}: no row left to train on "
                f"(see {Path(output_dir) / 'rejected_rows.jsonl'})"
            )
        if self.max_train_samples is not None:
            rows = rows.select(range(min(self.max_train_samples, len(rows))))
        return rows
