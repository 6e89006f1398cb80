"""The one way the tracer, the baselines and the tests switch attention: restored and unregistered on every exit."""

import pytest
import torch
from saliency_reference import attention_state, tiny_vlm
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from saliency.attention_implementation import attention_implementation

NAME = "saliency_test_counting_sdpa"


@pytest.fixture(scope="module")
def model():
    return tiny_vlm("qwen2_5_vl", torch.float32, hidden_size=64, num_layers=2)


def _counting(model, calls: list, name: str = NAME):
    """The text decoder switched to SDPA under a new name that logs the layer of every call."""

    def attention(module, *args, **kwargs):
        calls.append(module.layer_idx)
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, *args, **kwargs)

    return attention_implementation(model.model.language_model, name, attention, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def _forward(model, **kwargs):
    with torch.no_grad():
        return model(input_ids=torch.tensor([[10, 11, 12]]), **kwargs)


def test_a_registered_implementation_runs_inside_the_block_and_is_gone_after(model):
    before = attention_state(model)
    assert before["attn"] == ("sdpa", "sdpa", "sdpa")
    expected = _forward(model).logits
    calls = []
    with _counting(model, calls):
        assert attention_state(model)["attn"] == ("sdpa", NAME, "sdpa")  # only the text decoder switched
        assert NAME in ALL_ATTENTION_FUNCTIONS and NAME in ALL_MASK_ATTENTION_FUNCTIONS
        torch.testing.assert_close(_forward(model).logits, expected, rtol=0, atol=0)
    assert calls == [0, 1]
    assert attention_state(model) == before


def test_everything_is_restored_after_an_exception(model):
    before = attention_state(model)
    with pytest.raises(RuntimeError, match="boom"), _counting(model, []):
        raise RuntimeError("boom")
    assert attention_state(model) == before
    with pytest.raises(RuntimeError, match="boom"), attention_implementation(model.model.language_model, "eager"):
        raise RuntimeError("boom")
    assert attention_state(model) == before


def test_switching_to_a_built_in_implementation_registers_nothing(model):
    before = attention_state(model)
    with attention_implementation(model.model.language_model, "eager"):
        assert attention_state(model) == {**before, "attn": ("sdpa", "eager", "sdpa")}
        assert len(_forward(model, output_attentions=True).attentions) == 2
    assert attention_state(model) == before


def test_refusals_leave_nothing_behind(model):
    before = attention_state(model)
    with pytest.raises(ValueError, match="already registered"), _counting(model, [], name="sdpa"):
        pass
    text = model.model.language_model
    with (
        pytest.raises(ValueError, match="both its attention and its mask"),
        attention_implementation(text, NAME, print),
    ):
        pass
    assert attention_state(model) == before


def test_a_model_that_cannot_switch_is_an_error_not_a_silent_no_op(model, monkeypatch):
    before = attention_state(model)
    monkeypatch.setattr(type(model.model.language_model), "_can_set_attn_implementation", classmethod(lambda c: False))
    with pytest.raises(RuntimeError, match="cannot switch its attention implementation"), _counting(model, []):
        pass
    assert attention_state(model) == before
