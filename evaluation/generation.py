"""Answering rows with a model: prompts built the way training builds them, batched, left-padded, optionally traced."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import BatchFeature, PreTrainedModel, ProcessorMixin

from data_tools import SYSTEM_PROMPT, prompt_messages
from saliency import SaliencyMaps, SaliencyTracer


def build_prompts(
    processor: ProcessorMixin,
    problems: Sequence[str],
    system_prompt: str = SYSTEM_PROMPT,
    image_counts: Sequence[int] | None = None,
) -> list[str]:
    """Chat-templated prompt texts (with the generation cue) for each question, with one image placeholder per image
    (``image_counts``, default one each) as `rl.grpo_data.grpo_prompt` lays them out for training."""
    counts = [1] * len(problems) if image_counts is None else image_counts
    texts = []
    for problem, count in zip(problems, counts, strict=True):
        messages = prompt_messages(problem, system_prompt)
        image_block, *rest = messages[-1]["content"]
        messages[-1] = {**messages[-1], "content": [image_block] * count + rest}
        texts.append(processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return texts


def row_images(row: dict[str, Any]) -> list[Any]:
    """A row's images in prompt order: its ``images`` list (several images, or a clip's frames) or its one ``image``."""
    return list(row["images"]) if row.get("images") is not None else [row["image"]]


def prompt_inputs(
    processor: ProcessorMixin, rows: Sequence[dict[str, Any]], system_prompt: str = SYSTEM_PROMPT
) -> BatchFeature:
    """Processor inputs (left-padded ``input_ids``, ``attention_mask``, vision inputs) for rows with ``image`` (or
    ``images``) and ``problem``."""
    images = [row_images(row) for row in rows]
    return processor(
        images=images,
        text=build_prompts(processor, [row["problem"] for row in rows], system_prompt, [len(i) for i in images]),
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )


def _batches(
    rows: Sequence[dict[str, Any]], batch_size: int, desc: str, progress: bool = True
) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch", disable=not progress):
        yield start, [rows[i] for i in range(start, min(start + batch_size, len(rows)))]


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
    for _, batch in _batches(rows, batch_size, desc):
        inputs = prompt_inputs(processor, batch, system_prompt).to(device)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        completions += processor.batch_decode(new_tokens, skip_special_tokens=True)
    return completions


@dataclass
class TracedCompletion:
    """One row's completion and its saliency maps (``maps.has_map`` is False for a badly formatted completion)."""

    index: int
    completion_ids: torch.Tensor
    text: str
    maps: SaliencyMaps


def image_sizes(rows: Sequence[dict[str, Any]]) -> list[list[tuple[int, int]]]:
    """The (height, width) of each row's images: the sizes maps are upsampled to (boxes are normalised to them)."""
    return [[(image.height, image.width) for image in row_images(row)] for row in rows]


def completion_maps(
    attribute: Callable[..., list[SaliencyMaps]],
    inputs: BatchFeature,
    completion_ids: torch.Tensor,
    sizes: Sequence[tuple[int, int]] | None = None,
) -> SaliencyMaps:
    """The maps of one row's given completion from ``attribute``: `SaliencyTracer.score` or a baseline's ``attribute``.

    ``inputs`` are the row's processor inputs (`prompt_inputs` of one row), ``sizes`` its images' (height, width).
    """
    prompt_ids = inputs["input_ids"]
    vision = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
    image_sizes = None if sizes is None else [sizes]
    return attribute(prompt_ids, completion_ids[None].to(prompt_ids.device), image_sizes=image_sizes, **vision)[0]


def _trim_padding(ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    end = len(ids)
    while pad_id is not None and end and int(ids[end - 1]) == pad_id:
        end -= 1
    return ids[:end]


@torch.no_grad()
def trace_completions(
    tracer: SaliencyTracer,
    processor: ProcessorMixin,
    rows: Sequence[dict[str, Any]],
    *,
    completions: Sequence[str] | None = None,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    system_prompt: str = SYSTEM_PROMPT,
    generate_kwargs: dict[str, Any] | None = None,
    desc: str = "generating with tracing",
    progress: bool = True,
) -> Iterator[TracedCompletion]:
    """Complete each row and trace its maps in the same pass, yielding the rows in order.

    Without ``completions`` the model generates greedily and the tracer captures the maps during ``generate`` (no
    extra forward). With ``completions`` (one text per row, produced elsewhere) each batch is traced in one scoring
    forward over prompt + completion. ``generate_kwargs`` are passed on to ``generate`` (e.g. a logits processor);
    ``progress`` shows a progress bar over the batches.
    """
    if completions is not None and len(completions) != len(rows):
        raise ValueError(f"got {len(completions)} completions for {len(rows)} rows")
    tokenizer = getattr(processor, "tokenizer", processor)
    device = next(tracer.model.parameters()).device
    for start, batch in _batches(rows, batch_size, desc, progress):
        inputs = prompt_inputs(processor, batch, system_prompt).to(device)
        sizes = image_sizes(batch)
        if completions is None:
            kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **(generate_kwargs or {})}
            traced = tracer.generate(**inputs, image_sizes=sizes, **kwargs)
            new = traced.sequences[:, inputs["input_ids"].shape[1] :].cpu()
            completion_ids = [_trim_padding(ids, tokenizer.pad_token_id) for ids in new]
            maps = traced.maps
        else:
            texts = list(completions[start : start + len(batch)])
            encoded = tokenizer(
                texts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt"
            )
            prompt = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            maps = tracer.score(
                inputs["input_ids"],
                encoded["input_ids"].to(device),
                inputs["attention_mask"],
                encoded["attention_mask"].to(device),
                image_sizes=sizes,
                **prompt,
            )
            completion_ids = [ids[: int(n)] for ids, n in zip(encoded["input_ids"], encoded["attention_mask"].sum(-1))]
        texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        for offset, (ids, text, row_maps) in enumerate(zip(completion_ids, texts, maps)):
            yield TracedCompletion(start + offset, ids, text, row_maps)
