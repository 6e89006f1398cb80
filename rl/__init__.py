"""GRPO with the saliency-alignment reward: the policy's own saliency maps reach TRL's reward functions."""

from .grpo_config import GRPOScriptArguments, SaliencyGRPOConfig
from .grpo_data import load_grpo_dataset
from .grpo_run import run_grpo
from .grpo_trainer import MAP_COLUMNS, SaliencyGRPOTrainer

__all__ = [
    "MAP_COLUMNS",
    "GRPOScriptArguments",
    "SaliencyGRPOConfig",
    "SaliencyGRPOTrainer",
    "load_grpo_dataset",
    "run_grpo",
]
