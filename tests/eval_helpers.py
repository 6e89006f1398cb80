"""Shared pieces of the evaluation and export tests: a tiny model and data on disk, and forced decoding."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import LogitsProcessor, LogitsProcessorList

from data_tools import format_assistant, generate_split

CHROMIUM = Path("/usr/bin/chromium")


def build_assets(root: Path, num_rows: int = 4) -> dict[str, Path]:
    """A tiny Qwen2.5-VL, a held-out split of ``num_rows`` synthetic rows (``data/eval``) and the reference completions
    (``<think>reasoning</think>answer`` of each row) as a completions JSONL."""
    from vlm import build_tiny_vlm

    model = build_tiny_vlm(root / "model", seed=0)
    rows = generate_split("eval", num_rows, seed=0)
    DatasetDict({"eval": rows}).save_to_disk(str(root / "data"))
    completions = root / "completions.jsonl"
    with completions.open("w") as f:
        for row in rows:
            text = format_assistant(row["reasoning"], row["solution"])
            f.write(json.dumps({"question_id": row["question_id"], "completion": text}) + "\n")
    return {"model": model, "data": root / "data", "completions": completions}


def reference_completions(rows) -> list[str]:
    return [format_assistant(row["reasoning"], row["solution"]) for row in rows]


def traced_reference_rows(root: Path, num_rows: int = 2):
    """A tiny model (seed 1), its processor, ``num_rows`` held-out rows, a tracer and the traced reference completions."""
    from trl import ModelConfig

    from evaluation.generation import trace_completions
    from saliency import SaliencyTracer, SpecialTokens
    from vlm import build_tiny_vlm, load_model_and_processor

    path = build_tiny_vlm(root / "model", seed=1)
    model, processor = load_model_and_processor(ModelConfig(model_name_or_path=str(path), dtype="float32"))
    rows = generate_split("eval", num_rows, seed=0)
    tracer = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor))
    traced = list(trace_completions(tracer, processor, rows, completions=reference_completions(rows), progress=False))
    return model, processor, rows, tracer, traced


class ForcedTokens(LogitsProcessor):
    """Forces each sample of a generate batch to emit its script of token ids, then the end-of-turn token."""

    def __init__(self, scripts: list[list[int]], prompt_length: int, end_id: int):
        self.scripts, self.prompt_length, self.end_id = scripts, prompt_length, end_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, -float("inf"))
        for b, script in enumerate(self.scripts):
            forced[b, script[step] if step < len(script) else self.end_id] = 0.0
        return forced


def forced_generate_kwargs(processor, texts: list[str], prompt_length: int) -> dict:
    """``generate`` arguments under which the model writes exactly ``texts`` (one per sample), then ends its turn."""
    tokenizer = processor.tokenizer
    scripts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    processor_list = LogitsProcessorList([ForcedTokens(scripts, prompt_length, end_id)])
    return {"logits_processor": processor_list, "max_new_tokens": max(map(len, scripts)) + 1}
