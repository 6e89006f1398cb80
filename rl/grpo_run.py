"""Running the GRPO stage from parsed arguments (what `launch/grpo.py` calls)."""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed
from trl import ModelConfig

from rewards import get_reward_funcs
from vlm import load_model_and_processor, resolve_resume_checkpoint

from .grpo_config import GRPOScriptArguments, SaliencyGRPOConfig
from .grpo_data import load_grpo_dataset
from .grpo_trainer import SaliencyGRPOTrainer


def run_grpo(script_args: GRPOScriptArguments, training_args: SaliencyGRPOConfig, model_args: ModelConfig) -> Path:
    """Train the policy with GRPO, save it (the adapter for LoRA/QLoRA) and the processor to `output_dir`."""
    weights = training_args.reward_weights or [1.0] * len(training_args.reward_funcs)
    if len(weights) != len(training_args.reward_funcs):
        raise ValueError(
            f"--reward_weights has {len(weights)} values for {len(training_args.reward_funcs)} --reward_funcs "
            f"({', '.join(training_args.reward_funcs)})"
        )
    reward_funcs, training_args.reward_weights = get_reward_funcs(dict(zip(training_args.reward_funcs, weights)))
    training_args.remove_unused_columns = False  # solution, bbox, ... are the rewards' inputs
    train_dataset = script_args.load_train_rows(load_grpo_dataset, training_args.output_dir)

    set_seed(training_args.seed)  # before the model: a LoRA adapter's initial weights are drawn when it is built
    model, processor = load_model_and_processor(
        model_args,
        for_training=True,
        trust_remote_code=training_args.trust_remote_code,
        min_pixels=script_args.min_pixels,
        max_pixels=script_args.max_pixels,
    )
    trainer = SaliencyGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
    )
    trainer.train(resume_from_checkpoint=resolve_resume_checkpoint(training_args))
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()
    return output_dir
