"""Running the GRPO stage from parsed arguments (what `launch/grpo.py` calls)."""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed
from trl import ModelConfig

from data_tools.lengths import conversation_lengths, drop_too_long
from rewards import coordinate_frame_for, get_reward_funcs
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
    named = dict(zip(training_args.reward_funcs, weights))
    get_reward_funcs(named)  # an unknown reward stops the run before the model loads
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
    frame = "auto"
    if "iou" in named:
        frame = coordinate_frame_for(training_args.iou_coordinate_frame, model.config.model_type)
    reward_funcs, training_args.reward_weights = get_reward_funcs(named, iou_coordinate_frame=frame)
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if context is not None:
        # Nothing in TRL's GRPO limits the prompt; one that leaves no room for the completion fails mid-run.
        train_dataset = drop_too_long(
            train_dataset,
            conversation_lengths(processor, train_dataset, "prompt", add_generation_prompt=True),
            context - training_args.max_completion_length,
            what=f"prompt (image tokens included) that leaves under --max_completion_length tokens of the model's "
            f"{context}-token context",
            flag="the model's max_position_embeddings minus --max_completion_length",
            on_bad_row=script_args.on_bad_row,
        )
    trainer = SaliencyGRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
    )
    trainer.train(
        resume_from_checkpoint=resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(output_dir)
    trainer.accelerator.wait_for_everyone()
    return output_dir
