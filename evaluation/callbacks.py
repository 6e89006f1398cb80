"""Held-out answers during training: greedy completions every N steps, their format rate and accuracy logged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from data_tools import SYSTEM_PROMPT

from .generation import generate_completions
from .metrics import answer_metrics


class HeldOutAnswersCallback(TrainerCallback):
    """Every `every` steps and at the end of training, answer `rows` greedily and log what the answers score.

    Logs (through `trainer.log`, so to every `report_to` backend) `heldout/format_rate`, `heldout/accuracy` and
    `heldout/<source>/accuracy` per `dataset` source. Every process answers all rows with the same weights (so
    ZeRO-3 ranks run the same forwards); only the main process reports.

    Args:
        trainer: the trainer whose model is evaluated and whose `log` reports the numbers.
        rows: held-out rows with `image`, `problem`, `solution` and `dataset` (the `rl`/`eval` layout).
        every: evaluate when the global step is a multiple of this (0: only at the end).
        max_new_tokens: longest completion.
        batch_size: rows per generation batch.
        system_prompt: the system prompt the model was trained with.
    """

    def __init__(
        self,
        trainer: Trainer,
        rows: Sequence[dict[str, Any]],
        every: int,
        *,
        max_new_tokens: int = 64,
        batch_size: int = 16,
        system_prompt: str = SYSTEM_PROMPT,
    ):
        if every < 0:
            raise ValueError(f"every must be >= 0, got {every}")
        if not rows:
            raise ValueError("HeldOutAnswersCallback needs at least one held-out row")
        self.trainer, self.rows, self.every = trainer, list(rows), every
        self.max_new_tokens, self.batch_size, self.system_prompt = max_new_tokens, batch_size, system_prompt
        self.history: list[dict[str, float]] = []
        self._last_step = -1

    def evaluate(self, step: int) -> dict[str, float]:
        """Answer the rows with the current weights and log the scores; returns what was logged."""
        trainer = self.trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        was_training = model.training
        model.eval()
        try:
            completions = generate_completions(
                model,
                trainer.processing_class,
                self.rows,
                batch_size=self.batch_size,
                max_new_tokens=self.max_new_tokens,
                system_prompt=self.system_prompt,
                desc="held-out answers",
            )
        finally:
            model.train(was_training)
        summary = answer_metrics(
            completions, [row["solution"] for row in self.rows], [row.get("dataset") or "all" for row in self.rows]
        )
        logs = {"heldout/format_rate": summary["format_rate"], "heldout/accuracy": summary["accuracy"]}
        for source, group in summary["per_source"].items():
            logs[f"heldout/{source}/accuracy"] = group["accuracy"]
        self._last_step = step
        self.history.append({"step": step, **logs})
        trainer.log(logs)
        return logs

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self.evaluate(state.global_step)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if state.global_step != self._last_step:
            self.evaluate(state.global_step)
