"""The one way the tracer, the baselines and the tests switch attention: restored and unregistered on every exit."""

from contextlib import nullcontext

import pytest
import torch
from saliency_reference import attention_state, tiny_vlm
from transformers import AttentionInterface, AttentionMaskInterface
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


def _registry() -> dict:
    return {"attention": dict(AttentionInterface._global_mapping), "mask": dict(AttentionMaskInterface._global_mapping)}


def test_each_config_gets_back_the_implementation_it_had_without_transformers_checking_it_again(model, monkeypatch):
    """Names are written back, not requested again: requesting flash_attention_2 where flash-attn is missing fails."""
    model.config.text_config._attn_implementation = "flash_attention_2"  # the text decoder alone, as a dict would set
    try:
        before, registry = attention_state(model), _registry()
        assert before["attn"] == ("sdpa", "flash_attention_2", "sdpa")
        checked = []
        real = type(model)._check_and_adjust_attn_implementation
        monkeypatch.setattr(
            type(model.model.language_model),
            "_check_and_adjust_attn_implementation",
            lambda self, name, *a, **k: checked.append(name) or real(self, name, *a, **k),
        )
        for raises in (False, True):
            with pytest.raises(RuntimeError, match="boom") if raises else nullcontext(), _counting(model, []):
                assert attention_state(model)["attn"] == ("sdpa", NAME, "sdpa")
                if raises:
                    raise RuntimeError("boom")
            assert attention_state(model) == before and _registry() == registry
        assert checked == [NAME, NAME]  # the switch is checked, the way back is not
    finally:
        model.config.text_config._attn_implementation = "sdpa"
