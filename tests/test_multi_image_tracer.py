"""Several images and video in one prompt: per-image / per-step maps equal the brute-force reference, labelled."""

import pytest
import torch
from saliency_reference import (
    END_THINK,
    IDS,
    IM_END,
    QWEN,
    THINK,
    TOKENS,
    right_pad,
    scripted_generate_kwargs,
    tiny_vlm,
)

from saliency import SaliencyTracer, find_spans
from saliency.reference import reference_scores

COMPLETIONS = [
    [THINK, 20, 21, 22, END_THINK, 30, 31, IM_END, IDS.eos],
    [THINK, 23, 24, END_THINK, 32, IM_END],
]
# Each sample: its visual items in prompt order, ("image", (rows, cols)) or ("video", (steps, rows, cols)), then text.
MULTI_IMAGE = [
    ([("image", (2, 3)), ("image", (1, 2)), ("image", (2, 2))], [11, 12, 13]),
    ([("image", (2, 2)), ("image", (3, 1))], [14, 15, 16, 17, 18]),
]
VIDEO = [
    ([("video", (3, 2, 2))], [11, 12, 13]),
    ([("image", (1, 2)), ("video", (2, 1, 3))], [14, 15, 16, 17, 18]),
]


def _build(model, family: str, samples, dtype):
    """Left-padded prompts, their masks and the processor-like vision inputs (random pixels, merged 2x2 grids)."""
    vision = model.config.vision_config
    patch = 3 * vision.temporal_patch_size * vision.patch_size**2
    generator = torch.Generator().manual_seed(1)
    rows, types, image_thw, video_thw = [], [], [], []
    for items, text in samples:
        ids = [IDS.bos]
        for source, shape in items:
            if source == "image":
                ids += [IDS.vision_start] + [IDS.image] * (shape[0] * shape[1]) + [IDS.vision_end]
                image_thw.append([1, 2 * shape[0], 2 * shape[1]])
                continue
            steps, r, c = shape
            video_thw.append([steps, 2 * r, 2 * c])
            if family == "qwen3_vl":  # one vision span per step, a timestamp token before each
                for _ in range(steps):
                    ids += [40, IDS.vision_start] + [IDS.video] * (r * c) + [IDS.vision_end]
            else:
                ids += [IDS.vision_start] + [IDS.video] * (steps * r * c) + [IDS.vision_end]
        rows.append(ids + text)
    width = max(map(len, rows))
    prompt = torch.tensor([[IDS.pad] * (width - len(r)) + r for r in rows])
    mask = (prompt != IDS.pad).long()
    types = prompt.eq(IDS.image).long() + 2 * prompt.eq(IDS.video).long()
    inputs = {"mm_token_type_ids": types}
    if image_thw:
        thw = torch.tensor(image_thw)
        inputs["image_grid_thw"] = thw
        inputs["pixel_values"] = torch.randn(int(thw.prod(-1).sum()), patch, generator=generator, dtype=dtype)
    if video_thw:
        thw = torch.tensor(video_thw)
        inputs["video_grid_thw"] = thw
        inputs["pixel_values_videos"] = torch.randn(int(thw.prod(-1).sum()), patch, generator=generator, dtype=dtype)
    return prompt, mask, inputs


def _reference(model, prompt, prompt_mask, vision, completions):
    completion_ids, completion_mask = right_pad(completions)
    full = {
        **vision,
        "mm_token_type_ids": torch.cat([vision["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1),
    }
    return reference_scores(
        model,
        torch.cat([prompt, completion_ids], 1),
        torch.cat([prompt_mask, completion_mask], 1),
        full,
        prompt.shape[1],
        [find_spans(c, TOKENS) for c in completions],
    )


def _traced(model, mode, prompt, prompt_mask, vision, completions, image_sizes=None):
    tracer = SaliencyTracer(model, TOKENS)
    if mode == "score":
        completion_ids, completion_mask = right_pad(completions)
        return tracer.score(prompt, completion_ids, prompt_mask, completion_mask, image_sizes=image_sizes, **vision)
    kwargs = scripted_generate_kwargs(completions, prompt.shape[1])
    traced = tracer.generate(prompt, image_sizes=image_sizes, attention_mask=prompt_mask, **vision, **kwargs)
    for sequence, completion in zip(traced.sequences, completions):
        assert sequence[prompt.shape[1] :][: len(completion)].tolist() == completion
    return traced.maps


@pytest.fixture(scope="module", params=QWEN)
def family_model(request):
    return request.param, tiny_vlm(request.param, torch.float32)


@pytest.mark.parametrize("samples", [MULTI_IMAGE, VIDEO], ids=["several-images", "video"])
@pytest.mark.parametrize("mode", ["score", "generate"])
def test_maps_per_image_and_step_equal_reference(family_model, mode, samples):
    family, model = family_model
    prompt, prompt_mask, vision = _build(model, family, samples, torch.float32)
    maps = _traced(model, mode, prompt, prompt_mask, vision, COMPLETIONS)
    references = _reference(model, prompt, prompt_mask, vision, COMPLETIONS)
    for sample, reference, (items, _) in zip(maps, references, samples):
        assert sample.has_map, sample.reason
        for kind in ("direct", "flow"):
            expected = reference[kind]
            scale = expected.abs().max()
            assert scale > 0
            got = sample.scores[kind][: len(expected)].to(expected.dtype)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale)
        # The layouts tile the visual columns in prompt order: one per image, one per video step.
        expected_layouts = []
        counts = {"image": 0, "video": 0}
        for source, shape in items:
            steps = [None] if source == "image" else range(shape[0])
            for step in steps:
                frames = None if step is None else (2 * step, 2 * step + 2)
                expected_layouts.append((source, counts[source], frames, tuple(shape[-2:])))
            counts[source] += 1
        assert [(m.source, m.index, m.frames, m.grid) for m in sample.images] == expected_layouts
        assert torch.cat([m.positions for m in sample.images]).tolist() == list(range(expected.shape[1]))
        # Each per-image map is relu(sum over the answer rows) of its own columns, and carries its labels.
        start, end = sample.spans.answer
        total = reference["flow"][start:end].sum(0).clamp_min(0)
        for layout, image_map in zip(sample.images, sample.answer_map("flow")):
            assert (image_map.source, image_map.index, image_map.frames) == (layout.source, layout.index, layout.frames)
            expected_map = total[layout.positions].reshape(layout.grid)
            torch.testing.assert_close(image_map.grid.double(), expected_map.double(), rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_pixel_sizes_per_image_and_per_video(mode):
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask, vision = _build(model, "qwen2_5_vl", VIDEO, torch.float32)
    sizes = [[(60, 40)], [(10, 20), (30, 90)]]
    maps = _traced(model, mode, prompt, prompt_mask, vision, COMPLETIONS, image_sizes=sizes)
    assert [m.size for m in maps[0].answer_map()] == [(60, 40)] * 3
    assert [(m.source, m.size, m.upsampled().shape) for m in maps[1].answer_map()] == [
        ("image", (10, 20), (10, 20)),
        ("video", (30, 90), (30, 90)),
        ("video", (30, 90), (30, 90)),
    ]
    with pytest.raises(ValueError, match=r"image_sizes\[1\] lists 3 sizes but the sample holds 2 images and videos"):
        _traced(model, mode, prompt, prompt_mask, vision, COMPLETIONS, image_sizes=[[(1, 1)], [(1, 1)] * 3])


def test_upsampled_mass_compares_images_per_vision_token():
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask, vision = _build(model, "qwen2_5_vl", MULTI_IMAGE[1:], torch.float32)
    sizes = [[(40, 40), (300, 50)]]
    maps = _traced(model, "score", prompt, prompt_mask, vision, COMPLETIONS[1:], image_sizes=sizes)[0]
    for image_map in maps.answer_map("flow"):
        mass = image_map.upsampled_mass()
        assert mass.shape == image_map.size
        # Bilinear upsampling keeps the mean of a map up to its edges: the pixel sum is the grid's sum.
        torch.testing.assert_close(float(mass.sum()), float(image_map.grid.sum()), rtol=0.2, atol=1e-12)


def test_a_grid_that_does_not_match_the_video_tokens_is_refused():
    model = tiny_vlm("qwen2_vl", torch.float32)
    prompt, prompt_mask, vision = _build(model, "qwen2_vl", VIDEO[:1], torch.float32)
    vision["video_grid_thw"] = torch.tensor([[2, 4, 4]])
    with pytest.raises(ValueError, match="sample 0: its video tokens do not match video_grid_thw"):
        _traced(model, "score", prompt, prompt_mask, vision, COMPLETIONS[:1])
