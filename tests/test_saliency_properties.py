"""Properties of the maps known without any reference: blocked image attention, text-only samples, bad formats."""

import pytest
import torch
from saliency_reference import (
    END_THINK,
    IDS,
    IM_END,
    THINK,
    TOKENS,
    prompt_batch,
    right_pad,
    scripted_generate_kwargs,
    text_inputs,
    tiny_vlm,
    vision_inputs,
)

from saliency import SaliencyTracer

COMPLETION = [THINK, 20, 21, END_THINK, 30, 31, IM_END]


def _setup(family):
    model = tiny_vlm(family, torch.float32)
    prompt, prompt_mask = prompt_batch(model, family, [([(2, 2)], [11, 12, 13])])
    vision = {**vision_inputs(model, family, [(2, 2)], torch.float32), **text_inputs(family, prompt)}
    return model, prompt, prompt_mask, vision


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_blocking_attention_to_the_image_gives_all_zero_maps(mode):
    model, prompt, prompt_mask, vision = _setup("llava")
    blocked = prompt_mask.masked_fill(prompt == IDS.image, 0)
    tracer = SaliencyTracer(model, TOKENS)
    if mode == "score":
        maps = tracer.score(prompt, torch.tensor([COMPLETION]), blocked, **vision)
        open_maps = tracer.score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
        assert open_maps[0].scores["flow"].abs().sum() > 0
    else:
        kwargs = scripted_generate_kwargs([COMPLETION], prompt.shape[1])
        maps = tracer.generate(prompt, attention_mask=blocked, **vision, **kwargs).maps
    assert maps[0].has_map
    for kind in ("direct", "flow"):
        assert maps[0].scores[kind].abs().max() == 0
    assert all((m.grid == 0).all() for m in maps[0].answer_map("flow"))


def test_a_sample_without_an_image_has_no_map_and_leaves_the_others_unchanged():
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    samples = [([(2, 2)], [11, 12, 13]), ([], [14, 15, 16, 17, 18, 19, 20])]
    prompt, prompt_mask = prompt_batch(model, "qwen2_5_vl", samples)
    vision = {**vision_inputs(model, "qwen2_5_vl", [(2, 2)], torch.float32), **text_inputs("qwen2_5_vl", prompt)}
    completions = right_pad([COMPLETION, COMPLETION])
    maps = SaliencyTracer(model, TOKENS).score(prompt, completions[0], prompt_mask, completions[1], **vision)
    assert not maps[1].has_map and maps[1].reason == "the sample has no image" and maps[1].images == []
    assert maps[1].answer_map() is None
    alone_prompt, alone_mask = prompt_batch(model, "qwen2_5_vl", samples[:1])
    alone = SaliencyTracer(model, TOKENS).score(
        alone_prompt,
        torch.tensor([COMPLETION]),
        alone_mask,
        **{**vision, **text_inputs("qwen2_5_vl", alone_prompt)},
    )
    torch.testing.assert_close(maps[0].scores["flow"], alone[0].scores["flow"], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "completion, reason",
    [
        ([20, 21, 30, IM_END], "exactly one <think>"),
        ([THINK, 20, 21, 30, IM_END], "exactly one </think>"),
        ([THINK, END_THINK, 30, IM_END], "thinking span is empty"),
        ([THINK, 20, END_THINK, IM_END, IDS.eos], "answer after </think> is empty"),
        ([THINK, 20, END_THINK, 30, IM_END, 31], "goes on after an end marker"),
        ([40, THINK, 20, END_THINK, 30], "text comes before <think>"),
        ([THINK, 20, END_THINK, THINK, 21, END_THINK, 30], "exactly one <think>"),
    ],
)
def test_an_invalid_format_has_no_map_and_says_why(completion, reason):
    model, prompt, prompt_mask, vision = _setup("qwen2_5_vl")
    completions = right_pad([completion, COMPLETION])
    batch = {
        **vision,
        "mm_token_type_ids": vision["mm_token_type_ids"].repeat(2, 1),
        "pixel_values": vision["pixel_values"].repeat(2, 1),
        "image_grid_thw": vision["image_grid_thw"].repeat(2, 1),
    }
    maps = SaliencyTracer(model, TOKENS).score(
        prompt.repeat(2, 1), completions[0], prompt_mask.repeat(2, 1), completions[1], **batch
    )
    assert not maps[0].has_map and reason in maps[0].reason
    with pytest.raises(ValueError, match="no saliency map"):
        maps[0].map_over([0])
    assert maps[1].has_map


def test_invalid_format_during_generation_has_no_map():
    model, prompt, prompt_mask, vision = _setup("qwen2_vl")
    script = [THINK, 20, 21, 30, 31]  # never closes the thinking
    traced = SaliencyTracer(model, TOKENS).generate(
        prompt, attention_mask=prompt_mask, **vision, **scripted_generate_kwargs([script], prompt.shape[1])
    )
    assert traced.maps[0].reason == "expected exactly one </think> in the completion, found 0"


def test_the_answer_map_is_the_relu_of_the_summed_answer_tokens():
    model, prompt, prompt_mask, vision = _setup("qwen3_vl")
    maps = SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)[0]
    start, end = maps.spans.answer
    assert (start, end) == (4, 6)
    for kind in ("flow", "direct"):
        expected = maps.scores[kind][start:end].sum(0).clamp_min(0).reshape(2, 2)
        torch.testing.assert_close(maps.answer_map(kind)[0].grid, expected)
    # Per-token direct maps also exist for thinking tokens (for explanations over any span of the completion).
    thinking = maps.map_over(range(1, 3), "direct")[0]
    torch.testing.assert_close(thinking.grid, maps.scores["direct"][1:3].sum(0).clamp_min(0).reshape(2, 2))
    with pytest.raises(ValueError, match=r"completion tokens \[1, 2\] have no 'flow' map"):
        maps.map_over(range(1, 3), "flow")
