"""The tracer's maps equal the brute-force reference (eager attention, output_attentions, full-vocab logits)."""

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

from saliency import SaliencyTracer, find_spans
from saliency.reference import reference_scores

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava")
# Sample 0 has one 2x3 image, sample 1 two images (2x2, 1x2) and a longer prompt, so sample 0 is left-padded.
SAMPLES = [([(2, 3)], [11, 12, 13]), ([(2, 2), (1, 2)], [14, 15, 16, 17, 18])]
COMPLETIONS = [
    [THINK, 20, 21, 22, END_THINK, 30, 31, IM_END, IDS.eos],
    [THINK, 23, 24, END_THINK, 32, IM_END],
]


def _inputs(model, family, batched):
    samples = SAMPLES if batched else SAMPLES[1:]
    if family == "llava":  # one fixed-size image per sample
        samples = [([(0, 0)], text) for _, text in samples]
    prompt, prompt_mask = prompt_batch(model, family, samples)
    dtype = next(model.parameters()).dtype
    vision = {
        **vision_inputs(model, family, [g for grids, _ in samples for g in grids], dtype),
        **text_inputs(family, prompt),
    }
    return prompt, prompt_mask, vision, (COMPLETIONS if batched else COMPLETIONS[1:])


def _reference(model, prompt, prompt_mask, vision, completions, row="q", layers=None):
    completion_ids, completion_mask = right_pad(completions)
    full = dict(vision)
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1)
    spans = [find_spans(c, TOKENS) for c in completions]
    return reference_scores(
        model,
        torch.cat([prompt, completion_ids], 1),
        torch.cat([prompt_mask, completion_mask], 1),
        full,
        prompt.shape[1],
        spans,
        row,
        layers,
    )


def _assert_close(maps, references, rtol):
    for sample, reference in zip(maps, references):
        assert sample.has_map, sample.reason
        for kind in ("direct", "flow"):
            expected = reference[kind]
            got = sample.scores[kind][: len(expected)].to(expected.dtype)
            scale = expected.abs().max()
            assert scale > 0
            torch.testing.assert_close(got, expected, rtol=0, atol=rtol * scale)
            assert sample.defined[kind][: len(expected)].tolist() == [
                kind == "direct" or k >= sample.spans.answer[0] for k in range(len(expected))
            ]
            assert not sample.defined[kind][len(expected) :].any()


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request):
    return request.param, tiny_vlm(request.param, torch.float32)


@pytest.mark.parametrize("batched", [True, False], ids=["left-padded-batch", "single"])
@pytest.mark.parametrize("mode", ["score", "generate"])
def test_maps_equal_reference(family_model, mode, batched):
    family, model = family_model
    prompt, prompt_mask, vision, completions = _inputs(model, family, batched)
    tracer = SaliencyTracer(model, TOKENS)
    if mode == "score":
        completion_ids, completion_mask = right_pad(completions)
        maps = tracer.score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    else:
        traced = tracer.generate(
            prompt, attention_mask=prompt_mask, **vision, **scripted_generate_kwargs(completions, prompt.shape[1])
        )
        for sequence, completion in zip(traced.sequences, completions):
            assert sequence[prompt.shape[1] :][: len(completion)].tolist() == completion
        maps = traced.maps
    _assert_close(maps, _reference(model, prompt, prompt_mask, vision, completions), rtol=1e-5)


def _traced(tracer, mode, prompt, prompt_mask, vision, completions):
    """The maps of ``completions`` from a scoring forward or from a scripted traced ``generate``."""
    if mode == "score":
        return tracer.score(prompt, *right_pad(completions)[:1], prompt_mask, right_pad(completions)[1], **vision)
    kwargs = scripted_generate_kwargs(completions, prompt.shape[1])
    return tracer.generate(prompt, attention_mask=prompt_mask, **vision, **kwargs).maps


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_row_at_the_thinking_tokens_own_position(mode):
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask, vision, completions = _inputs(model, "qwen2_5_vl", batched=True)
    tracer = SaliencyTracer(model, TOKENS, row="pos")
    maps = _traced(tracer, mode, prompt, prompt_mask, vision, completions)
    _assert_close(maps, _reference(model, prompt, prompt_mask, vision, completions, row="pos"), rtol=1e-5)
    default = SaliencyTracer(model, TOKENS).score(
        prompt, *right_pad(completions)[:1], prompt_mask, right_pad(completions)[1], **vision
    )
    assert not torch.allclose(default[0].scores["flow"], maps[0].scores["flow"])


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_maps_of_chosen_layers_equal_the_reference_summed_over_those_layers(mode):
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask, vision, completions = _inputs(model, "qwen2_5_vl", batched=True)
    count = model.config.text_config.num_hidden_layers
    assert count >= 2
    tracer = SaliencyTracer(model, TOKENS, layers=[-1])
    maps = _traced(tracer, mode, prompt, prompt_mask, vision, completions)
    _assert_close(maps, _reference(model, prompt, prompt_mask, vision, completions, layers=[count - 1]), rtol=1e-5)


def test_per_layer_maps_add_up_to_the_all_layer_map():
    model = tiny_vlm("qwen2_vl", torch.float32)
    prompt, prompt_mask, vision, completions = _inputs(model, "qwen2_vl", batched=True)
    completion_ids, completion_mask = right_pad(completions)
    count = model.config.text_config.num_hidden_layers
    every = SaliencyTracer(model, TOKENS).score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    named = SaliencyTracer(model, TOKENS, layers=range(count)).score(
        prompt, completion_ids, prompt_mask, completion_mask, **vision
    )
    single = [
        SaliencyTracer(model, TOKENS, layers=[layer]).score(
            prompt, completion_ids, prompt_mask, completion_mask, **vision
        )
        for layer in range(count)
    ]
    for b in range(len(completions)):
        for kind in ("direct", "flow"):
            torch.testing.assert_close(named[b].scores[kind], every[b].scores[kind])
            total = sum(maps[b].scores[kind] for maps in single)
            torch.testing.assert_close(total, every[b].scores[kind], rtol=1e-5, atol=1e-6)
            assert not torch.allclose(single[0][b].scores[kind], every[b].scores[kind])


@pytest.mark.parametrize(
    "layers, message",
    [
        ([], "at least one"),
        ([0, 99], r"layers \[99\] out of range: the model has \d+ decoder layers"),
        ([0, 0], "twice"),
    ],
)
def test_bad_layer_choices_are_named(layers, message):
    with pytest.raises(ValueError, match=message):
        SaliencyTracer(tiny_vlm("qwen2_vl", torch.float32), TOKENS, layers=layers)


def test_float64_matches_to_double_precision_where_the_model_allows():
    # Qwen's RMSNorm computes in float32 internally, which bounds the agreement at ~1e-7 relative.
    model = tiny_vlm("llava", torch.float64)
    prompt, prompt_mask, vision, completions = _inputs(model, "llava", batched=False)
    maps = SaliencyTracer(model, TOKENS).score(
        prompt, *right_pad(completions)[:1], prompt_mask, right_pad(completions)[1], **vision
    )
    _assert_close(maps, _reference(model, prompt, prompt_mask, vision, completions), rtol=1e-6)


def test_thinking_opened_by_the_prompt():
    """A chat template may end the prompt with ``<think>``: the completion then starts inside the thinking span."""
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask = prompt_batch(model, "qwen2_5_vl", [([(2, 2)], [11, 12, THINK, 19])])
    vision = {**vision_inputs(model, "qwen2_5_vl", [(2, 2)], torch.float32), **text_inputs("qwen2_5_vl", prompt)}
    completion = [20, 21, END_THINK, 30, 31, IM_END]
    tracer = SaliencyTracer(model, TOKENS)
    scored = tracer.score(prompt, torch.tensor([completion]), prompt_mask, **vision)[0]
    generated = tracer.generate(
        prompt, attention_mask=prompt_mask, **vision, **scripted_generate_kwargs([completion], prompt.shape[1])
    ).maps[0]
    assert scored.spans.thinking == (-1, 2)  # the "19" after <think> in the prompt is a thinking token
    spans = [scored.spans]
    reference = reference_scores(
        model,
        torch.cat([prompt, torch.tensor([completion])], 1),
        torch.ones(1, prompt.shape[1] + len(completion), dtype=torch.long),
        {
            **vision,
            "mm_token_type_ids": torch.cat(
                [vision["mm_token_type_ids"], torch.zeros(1, len(completion), dtype=torch.long)], 1
            ),
        },
        prompt.shape[1],
        spans,
    )
    _assert_close([scored], reference, rtol=1e-5)
    _assert_close([generated], reference, rtol=1e-5)


def test_chunked_rows_give_the_same_maps():
    model = tiny_vlm("qwen2_vl", torch.float32)
    prompt, prompt_mask, vision, completions = _inputs(model, "qwen2_vl", batched=True)
    completion_ids, completion_mask = right_pad(completions)
    whole = SaliencyTracer(model, TOKENS).score(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    one_row = SaliencyTracer(model, TOKENS, chunk_elements=1).score(
        prompt, completion_ids, prompt_mask, completion_mask, **vision
    )
    for a, b in zip(whole, one_row):
        torch.testing.assert_close(a.scores["flow"], b.scores["flow"])
        torch.testing.assert_close(a.scores["direct"], b.scores["direct"])


def test_several_return_sequences_per_prompt():
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask, vision, _ = _inputs(model, "qwen2_5_vl", batched=True)
    scripts = [COMPLETIONS[0], COMPLETIONS[1], COMPLETIONS[1], COMPLETIONS[0]]
    traced = SaliencyTracer(model, TOKENS).generate(
        prompt,
        attention_mask=prompt_mask,
        num_return_sequences=2,
        **vision,
        **{**scripted_generate_kwargs(scripts, prompt.shape[1]), "do_sample": True},  # sampling a one-hot script
    )
    assert len(traced.maps) == 4
    assert [len(m.images) for m in traced.maps] == [1, 1, 2, 2]
    reference = _reference(
        model,
        prompt.repeat_interleave(2, 0),
        prompt_mask.repeat_interleave(2, 0),
        {
            **vision,
            "mm_token_type_ids": vision["mm_token_type_ids"].repeat_interleave(2, 0),
            "image_grid_thw": torch.cat([vision["image_grid_thw"][:1]] * 2 + [vision["image_grid_thw"][1:]] * 2),
            "pixel_values": torch.cat([vision["pixel_values"][:24]] * 2 + [vision["pixel_values"][24:]] * 2),
        },
        scripts,
    )
    _assert_close(traced.maps, reference, rtol=1e-5)
