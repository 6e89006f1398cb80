"""Baseline saliency methods: answers known analytically (IG completeness, the gradient as a derivative, rollout of
identity attention, RISE with masks that keep everything), layout against the model's own attention weights,
an image the answer cannot see, and hooks released after success and after an exception."""

import pytest
import torch
from saliency_reference import (
    END_THINK,
    IDS,
    IM_END,
    THINK,
    TOKENS,
    attention_state,
    prompt_batch,
    right_pad,
    text_inputs,
    tiny_vlm,
    vision_inputs,
)

from saliency.attention_implementation import attention_implementation
from saliency.baselines import (
    BASELINES,
    RISE,
    AttentionRollout,
    GradientTimesActivation,
    IntegratedGradients,
    RawAttention,
    attention_rollout,
    replaced_image_embeddings,
)

SMALL = {"hidden_size": 64, "num_layers": 2}
# Sample 0 is left-padded (shorter prompt); its answer is two tokens long, sample 1's one token.
SAMPLES = [([(2, 2)], [11, 12]), ([(1, 2), (2, 1)], [13, 14, 15, 16])]
COMPLETIONS = [[THINK, 20, 21, END_THINK, 30, 31, IM_END], [THINK, 22, END_THINK, 32, IM_END, IDS.eos]]
ANSWERS = [(4, 6), (3, 4)]


def _fast(cls, model):
    if cls is IntegratedGradients:
        return cls(model, TOKENS, steps=2)
    if cls is RISE:
        return cls(model, TOKENS, num_masks=4)
    return cls(model, TOKENS)


def _inputs(model, family="qwen2_5_vl", samples=SAMPLES):
    if family == "llava":
        samples = [([(0, 0)], text) for _, text in samples]
    prompt, prompt_mask = prompt_batch(model, family, samples)
    dtype = next(model.parameters()).dtype
    vision = {
        **vision_inputs(model, family, [g for grids, _ in samples for g in grids], dtype),
        **text_inputs(family, prompt),
    }
    completion_ids, completion_mask = right_pad(COMPLETIONS[: len(samples)])
    return prompt, prompt_mask, completion_ids, completion_mask, vision


def _full_inputs(prompt, prompt_mask, completion_ids, completion_mask, vision):
    full = dict(vision)
    if "mm_token_type_ids" in full:
        full["mm_token_type_ids"] = torch.cat([full["mm_token_type_ids"], torch.zeros_like(completion_ids)], 1)
    return dict(
        input_ids=torch.cat([prompt, completion_ids], 1),
        attention_mask=torch.cat([prompt_mask, completion_mask], 1),
        **full,
    )


def _answer_log_probs(model, inputs, prompt_length):
    """Log-probabilities of each sample's answer tokens from a plain forward, independent of the baselines' code."""
    logits = model(**inputs).logits.log_softmax(-1)
    ids = inputs["input_ids"]
    out = []
    for b, (start, end) in enumerate(ANSWERS[: len(ids)]):
        rows = prompt_length - 1 + torch.arange(start, end)
        out.append(logits[b, rows, ids[b, rows + 1]])
    return out


@pytest.fixture(scope="module")
def model64():
    model = tiny_vlm("qwen2_5_vl", torch.float64, **SMALL)
    # RMSNorm(alpha x) jumps from 0 to x / rms(x) within alpha ~ sqrt(eps / mean(x**2)); with eps = 1e-6 that is
    # ~0.02 on this model and a few quadrature points cannot resolve it. A larger eps spreads it over the path.
    for module in model.model.language_model.modules():
        if hasattr(module, "variance_epsilon"):
            module.variance_epsilon = 3e-4
    return model


def test_integrated_gradients_are_complete(model64):
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model64)
    inputs = _full_inputs(prompt, prompt_mask, completion_ids, completion_mask, vision)
    image_mask = inputs["input_ids"] == IDS.image
    with torch.no_grad():
        with_image = _answer_log_probs(model64, inputs, prompt.shape[1])
        with replaced_image_embeddings(IntegratedGradients(model64, TOKENS).adapter, image_mask, torch.zeros_like):
            without_image = _answer_log_probs(model64, inputs, prompt.shape[1])
    errors = {}
    for steps in (1, 16):
        maps = IntegratedGradients(model64, TOKENS, steps=steps).attribute(
            prompt, completion_ids, prompt_mask, completion_mask, **vision
        )
        errors[steps] = []
        for sample, (start, end), full, empty in zip(maps, ANSWERS, with_image, without_image):
            totals = sample.scores["integrated_gradients"][start:end].double().sum(-1)
            errors[steps].append((totals - (full - empty)).abs().max() / (full - empty).abs().max())
            assert sample.defined["integrated_gradients"].nonzero().squeeze(-1).tolist() == list(range(start, end))
    assert max(errors[16]) < 2e-3
    assert max(errors[16]) < max(errors[1]) / 20  # the midpoint rule converges as 1 / steps**2


def test_gradient_times_activation_is_the_derivative_along_the_image_embeddings(model64):
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model64)
    inputs = _full_inputs(prompt, prompt_mask, completion_ids, completion_mask, vision)
    image_mask = inputs["input_ids"] == IDS.image
    adapter = GradientTimesActivation(model64, TOKENS).adapter
    eps = 1e-3  # Qwen's RMSNorm computes in float32: a smaller step drowns in its rounding
    with torch.no_grad():
        with replaced_image_embeddings(adapter, image_mask, lambda e: (1 + eps) * e):
            up = _answer_log_probs(model64, inputs, prompt.shape[1])
        with replaced_image_embeddings(adapter, image_mask, lambda e: (1 - eps) * e):
            down = _answer_log_probs(model64, inputs, prompt.shape[1])
    maps = GradientTimesActivation(model64, TOKENS).attribute(
        prompt, completion_ids, prompt_mask, completion_mask, **vision
    )
    for sample, (start, end), a, b in zip(maps, ANSWERS, up, down):
        derivative = (a - b) / (2 * eps)
        torch.testing.assert_close(
            sample.scores["gradient"][start:end].double().sum(-1), derivative, rtol=2e-3, atol=1e-6
        )


def test_rollout_of_identity_attention_is_the_identity():
    eye = torch.eye(5).expand(1, 3, 5, 5)
    rows = torch.tensor([[0, 2, 4]])
    assert torch.equal(attention_rollout([eye, eye], rows), torch.eye(5)[rows])


def test_rollout_by_hand_and_against_the_full_matrix_product():
    # One layer, two tokens, head mean [[1, 0], [0.5, 0.5]]: (A + I) / 2 = [[1, 0], [0.25, 0.75]].
    heads = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])[None]
    torch.testing.assert_close(attention_rollout([heads], torch.tensor([[1]])), torch.tensor([[[0.25, 0.75]]]))

    generator = torch.Generator().manual_seed(0)
    layers = [torch.rand(2, 4, 6, 6, generator=generator).tril().softmax(-1) for _ in range(3)]
    rows = torch.tensor([[5, 3], [4, 4]])
    full = torch.eye(6).expand(2, 6, 6)
    for weights in layers:  # first layer first: R = Â_3 Â_2 Â_1
        mixed = 0.5 * weights.mean(1) + 0.5 * torch.eye(6)
        full = (mixed / mixed.sum(-1, keepdim=True)) @ full
    torch.testing.assert_close(attention_rollout(layers, rows), full.gather(1, rows[..., None].expand(-1, -1, 6)))


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_attention_baselines_read_the_models_own_weights_at_the_answer_rows(family):
    model = tiny_vlm(family, torch.float32, **SMALL)
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model, family)
    inputs = _full_inputs(prompt, prompt_mask, completion_ids, completion_mask, vision)
    with attention_implementation(model.model.language_model, "eager"), torch.no_grad():
        attentions = model(**inputs, output_attentions=True).attentions
    raw = RawAttention(model, TOKENS).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    rollout = AttentionRollout(model, TOKENS).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    mean = torch.stack(attentions).mean((0, 2))  # (B, L, L) over layers and heads
    for b, (start, end) in enumerate(ANSWERS):
        rows = prompt.shape[1] - 1 + torch.arange(start, end)
        images = (inputs["input_ids"][b] == IDS.image).nonzero().squeeze(-1)
        torch.testing.assert_close(raw[b].scores["attention"][start:end], mean[b][rows][:, images])
        assert not raw[b].scores["attention"][:start].any() and not raw[b].scores["attention"][end:].any()
        flow = rollout[b].scores["rollout"][start:end]
        assert (flow >= 0).all() and (flow.sum(-1) < 1).all()  # part of each row's unit flow reaches the image
    assert model.config.text_config._attn_implementation == "sdpa"


@pytest.mark.parametrize("cls", list(BASELINES.values()), ids=list(BASELINES))
def test_an_image_the_answer_cannot_see(cls):
    """With the image tokens masked out as keys, nothing flows from them: zero maps, and RISE is flat."""
    model = tiny_vlm("qwen2_5_vl", torch.float32, **SMALL)
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model, samples=SAMPLES[:1])
    blocked = prompt_mask.masked_fill(prompt == IDS.image, 0)
    maps = _fast(cls, model).attribute(prompt, completion_ids, blocked, completion_mask, **vision)
    scores = maps[0].scores[cls.kind][slice(*ANSWERS[0])]
    if cls is RISE:
        inputs = _full_inputs(prompt, blocked, completion_ids, completion_mask, vision)
        with torch.no_grad():
            probs = _answer_log_probs(model, inputs, prompt.shape[1])[0].exp()
        torch.testing.assert_close(scores, probs[:, None].expand_as(scores).float(), rtol=1e-4, atol=1e-6)
    else:
        assert scores.abs().max() < 1e-6
    open_maps = _fast(cls, model).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    assert open_maps[0].scores[cls.kind].abs().max() > 1e-4


def test_rise_with_masks_that_keep_everything_gives_the_answer_probability():
    model = tiny_vlm("qwen2_5_vl", torch.float32, **SMALL)
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model)
    maps = RISE(model, TOKENS, num_masks=2, keep_probability=1.0).attribute(
        prompt, completion_ids, prompt_mask, completion_mask, **vision
    )
    with torch.no_grad():
        inputs = _full_inputs(prompt, prompt_mask, completion_ids, completion_mask, vision)
        log_probs = _answer_log_probs(model, inputs, prompt.shape[1])
    for sample, (start, end), log_p in zip(maps, ANSWERS, log_probs):
        scores = sample.scores["rise"][start:end]
        torch.testing.assert_close(scores, log_p.exp()[:, None].expand_as(scores))


def test_rise_masks_are_smooth_random_fields_on_the_grid():
    rise = RISE(tiny_vlm("qwen2_5_vl", torch.float32, **SMALL), TOKENS, cells=2)
    first = rise.grid_mask((3, 5), torch.Generator().manual_seed(0))
    again = rise.grid_mask((3, 5), torch.Generator().manual_seed(0))
    assert first.shape == (3, 5) and torch.equal(first, again)
    assert (first >= 0).all() and (first <= 1).all()
    masks = torch.stack([rise.grid_mask((6, 6), torch.Generator().manual_seed(s)) for s in range(200)])
    assert abs(masks.mean().item() - 0.5) < 0.05


def _state(model):
    # transformers installs its own output-capturing hooks, for good, the first time attentions are asked for.
    hooks = [h for m in model.modules() for h in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())]
    return {
        **attention_state(model),
        "hooks": sum(getattr(h, "__name__", "") != "output_capturing_hook" for h in hooks),
        "grad": [p.grad is None for p in model.parameters()],
    }


@pytest.mark.parametrize("cls", list(BASELINES.values()), ids=list(BASELINES))
def test_hooks_and_attention_are_released_after_success_and_after_an_exception(cls):
    model = tiny_vlm("qwen2_5_vl", torch.float32, **SMALL)
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model, samples=SAMPLES[:1])
    before = _state(model)
    _fast(cls, model).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    assert _state(model) == before
    seen = {}

    def fail(module, args):
        seen["hooks"] = _state(model)["hooks"]
        seen["attn"] = model.config.text_config._attn_implementation
        raise RuntimeError("boom in layer 1")

    handle = model.model.language_model.layers[1].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom in layer 1"):
            _fast(cls, model).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    finally:
        handle.remove()
    if issubclass(cls, (RawAttention, AttentionRollout)):
        assert seen["attn"] == "eager"  # the failure happened while the baseline had switched attention
    else:
        assert seen["hooks"] == before["hooks"] + 2  # its own embedding hook and the failing one
    assert _state(model) == before


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "llava"])
def test_every_baseline_maps_every_family_onto_its_patch_grids(family):
    model = tiny_vlm(family, torch.float32, **SMALL)
    prompt, prompt_mask, completion_ids, completion_mask, vision = _inputs(model, family)
    for kind, cls in BASELINES.items():
        maps = _fast(cls, model).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
        for sample, (grids, _) in zip(maps, SAMPLES):
            assert sample.has_map and torch.isfinite(sample.scores[kind]).all()
            answer = sample.answer_map(kind)
            expected = [(8, 8)] if family == "llava" else grids
            assert [tuple(m.grid.shape) for m in answer] == expected
            assert all(m.upsampled().shape == m.size for m in answer)


def test_completions_without_a_valid_format_get_no_map_and_bad_arguments_are_named():
    model = tiny_vlm("qwen2_5_vl", torch.float32, **SMALL)
    prompt, prompt_mask, _, _, vision = _inputs(model)
    completion_ids, completion_mask = right_pad([[20, 21, 30, IM_END], COMPLETIONS[1]])
    maps = RawAttention(model, TOKENS).attribute(prompt, completion_ids, prompt_mask, completion_mask, **vision)
    assert not maps[0].has_map and "<think>" in maps[0].reason and maps[0].answer_map("attention") is None
    assert maps[1].has_map
    with pytest.raises(ValueError, match="steps"):
        IntegratedGradients(model, TOKENS, steps=0)
    with pytest.raises(ValueError, match="keep_probability"):
        RISE(model, TOKENS, keep_probability=0)
    with pytest.raises(ValueError, match="completion_ids"):
        RawAttention(model, TOKENS).attribute(prompt, completion_ids[:1], prompt_mask, **vision)
