"""The SFT cold start: teach a VLM the `<think>...</think>answer` format on grounded reasoning data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import datasets
from transformers import set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer

from data_tools import MissingSplitError, load_source
from data_tools.lengths import conversation_lengths, drop_too_long
from evaluation import HeldOutAnswersCallback
from saliency.adapters import adapter_for
from vlm import ExactResumeMixin, load_model_and_processor, merge_lora_adapter, resolve_resume_checkpoint

from .attention_grounding import attention_grounding_loss, recorded_attention, row_coverage
from .sft_config import SFTScriptArguments
from .sft_data import load_sft_dataset


class EvidenceBoxesCollator:
    """Wraps TRL's collator: the batch also carries each row's `bbox` boxes as `evidence_boxes` and, for rows of
    several images, the image each box lies on (`bbox_image`) as `evidence_images` (lists, None where absent)."""

    def __init__(self, collator: Callable[[list[dict]], dict]):
        self.collator = collator

    def __call__(self, examples: list[dict]) -> dict:
        boxes = [example.get("bbox") for example in examples]
        images = [example.get("bbox_image") for example in examples]
        return {**self.collator(examples), "evidence_boxes": boxes, "evidence_images": images}


class VLMSFTTrainer(ExactResumeMixin, SFTTrainer):
    """`trl.SFTTrainer` whose resume of a full fine-tune restores the checkpoint's weights exactly, with an optional
    attention-grounding loss (`attention_grounding_weight`, see `sft.attention_grounding`)."""

    def __init__(self, *args, attention_grounding_weight: float = 0.0, attention_grounding_layers=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.attention_grounding_weight = attention_grounding_weight
        if attention_grounding_weight > 0:
            self.data_collator = EvidenceBoxesCollator(self.data_collator)
            self.adapter = adapter_for(self.model)
            blocks = self.adapter.attentions
            chosen = range(len(blocks)) if attention_grounding_layers is None else attention_grounding_layers
            try:
                self.grounded_blocks = [blocks[layer] for layer in chosen]
            except IndexError as error:
                raise ValueError(
                    f"--attention_grounding_layers {attention_grounding_layers}: the model has {len(blocks)} layers"
                ) from error

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        boxes = inputs.pop("evidence_boxes", None)
        box_images = inputs.pop("evidence_images", None) or [None] * len(boxes or ())
        if self.attention_grounding_weight == 0 or boxes is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with recorded_attention(self.grounded_blocks) as attentions:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        counts = (inputs["input_ids"] == self.adapter.image_token_id).sum(1).tolist()
        grids = self.adapter.image_grids(inputs, counts)
        coverages = [
            row_coverage(row_boxes, row_grids, row, row_images)
            for row, (row_boxes, row_grids, row_images) in enumerate(zip(boxes, grids, box_images))
        ]
        grounding = attention_grounding_loss(
            attentions[: len(self.grounded_blocks)],
            inputs["input_ids"],
            inputs["labels"],
            self.adapter.image_token_id,
            coverages,
        )
        mode = "train" if model.training else "eval"
        # TRL's own metric store (trl 1.16), averaged and logged with its entropy and token accuracy.
        self._metrics[mode]["attention_grounding_loss"].append(
            self.accelerator.gather_for_metrics(grounding.detach()).mean().item()
        )
        # Like TRL's MoE aux loss: a per-micro-batch mean, so spread it over the accumulation steps when the token
        # loss is already normalised by the whole batch's token count.
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        extra = self.attention_grounding_weight * grounding / steps
        if return_outputs:
            loss, outputs = result
            return loss + extra, outputs
        return result + extra


def run_sft(script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> Path:
    """Train, save the model (the adapter for LoRA/QLoRA) and processor to `output_dir`, and return that path."""
    if script_args.merge_adapter and not model_args.use_peft:
        raise ValueError(
            "--merge_adapter merges a LoRA adapter: it needs --use_peft true (full fine-tuning saves the "
            "whole model already)"
        )
    training_args.assistant_only_loss = True  # the loss covers the assistant's reasoning and answer only
    training_args.remove_unused_columns = False
    train_dataset = script_args.load_train_rows(load_sft_dataset, training_args.output_dir)
    if script_args.attention_grounding_weight > 0:
        _check_attention_grounding(script_args, training_args, model_args, train_dataset)

    heldout_rows = _heldout_rows(script_args) if script_args.answer_eval_split else None

    set_seed(training_args.seed)  # before the model: a LoRA adapter's initial weights are drawn when it is built
    model, processor = load_model_and_processor(
        model_args,
        for_training=True,
        trust_remote_code=training_args.trust_remote_code,
        min_pixels=script_args.min_pixels,
        max_pixels=script_args.max_pixels,
    )

    if training_args.max_length is not None:
        # TRL's collator would cut a longer row inside its batch: the target lost, a loss of 0, no error.
        lengths = conversation_lengths(processor, train_dataset, "messages")
        train_dataset = drop_too_long(
            train_dataset,
            lengths,
            training_args.max_length,
            what="conversation (prompt, image tokens and target)",
            flag="--max_length",
            on_bad_row=script_args.on_bad_row,
        )

    trainer = VLMSFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        attention_grounding_weight=script_args.attention_grounding_weight,
        attention_grounding_layers=script_args.attention_grounding_layers,
    )
    # TRL divides the summed token loss by `num_items_in_batch` (the label tokens of every process and accumulation
    # step), but the Trainer counts them only for models that accept loss kwargs, which Qwen-VL models say they do
    # not; each process and micro-batch would then average its own tokens, and the gradient would depend on how the
    # global batch is split.
    trainer.model_accepts_loss_kwargs = True
    if heldout_rows is not None:
        trainer.add_callback(
            HeldOutAnswersCallback(
                trainer,
                heldout_rows,
                script_args.answer_eval_steps,
                max_new_tokens=script_args.answer_eval_max_new_tokens,
                system_prompt=script_args.system_prompt,
            )
        )
    trainer.train(
        resume_from_checkpoint=resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    )

    output_dir = Path(training_args.output_dir)
    trainer.save_model(str(output_dir))
    trainer.save_state()  # trainer_state.json: the whole log history, the held-out answers' scores included
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(output_dir)
        if script_args.merge_adapter:
            merge_lora_adapter(output_dir, output_dir / "merged")
    trainer.accelerator.wait_for_everyone()
    return output_dir


def _check_attention_grounding(
    script_args: SFTScriptArguments, training_args: SFTConfig, model_args: ModelConfig, rows: datasets.Dataset
) -> None:
    """Refuse, before any model is loaded, what the attention-grounding loss cannot work with."""
    flag = f"--attention_grounding_weight {script_args.attention_grounding_weight}"
    if model_args.attn_implementation != "eager":
        raise ValueError(
            f"{flag} reads the attention probabilities: it needs --attn_implementation eager, got "
            f"{model_args.attn_implementation!r}"
        )
    if training_args.activation_checkpointing:
        raise ValueError(f"{flag}: the recorded attention must stay in the graph; set --activation_checkpointing false")
    if "bbox" not in rows.column_names:
        raise ValueError(
            f"{flag}: split {script_args.dataset_train_split!r} of --dataset_name {script_args.dataset_name} has no "
            "`bbox` column (the evidence boxes; e.g. the `perception`/`grounding` splits of data_tools.synthetic)"
        )


def _heldout_rows(script_args: SFTScriptArguments) -> datasets.Dataset:
    """The first `answer_eval_samples` rows of `answer_eval_split`, validated before any model is loaded."""
    split = script_args.answer_eval_split
    try:
        rows, _ = load_source("saliency_r1", script_args.dataset_name, split=split, kind="rl", on_bad_row="error")
    except MissingSplitError as error:
        raise ValueError(f"--answer_eval_split {split!r}: {error}") from error
    return rows.select(range(min(script_args.answer_eval_samples, len(rows))))
