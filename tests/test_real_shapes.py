"""The tracer at the hub models' real shapes (widths, heads, key/value heads, vocabulary, rope, vision towers, image
processors), cut to one decoder layer and two vision blocks with random weights (``vlm.real_shapes``)."""

from __future__ import annotations

import gc

import pytest
import torch
from peft import LoraConfig, get_peft_model

from saliency import SaliencyTracer, SpecialTokens, find_spans
from saliency.reference import reference_scores
from vlm.real_shapes import REAL_SHAPES, build_real_shape, example_inputs, real_shape_config, real_shape_image_processor

# (hidden, intermediate, query heads, key/value heads, vocabulary, rope theta, vision width, vision depth), read
# off each hub repository's config.json, independently of vlm/real_shapes.py.
HUB_NUMBERS = {
    "qwen2_vl_2b": (1536, 8960, 12, 2, 151936, 1e6, 1280, 32),
    "qwen2_vl_7b": (3584, 18944, 28, 4, 152064, 1e6, 1280, 32),
    "qwen2_5_vl_3b": (2048, 11008, 16, 2, 151936, 1e6, 1280, 32),
    "qwen2_5_vl_7b": (3584, 18944, 28, 4, 152064, 1e6, 1280, 32),
    "qwen3_vl_2b": (2048, 6144, 16, 8, 151936, 5e6, 1024, 24),
    "qwen3_vl_4b": (2560, 9728, 32, 8, 151936, 5e6, 1024, 24),
    "qwen3_vl_8b": (4096, 12288, 32, 8, 151936, 5e6, 1152, 27),
    "llava_1_5_7b": (4096, 11008, 32, 32, 32064, 1e4, 1024, 24),
}
# The processors' grid (t, h, w in patches) for a 1024 x 768 image under the recipes' 262144-pixel budget: 14-px
# patches in 28-px merged tokens (Qwen2/2.5-VL), 16-px patches in 32-px tokens (Qwen3-VL).
GRID_1024x768 = {"qwen2_vl": (1, 30, 42), "qwen2_5_vl": (1, 30, 42), "qwen3_vl": (1, 26, 36)}
# One model per family for the heavy tests, so each is built once per module.
HEAVY = ("qwen2_vl_2b", "qwen2_5_vl_3b", "qwen3_vl_2b", "llava_1_5_7b")
# The columns of LLaVA-1.5's 24 x 24 image compared with the reference (all 576: ~5 TFLOP of brute force, minutes
# on a CPU): the four corners, both ends of the first row and the start of the second, the centre and a diagonal.
LLAVA_COLUMNS = (0, 1, 23, 24, 50, 125, 200, 276, 299, 311, 350, 425, 500, 552, 574, 575)


def _hub_numbers(name: str) -> tuple:
    config = real_shape_config(name, num_layers=36, vision_depth=32)
    text, vision = config.text_config, config.vision_config
    vision_width = getattr(vision, "embed_dim", None) or vision.hidden_size
    depth = REAL_SHAPES[name].vision.get("depth") or REAL_SHAPES[name].vision["num_hidden_layers"]
    theta = text.rope_parameters["rope_theta"]
    return (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size, theta, vision_width, depth)  # fmt: skip


@pytest.mark.parametrize("name", list(REAL_SHAPES))
def test_configs_carry_the_hub_numbers(name):
    assert REAL_SHAPES[name].hub
    assert _hub_numbers(name) == HUB_NUMBERS[name]
    config = real_shape_config(name, num_layers=1, vision_depth=2)
    assert config.text_config.num_hidden_layers == 1
    vision = config.vision_config
    if REAL_SHAPES[name].family == "qwen2_5_vl":
        assert (vision.depth, vision.window_size, vision.fullatt_block_indexes) == (2, 112, [1])
    if REAL_SHAPES[name].family == "qwen3_vl":
        assert config.text_config.head_dim == 128 and vision.deepstack_visual_indexes == [0]
        assert config.text_config.rope_parameters["mrope_section"] == [24, 20, 20]
    if name == "llava_1_5_7b":
        assert (vision.image_size, vision.patch_size, config.vision_feature_layer) == (336, 14, -2)


@pytest.mark.parametrize("name", list(REAL_SHAPES))
def test_image_processors_give_the_real_grids(name):
    from PIL import Image

    processed = real_shape_image_processor(name)(Image.new("RGB", (1024, 768)), return_tensors="pt")
    family = REAL_SHAPES[name].family
    if family == "llava":
        assert tuple(processed["pixel_values"].shape) == (1, 3, 336, 336)
    else:
        assert tuple(processed["image_grid_thw"][0].tolist()) == GRID_1024x768[family]


@pytest.fixture(scope="module", params=HEAVY)
def real_model(request):
    model, processor = build_real_shape(request.param, num_layers=1, vision_depth=2)
    yield request.param, model, processor
    del model
    gc.collect()


@pytest.mark.slow
def test_tracer_grid_is_the_processors_at_1024x768(real_model):
    _, model, processor = real_model
    prompt, prompt_mask, completion, vision = example_inputs(processor, (1024, 768))
    maps = SaliencyTracer(model, SpecialTokens.from_tokenizer(processor)).score(
        prompt, completion, prompt_mask, image_sizes=[[(768, 1024)]], **vision
    )[0]
    assert maps.has_map, maps.reason
    if "image_grid_thw" in vision:
        merge = model.config.vision_config.spatial_merge_size
        _, rows, cols = vision["image_grid_thw"][0].tolist()
        assert maps.images[0].grid == (rows // merge, cols // merge)
    else:
        assert maps.images[0].grid == (24, 24)  # LLaVA-1.5: 336 px / 14-px patches, CLS dropped
    columns = maps.images[0].grid[0] * maps.images[0].grid[1]
    assert maps.scores["flow"].shape == (completion.shape[1], columns)
    heatmap = maps.answer_map("flow")[0].upsampled()
    assert heatmap.shape == (768, 1024) and torch.isfinite(torch.as_tensor(heatmap)).all()


def _qwen_inputs(model, processor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    """A 2 x 3 merged-token image: a small image keeps the brute force's heads x tokens x vocabulary small."""
    tokenizer, config = processor.tokenizer, model.config
    rows, cols = 2, 3
    question = tokenizer("What colour is the square?", add_special_tokens=False).input_ids
    prompt = torch.tensor([[config.vision_start_token_id, *[config.image_token_id] * (rows * cols),
                            config.vision_end_token_id, *question]])  # fmt: skip
    text = "<think>The red square is at the top left.</think>red" + tokenizer.eos_token
    completion = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    vision_config = config.vision_config
    patch = 3 * vision_config.temporal_patch_size * vision_config.patch_size**2
    generator = torch.Generator().manual_seed(0)
    vision = {
        "pixel_values": torch.randn(4 * rows * cols, patch, generator=generator),
        "image_grid_thw": torch.tensor([[1, 2 * rows, 2 * cols]]),
        "mm_token_type_ids": prompt.eq(config.image_token_id).long(),
    }
    return prompt, torch.ones_like(prompt), completion, vision


@pytest.mark.slow
def test_maps_equal_the_reference(real_model):
    """Qwen: every column of a 2 x 3 image. LLaVA-1.5: its processor's 336-px crop of a 1024 x 768 image (576 image
    tokens, real decoder and projector), the tracer's full map checked against the reference on ``LLAVA_COLUMNS``."""
    name, model, processor = real_model
    tokens = SpecialTokens.from_tokenizer(processor)
    llava = REAL_SHAPES[name].family == "llava"
    if llava:
        prompt, prompt_mask, completion, vision = example_inputs(processor, (1024, 768))
        assert int(prompt.eq(model.config.image_token_id).sum()) == 576
        columns = list(LLAVA_COLUMNS)
    else:
        prompt, prompt_mask, completion, vision = _qwen_inputs(model, processor)
        columns = None
    maps = SaliencyTracer(model, tokens).score(prompt, completion, prompt_mask, **vision)[0]
    assert maps.has_map, maps.reason
    ids = torch.cat([prompt, completion], 1)
    mask = torch.cat([prompt_mask, torch.ones_like(completion)], 1)
    full = dict(vision)
    if "mm_token_type_ids" in vision:
        full["mm_token_type_ids"] = ids.eq(model.config.image_token_id).long()
    spans = [find_spans(completion[0].tolist(), tokens)]
    (expected,) = reference_scores(model, ids, mask, full, prompt.shape[1], spans, columns=columns)
    for kind in ("direct", "flow"):
        want = expected[kind]
        got = maps.scores[kind][: len(want)]
        assert got.shape[1] == (576 if llava else 6)
        if columns is not None:
            got = got[:, columns]
        scale = want.abs().max()
        assert scale > 0
        torch.testing.assert_close(got.to(want.dtype), want, rtol=0, atol=1e-4 * scale)
    if not llava:  # the reference on chosen columns is the same as its full map's columns
        (picked,) = reference_scores(model, ids, mask, full, prompt.shape[1], spans, columns=[5, 0, 3])
        for kind in ("direct", "flow"):
            torch.testing.assert_close(picked[kind], expected[kind][:, [5, 0, 3]])


@pytest.mark.slow
def test_grpo_step_with_lora_r16_on_q_and_v(synthetic_data_dir, tmp_path):
    from grpo_helpers import short_grpo_args

    from rewards import get_reward_funcs
    from rl import SaliencyGRPOTrainer, load_grpo_dataset

    # float32: this CPU has no bf16 instructions (no AVX512-BF16 / AMX), where bf16 matmuls are emulated and slow.
    model, processor = build_real_shape("qwen2_5_vl_3b", num_layers=1, vision_depth=2)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"]))
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trained)
    args = short_grpo_args(
        tmp_path,
        steer="<think>The circle is red.</think>red",
        tokenizer=processor.tokenizer,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
    )
    trainer = SaliencyGRPOTrainer(
        model=model,
        reward_funcs=get_reward_funcs(("format", "accuracy", "saliency")),
        args=args,
        train_dataset=load_grpo_dataset(str(synthetic_data_dir), split="rl").select(range(1)),
        processing_class=processor,
    )
    trainer.train()
    # Both completions are steered to the same text, so their advantages (and the step's gradient) are 0: the test
    # checks that the step runs end to end at these widths, maps and rewards included, not that it learns.
    assert trainer.state.global_step == 1
    logged = trainer.state.log_history[0]
    assert any("saliency" in key for key in logged)
    assert all(torch.isfinite(torch.tensor(v)) for v in logged.values() if isinstance(v, float))
