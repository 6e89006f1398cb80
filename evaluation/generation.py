"""Answering held-out rows with a model: prompts built the way training builds them, batched, left-padded."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, ProcessorMixin

from data_tools import SYSTEM_PROMPT, prompt_messages


def build_prompts(processor: ProcessorMixin, problems: Sequence[str], system_prompt: str = SYSTEM_PROMPT) -> list[str]:
    """Chat-templated prompt texts (with the generation cue) for one image + question each."""
    return [
        processor.apply_chat_template(prompt_messages(p, system_prompt), tokenize=False, add_generation_prompt=True)
        for p in problems
    ]


@torch.no_grad()
def generate_completions(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 96,
    system_prompt: str = SYSTEM_PROMPT,
    desc: str = "generating",
) -> list[str]:
    """Greedy completions (decoded, special tokens removed) for rows with `image` and `problem`."""
    completions: list[str] = []
    device = next(model.parameters()).device
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        batch = [rows[i] for i in range(start, min(start + batch_size, len(rows)))]
        inputs = processor(
            images=[[row["image"]] for row in batch],
            text=build_prompts(processor, [row["problem"] for row in batch], system_prompt),
            padding=True,
            padding_side="left",
            return_tensors="pt",
        ).to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        completions += processor.batch_decode(new_tokens, skip_special_tokens=True)
    return completions
