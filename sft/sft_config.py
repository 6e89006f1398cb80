"""Arguments of the SFT cold start that TRL's `SFTConfig` and `ModelConfig` do not already have."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SFTScriptArguments:
    """Where the cold-start data comes from and what to do with the trained adapter.

    Parsed together with `trl.SFTConfig` (training) and `trl.ModelConfig` (model, LoRA, QLoRA) by
    `trl.TrlParser`, so one YAML recipe holds all three and any field can be overridden on the command line.
    """

    dataset_name: str = field(
        default="outputs/data",
        metadata={
            "help": "A data set saved with `save_to_disk` (e.g. by `python -m data_tools.synthetic`), a hub data set "
            "name, or, with `dataset_source` llava_cot/mulberry, the cold-start JSON file."
        },
    )
    dataset_source: str = field(
        default="conversational",
        metadata={
            "help": "Layout of `dataset_name`: 'conversational' (rows with `messages` + `images`, our SFT layout), "
            "'llava_cot' or 'mulberry' (public cold-start JSON, converted on load).",
            "choices": ["conversational", "llava_cot", "mulberry"],
        },
    )
    image_dir: str | None = field(
        default=None, metadata={"help": "Folder that relative image paths in the data are resolved against."}
    )
    dataset_train_split: str = field(default="sft", metadata={"help": "Split to train on."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (after validation); all rows when unset."}
    )
    on_bad_row: str = field(
        default="error",
        metadata={
            "help": "What to do with rows that fail validation: 'error' stops before training and lists every bad "
            "row; 'skip' leaves them out and writes the rejection report next to the output.",
            "choices": ["error", "skip"],
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
    answer_eval_split: str | None = field(
        default=None,
        metadata={
            "help": "A held-out split of `dataset_name` in the image/problem/solution layout (e.g. 'eval' of the "
            "synthetic data) that the model answers greedily during training; its format rate and accuracy are "
            "logged as heldout/* to every `report_to` backend. None: no held-out answers."
        },
    )
    answer_eval_steps: int = field(
        default=0, metadata={"help": "Answer the held-out split every N steps (0: only at the end of training)."}
    )
    answer_eval_samples: int = field(default=64, metadata={"help": "Held-out rows answered (the first N)."})
    answer_eval_max_new_tokens: int = field(default=64, metadata={"help": "Longest held-out completion."})
    merge_adapter: bool = field(
        default=False,
        metadata={
            "help": "After training a LoRA adapter, also save the base model with the adapter merged in "
            "(to `<output_dir>/merged`)."
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_image_side"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be >= 1 when set (unset: no limit), got {value}")
        if self.answer_eval_steps < 0:
            raise ValueError(f"--answer_eval_steps must be >= 0 (0: only at the end), got {self.answer_eval_steps}")
        if self.answer_eval_samples < 1:
            raise ValueError(f"--answer_eval_samples must be >= 1, got {self.answer_eval_samples}")
        if self.answer_eval_max_new_tokens < 1:
            raise ValueError(f"--answer_eval_max_new_tokens must be >= 1, got {self.answer_eval_max_new_tokens}")
