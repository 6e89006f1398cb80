"""The computational contract: the model keeps its attention, nothing leaks after tracing, no output_attentions."""

import pytest
import torch
from saliency_reference import (
    END_THINK,
    IM_END,
    THINK,
    TOKENS,
    attention_state,
    prompt_batch,
    text_inputs,
    tiny_vlm,
    vision_inputs,
)

from saliency import SaliencyTracer
from saliency.capture import TRACE_PREFIX

COMPLETION = [THINK, 20, 21, END_THINK, 30, IM_END]


@pytest.fixture(scope="module")
def setup():
    model = tiny_vlm("qwen2_5_vl", torch.float32)
    prompt, prompt_mask = prompt_batch(model, "qwen2_5_vl", [([(2, 2)], [11, 12])])
    vision = {**vision_inputs(model, "qwen2_5_vl", [(2, 2)], torch.float32), **text_inputs("qwen2_5_vl", prompt)}
    return model, prompt, prompt_mask, vision


def _state(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return {**attention_state(model), "hooks": hooks}


def test_everything_is_restored_after_normal_exit(setup):
    model, prompt, prompt_mask, vision = setup
    before = _state(model)
    assert before["attn"][1] == "sdpa"
    assert not [name for names in before["registered"] for name in names if name.startswith(TRACE_PREFIX)]
    SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
    assert _state(model) == before


def test_everything_is_restored_after_an_exception(setup):
    model, prompt, prompt_mask, vision = setup
    before = _state(model)
    seen = {}

    def fail(module, args):
        seen["attn"] = model.config.text_config._attn_implementation
        raise RuntimeError("boom in layer 2")

    handle = model.model.language_model.layers[2].register_forward_pre_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="boom in layer 2"):
            SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
        with pytest.raises(RuntimeError, match="boom in layer 2"):
            SaliencyTracer(model, TOKENS).generate(prompt, attention_mask=prompt_mask, max_new_tokens=2, **vision)
    finally:
        handle.remove()
    assert seen["attn"].startswith(TRACE_PREFIX)  # the failure happened while tracing was on
    assert _state(model) == before


def test_main_pass_keeps_sdpa_and_never_asks_for_attention_weights(setup, monkeypatch):
    model, prompt, prompt_mask, vision = setup
    calls = {"sdpa": 0, "output_attentions": 0}
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls["sdpa"] += 1
        return real_sdpa(*args, **kwargs)

    def watch(module, args, kwargs):
        calls["output_attentions"] += bool(kwargs.get("output_attentions"))

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", counting_sdpa)
    handle = model.register_forward_pre_hook(watch, with_kwargs=True)
    try:
        SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
    finally:
        handle.remove()
    text_layers = model.config.text_config.num_hidden_layers
    assert calls["sdpa"] >= text_layers  # every text layer still ran the model's own SDPA (the vision tower adds more)
    assert calls["output_attentions"] == 0
    assert not model.config.output_attentions


def test_no_row_of_length_l_squared_is_kept(setup, monkeypatch):
    """What is kept grows with the rows the maps need times the image size, never with L x L."""
    model, prompt, prompt_mask, vision = setup
    from saliency import tracer as tracer_module

    kept = {}
    original = tracer_module._ScoringRecorder.on_attention

    def spy(self, layer, query, key, value, mask, scaling):
        original(self, layer, query, key, value, mask, scaling)
        kept[layer] = [tuple(t.shape) for t in (self.rows[0].image_rows[-1], self.rows[0].think_rows[-1])]

    monkeypatch.setattr(tracer_module._ScoringRecorder, "on_attention", spy)
    SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
    heads = model.config.text_config.num_attention_heads
    # rows q(0)..q(4): 5 rows x 4 image positions; the answer row (q of "30") x 2 thinking tokens.
    assert kept[0] == [(heads, 5, 4), (heads, 1, 2)]


def test_nested_tracing_is_refused(setup):
    model, prompt, prompt_mask, vision = setup
    from saliency.capture import Recorder, traced_attention

    tracer = SaliencyTracer(model, TOKENS)
    before = _state(model)
    with traced_attention(tracer.adapter, Recorder()), pytest.raises(RuntimeError, match="already being traced"):
        tracer.score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
    assert _state(model) == before


def test_only_the_chosen_layers_reach_the_recorder(setup):
    model, prompt, prompt_mask, vision = setup
    from saliency.capture import Recorder, traced_attention

    class LayerLog(Recorder):
        def __init__(self):
            self.layers = []

        def on_attention(self, layer, query, key, value, mask, scaling):
            self.layers.append(layer)

        def on_inverse_rms(self, inv_rms):
            pass

    tracer = SaliencyTracer(model, TOKENS, layers=[-1, 0])
    assert tracer.layers == [0, len(tracer.adapter.attentions) - 1]
    for layers, expected in ((None, list(range(len(tracer.adapter.attentions)))), (tracer.layers, tracer.layers)):
        log = LayerLog()
        with traced_attention(tracer.adapter, log, layers), torch.no_grad():
            model(input_ids=prompt, attention_mask=prompt_mask, **vision)
        assert log.layers == expected


def test_generate_refuses_beam_search(setup):
    model, prompt, prompt_mask, vision = setup
    with pytest.raises(ValueError, match="beam search"):
        SaliencyTracer(model, TOKENS).generate(prompt, attention_mask=prompt_mask, num_beams=2, **vision)


def test_scoring_under_training_mode_builds_no_graph(setup):
    model, prompt, prompt_mask, vision = setup
    model.train()
    try:
        maps = SaliencyTracer(model, TOKENS).score(prompt, torch.tensor([COMPLETION]), prompt_mask, **vision)
    finally:
        model.eval()
    assert not maps[0].scores["flow"].requires_grad
