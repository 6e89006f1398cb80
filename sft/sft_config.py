"""Arguments of the SFT cold start that TRL's `SFTConfig` and `ModelConfig` do not already have."""

from __future__ import annotations

from dataclasses import dataclass, field

from data_tools import TrainingDataArguments


@dataclass
class SFTScriptArguments(TrainingDataArguments):
    """The cold-start data (`TrainingDataArguments`), held-out answers during training, and the adapter merge.

    Parsed together with `trl.SFTConfig` (training) and `trl.ModelConfig` (model, LoRA, QLoRA) by
    `trl.TrlParser`, so one YAML recipe holds all three and any field can be overridden on the command line.
    """

    dataset_source: str = field(
        default="conversational",
        metadata={
            "help": "Layout of `dataset_name`: 'conversational' (rows with `messages` + `images`, our SFT layout), "
            "'llava_cot' or 'mulberry' (public cold-start JSON, converted on load).",
            "choices": ["conversational", "llava_cot", "mulberry"],
        },
    )
    dataset_train_split: str = field(default="sft", metadata={"help": "Split to train on."})
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
        super().__post_init__()
        if self.answer_eval_steps < 0:
            raise ValueError(f"--answer_eval_steps must be >= 0 (0: only at the end), got {self.answer_eval_steps}")
        if self.answer_eval_samples < 1:
            raise ValueError(f"--answer_eval_samples must be >= 1, got {self.answer_eval_samples}")
        if self.answer_eval_max_new_tokens < 1:
            raise ValueError(f"--answer_eval_max_new_tokens must be >= 1, got {self.answer_eval_max_new_tokens}")
