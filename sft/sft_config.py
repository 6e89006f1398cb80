"""Arguments of the SFT cold start that TRL's `SFTConfig` and `ModelConfig` do not already have."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data_tools import TrainingDataArguments


@dataclass
class SFTScriptArguments(TrainingDataArguments):
    """The cold-start data (`TrainingDataArguments`), held-out answers during training, and the adapter merge.

    Parsed together with `trl.SFTConfig` (training) and `trl.ModelConfig` (model, LoRA, QLoRA) by
    `trl.TrlParser`, so one YAML recipe holds all three and any field can be overridden on the command line.
    """

    dataset_source: Literal["conversational", "llava_cot", "mulberry"] = field(
        default="conversational",
        metadata={
            "help": "Layout of `dataset_name`: 'conversational' (rows with `messages` + `images`, our SFT layout), "
            "'llava_cot' or 'mulberry' (public cold-start JSON, converted on load). Every row's system turn becomes "
            "`--system_prompt`, the one the held-out answers, GRPO and the evaluation prompt with (rows without a "
            "system turn, such as the tiny base's short-answer pre-training rows, keep none)."
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
    attention_grounding_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the attention-grounding loss added to the token loss (sft/attention_grounding.py): "
            "minus the log of the share of the answer tokens' image attention that lies on the row's `bbox` "
            "boxes. 0: off. Needs rows with a `bbox` column, --attn_implementation eager and "
            "--activation_checkpointing false; meant for pre-training small models (the tiny base's third stage)."
        },
    )
    attention_grounding_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Decoder layers whose attention the grounding loss reads (negative indices count from the end); "
            "all layers when unset."
        },
    )
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
        if self.attention_grounding_weight < 0:
            raise ValueError(f"--attention_grounding_weight must be >= 0, got {self.attention_grounding_weight}")
        if self.attention_grounding_layers is not None and not self.attention_grounding_layers:
            raise ValueError("--attention_grounding_layers: give at least one layer, or leave it unset for all")
        if self.answer_eval_max_new_tokens < 1:
            raise ValueError(f"--answer_eval_max_new_tokens must be >= 1, got {self.answer_eval_max_new_tokens}")
