"""Running the GRPO stage from parsed arguments (what `launch/grpo.py` calls)."""

from __future__ import annotations

from pathlib import Path

from transformers import set_seed
from trl import ModelConfig

from data_tools.lengths import conversation_lengths, drop_too_long
from rewards import RewardFunc, coordinate_frame_for, get_reward_funcs
from vlm import load_model_and_processor, resolve_resume_checkpoint

from .grpo_config import GRPOScriptArguments, SaliencyGRPOConfig
from .grpo_data import load_grpo_dataset
from .grpo_trainer import SaliencyGRPOTrainer


def run_grpo(script_args: GRPOScriptArguments, training_args: SaliencyGRPOConfig, model_args: ModelConfig) -> Path:
    """Train the policy with GRPO, save it (the adapter for LoRA/QLoRA) and the processor to `output_dir`."""
    names = training_args.reward_funcs
    if training_args.reward_weights is not None and len(training_args.reward_weights) != len(names):
        raise ValueError(
            f"--reward_weights has {len(training_args.reward_weights)} values for {len(names)} --reward_funcs "
            f"({', '.join(names)})"
        )
    reward_funcs(training_args)  # an unknown reward or a missing option stops the run before the model loads
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
        reward_funcs=reward_funcs(training_args, model.config.model_type),
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


def reward_funcs(training_args: SaliencyGRPOConfig, model_type: str | None = None) -> list[RewardFunc]:
    """The rewards `--reward_funcs` names, with the options of `training_args`; `model_type` gives the frame of
    `--iou_coordinate_frame model_family` (without it, the iou reward reads boxes in the `auto` frame)."""
    frame = "auto"
    if model_type is not None and "iou" in training_args.reward_funcs:
        frame = coordinate_frame_for(training_args.iou_coordinate_frame, model_type)
    judge = {
        "base_url": training_args.judge_base_url,
        "model": training_args.judge_model,
        "api_key_env": training_args.judge_api_key_env,
        "timeout_s": training_args.judge_timeout_s,
        "max_retries": training_args.judge_max_retries,
    }
    return get_reward_funcs(
        training_args.reward_funcs,
        iou_coordinate_frame=frame,
        pointing_tolerance_px=training_args.pointing_tolerance_px,
        judge=judge,
    )
