"""SFT cold start: `<think>...</think>answer` reasoning on grounded data, with LoRA, QLoRA or full fine-tuning."""

from .sft_config import SFTScriptArguments
from .sft_trainer import resolve_resume_checkpoint, run_sft

__all__ = ["SFTScriptArguments", "resolve_resume_checkpoint", "run_sft"]
