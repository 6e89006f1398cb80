"""SFT cold start: `<think>...</think>answer` reasoning on grounded data, with LoRA, QLoRA or full fine-tuning."""

from .sft_config import SFTScriptArguments
from .sft_data import load_sft_dataset
from .sft_trainer import run_sft

__all__ = ["SFTScriptArguments", "load_sft_dataset", "run_sft"]
