"""Tiny VLMs and hand-built inputs for the saliency tests.

The brute-force reference the tracer is tested against is :func:`saliency.reference.reference_scores`, shared
with the tracer benchmark.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForImageTextToText, LogitsProcessor, LogitsProcessorList
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from saliency import SpecialTokens
from vlm.tiny_configs import TinyTokenIds, tiny_model_config

IDS = TinyTokenIds(vocab_size=64, pad=0, bos=1, eos=2, image=3, video=4, vision_start=5, vision_end=6)
THINK, END_THINK, IM_END = 7, 8, 9
TOKENS = SpecialTokens(think_open=THINK, think_close=END_THINK, stop_ids=frozenset({IDS.pad, IDS.eos, IM_END}))
TEXT = list(range(10, 64))
QWEN = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def tiny_vlm(family: str, dtype: torch.dtype = torch.float64, seed: int = 0, **config):
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(tiny_model_config(family, IDS, **config)).to(dtype).eval()
    model.generation_config.pad_token_id = IDS.pad
    model.generation_config.eos_token_id = IDS.eos
    return model


def attention_state(model) -> dict:
    """The attention implementation of each of the model's configs, and every registered attention and mask function."""
    configs = (model.config, model.config.text_config, model.config.vision_config)
    return {
        "attn": tuple(config._attn_implementation for config in configs),
        "registered": (sorted(ALL_ATTENTION_FUNCTIONS), sorted(ALL_MASK_ATTENTION_FUNCTIONS)),
    }


def image_tokens(model, family: str, grid: tuple[int, int]) -> int:
    """Image tokens of one image with a (rows, cols) merged grid (LLaVA: its fixed grid, ``grid`` ignored)."""
    if family == "llava":
        vision = model.config.vision_config
        return (vision.image_size // vision.patch_size) ** 2 + (model.config.vision_feature_select_strategy == "full")
    return grid[0] * grid[1]


def vision_inputs(model, family: str, grids: list[tuple[int, int]], dtype: torch.dtype, seed: int = 1) -> dict:
    """Random pixel inputs for images with the given merged grids, in sample order."""
    generator = torch.Generator().manual_seed(seed)
    vision = model.config.vision_config
    if family == "llava":
        size = vision.image_size
        return {"pixel_values": torch.randn(len(grids), 3, size, size, generator=generator, dtype=dtype)}
    patch = 3 * vision.temporal_patch_size * vision.patch_size**2
    thw = torch.tensor([[1, 2 * r, 2 * c] for r, c in grids])  # patches, before the 2x2 merge
    pixels = torch.randn(int(thw.prod(-1).sum()), patch, generator=generator, dtype=dtype)
    return {"pixel_values": pixels, "image_grid_thw": thw}


def prompt_batch(
    model, family: str, samples: list[tuple[list[tuple[int, int]], list[int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompts; each sample is (grids of its images, text token ids after the images)."""
    rows = []
    for grids, text in samples:
        ids = [IDS.bos]
        for grid in grids:
            ids += [IDS.vision_start] + [IDS.image] * image_tokens(model, family, grid) + [IDS.vision_end]
        rows.append(ids + text)
    width = max(map(len, rows))
    prompt = torch.tensor([[IDS.pad] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None] >= width - torch.tensor([[len(r)] for r in rows])).long()
    return prompt, mask


def text_inputs(family: str, prompt: torch.Tensor) -> dict:
    """What the processor adds beside input_ids: Qwen's M-RoPE needs to know which tokens are image tokens."""
    return {} if family == "llava" else {"mm_token_type_ids": prompt.eq(IDS.image).long()}


def right_pad(completions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, completions))
    ids = torch.tensor([c + [IDS.pad] * (width - len(c)) for c in completions])
    mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in completions])
    return ids, mask


class Scripted(LogitsProcessor):
    """Forces each sample's completion to a script (then EOS/padding), so a random model writes a valid format."""

    def __init__(self, scripts: list[list[int]], prompt_length: int):
        self.scripts, self.prompt_length = scripts, prompt_length

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_length
        forced = torch.full_like(scores, float("-inf"))
        for b, script in enumerate(self.scripts):
            forced[b, script[step] if step < len(script) else IDS.eos] = 0.0
        return forced


def scripted_generate_kwargs(scripts: list[list[int]], prompt_length: int) -> dict:
    return {
        "logits_processor": LogitsProcessorList([Scripted(scripts, prompt_length)]),
        "do_sample": False,
        "max_new_tokens": max(map(len, scripts)) + 1,
    }
