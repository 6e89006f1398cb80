"""Family adapters (unsupported models, PEFT LoRA), span finding and the output type's layout."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from saliency_reference import END_THINK, IDS, IM_END, THINK, TOKENS, prompt_batch, text_inputs, tiny_vlm, vision_inputs
from transformers import LlamaConfig, LlamaForCausalLM

from rewards import pointing_game
from saliency import ImageLayout, ImageMap, SaliencyMaps, SaliencyTracer, adapter_for, effective_weight, find_spans
from saliency.spans import CompletionSpans, SpecialTokens, prompt_opens_thinking

COMPLETION = [THINK, 20, 21, END_THINK, 30, 31, IM_END]


def test_unsupported_model_gets_an_error_naming_what_is_supported():
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    with pytest.raises(
        ValueError, match=r"no adapter for model_type 'llama'.*supported: qwen2_vl, qwen2_5_vl, qwen3_vl, llava"
    ):
        adapter_for(model)


def test_adapter_names_the_missing_parts():
    from saliency import QwenVLAdapter

    model = tiny_vlm("qwen2_5_vl", torch.float32)
    del model.lm_head
    with pytest.raises(ValueError, match="missing what the saliency tracer needs: lm_head"):
        QwenVLAdapter(model)


def test_lora_on_q_v_o_uses_the_effective_weights():
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask = prompt_batch(model, "qwen2_5_vl", [([(2, 3)], [11, 12, 13])])
    vision = {**vision_inputs(model, "qwen2_5_vl", [(2, 3)], torch.float32), **text_inputs("qwen2_5_vl", prompt)}
    completion = torch.tensor([COMPLETION])
    base = SaliencyTracer(model, TOKENS).score(prompt, completion, prompt_mask, **vision)[0]

    torch.manual_seed(3)
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj|o_proj)", init_lora_weights=False
    )
    peft_model = get_peft_model(copy.deepcopy(model), config).eval()
    o_proj = peft_model.base_model.model.model.language_model.layers[0].self_attn.o_proj
    merged = copy.deepcopy(peft_model).merge_and_unload()
    torch.testing.assert_close(effective_weight(o_proj), merged.model.language_model.layers[0].self_attn.o_proj.weight)

    traced = SaliencyTracer(peft_model, TOKENS).score(prompt, completion, prompt_mask, **vision)[0]
    reference = SaliencyTracer(merged, TOKENS).score(prompt, completion, prompt_mask, **vision)[0]
    for kind in ("direct", "flow"):
        torch.testing.assert_close(traced.scores[kind], reference.scores[kind], rtol=1e-4, atol=1e-6)
        assert not torch.allclose(traced.scores[kind], base.scores[kind], atol=1e-4)
    with peft_model.disable_adapter():  # a disabled adapter is the base model again
        disabled = SaliencyTracer(peft_model, TOKENS).score(prompt, completion, prompt_mask, **vision)[0]
    torch.testing.assert_close(disabled.scores["flow"], base.scores["flow"], rtol=1e-4, atol=1e-7)


def test_effective_weight_rows_of_a_lora_head_never_need_the_full_delta():
    layer = torch.nn.Linear(8, 50)
    torch.manual_seed(0)
    wrapped = get_peft_model(torch.nn.Sequential(layer), LoraConfig(r=2, target_modules=["0"], init_lora_weights=False))
    lora = wrapped.base_model.model[0]
    rows = torch.tensor([3, 7, 3])
    full = layer.weight + lora.get_delta_weight("default")
    torch.testing.assert_close(effective_weight(lora, rows), full[rows])


def test_spans_on_token_ids():
    assert find_spans([THINK, 20, 21, END_THINK, 30, IM_END, IDS.eos, IDS.pad], TOKENS) == CompletionSpans(
        (1, 3), (4, 5)
    )
    # Text before <think> is a bad format, as for the format reward.
    assert "text comes before <think>" in find_spans([40, THINK, 20, END_THINK, 30, 31], TOKENS)
    # Whitespace between trailing end markers is no part of the answer.
    blank = SpecialTokens(THINK, END_THINK, TOKENS.stop_ids, frozenset({10}))
    assert find_spans([10, THINK, 20, END_THINK, 10, 30, 10, IM_END, 10, IDS.eos], blank) == CompletionSpans(
        (2, 3), (4, 7)
    )
    assert "thinking span is empty" in find_spans([THINK, 10, END_THINK, 30], blank)
    assert "answer after </think> is empty" in find_spans([THINK, 20, END_THINK, 10, IM_END], blank)
    assert find_spans([20, 21, END_THINK, 30], TOKENS, open_think_in_prompt=2) == CompletionSpans((-2, 2), (3, 4))
    assert "opens another" in find_spans([THINK, 20, END_THINK, 30], TOKENS, open_think_in_prompt=0)
    assert "before <think>" in find_spans([END_THINK, THINK, 20, 30], TOKENS)
    assert prompt_opens_thinking([1, THINK, END_THINK, 11], TOKENS) is None
    assert prompt_opens_thinking([1, THINK, END_THINK, 11, THINK, 12], TOKENS) == 4


def test_upsampling_is_torch_bilinear_between_cell_centres_and_mirrored_beyond_them():
    grid = torch.rand(6, 4, generator=torch.Generator().manual_seed(0))
    image = ImageMap(grid, (60, 80)).upsampled()

    def torch_bilinear(size):
        return F.interpolate(grid[None, None], size=size, mode="bilinear", align_corners=False)[0, 0].numpy()

    # cells of 10 x 20 pixels: centres at rows 4.5 .. 54.5 and columns 9.5 .. 69.5
    np.testing.assert_allclose(image[5:55, 10:70], torch_bilinear((60, 80))[5:55, 10:70], atol=1e-6)
    # beyond them: the first pixel row reads source row -0.45, mirrored to 0.45; the last column 3.475, to 2.525
    first_row = 0.55 * grid[0] + 0.45 * grid[1]
    columns = F.interpolate(first_row[None, None, None], size=(1, 80), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(image[0, 10:70], columns[0, 0, 0, 10:70].numpy(), atol=1e-6)
    rows = torch_bilinear((60, 4))  # rows resized, columns kept
    np.testing.assert_allclose(image[5:55, -1], rows[5:55] @ np.array([0, 0, 0.475, 0.525]), atol=1e-6)
    assert np.all(ImageMap(torch.full((3, 5), 2.5), (7, 11)).upsampled() == 2.5)
    np.testing.assert_allclose(ImageMap(torch.tensor([[1.0, 3.0]]), (3, 4)).upsampled(), [[1.5, 1.5, 2.5, 2.5]] * 3)


def test_a_border_cell_that_peaks_points_at_an_object_beside_the_edge():
    grid = torch.zeros(6, 6)
    grid[2, 0] = 1.0  # the map points at the cell of rows 56..83, columns 0..27 of a 168 x 168 image
    beside_edge = [[4 / 168, 58 / 168, 36 / 168, 90 / 168]]  # an object 4 px from the left edge, over that cell
    assert pointing_game(ImageMap(grid, (168, 168)).upsampled(), beside_edge) == 1.0
    # held flat to the edge (torch's bilinear), the peak is a plateau over columns 0..13: 0..3 miss the box
    flat = F.interpolate(grid[None, None], size=(168, 168), mode="bilinear", align_corners=False)[0, 0].numpy()
    assert pointing_game(flat, beside_edge) == 0.0
    assert pointing_game(ImageMap(grid, (168, 168)).upsampled(), [[30 / 168, 58 / 168, 60 / 168, 90 / 168]]) == 0.0


def test_maps_are_laid_out_row_major_and_upsampled_bilinearly():
    scores = torch.arange(2 * 7, dtype=torch.float32).reshape(2, 7) - 8  # token sums: -9, -7, ..., 1, 3
    maps = SaliencyMaps(
        completion_ids=torch.tensor([30, 31]),
        spans=CompletionSpans((0, 0), (0, 2)),
        images=[ImageLayout(torch.arange(0, 6), (2, 3), (20, 30)), ImageLayout(torch.tensor([6]), (1, 1), (5, 4))],
        scores={"flow": scores},
        defined={"flow": torch.tensor([True, True])},
    )
    first, second = maps.answer_map("flow")
    torch.testing.assert_close(first.grid, torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert second.grid.item() == 3.0
    image = first.upsampled()
    assert image.shape == (20, 30) and image.dtype == np.float32
    assert image[0, 0] == 0 and 0 <= image.min() and image.max() <= 1
    # the one non-zero cell (row 1, column 2 of 10 x 10-pixel cells) peaks at its centre, not at the image corner
    assert {tuple(p) for p in np.argwhere(image == image.max())} == {(14, 24), (14, 25), (15, 24), (15, 25)}
    np.testing.assert_allclose(second.upsampled(), 3.0, rtol=1e-6)
    with pytest.raises(IndexError, match=r"token indices must lie in \[0, 2\)"):
        maps.map_over([2])
    with pytest.raises(KeyError, match="no 'direct' maps"):
        maps.map_over([0], "direct")
