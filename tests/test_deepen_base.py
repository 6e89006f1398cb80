"""bench/deepen_base.py: the deepened base computes what the base computes, and its new layers can learn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForImageTextToText

from data_tools.synthetic import make_example
from vlm import load_processor

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "vlm" / "tiny_base"
spec = importlib.util.spec_from_file_location("deepen_base", REPO / "bench" / "deepen_base.py")
deepen_base = importlib.util.module_from_spec(spec)
spec.loader.exec_module(deepen_base)


def _inputs(processor):
    example = make_example(0, "eval", 3)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.problem}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=[text], images=[example.image], return_tensors="pt")


@pytest.fixture(scope="module")
def deepened(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepened")
    deepen_base.main(["--model", str(BASE), "--output_dir", str(out), "--after", "1", "--copy", "2", "3"])
    return out


def test_deepened_base_gives_the_same_logits(deepened):
    out = deepened
    processor = load_processor(str(BASE))
    inputs = _inputs(processor)
    base = AutoModelForImageTextToText.from_pretrained(str(BASE)).eval()
    deep = AutoModelForImageTextToText.from_pretrained(str(out)).eval()
    assert deep.config.text_config.num_hidden_layers == base.config.text_config.num_hidden_layers + 2
    with torch.no_grad():
        torch.testing.assert_close(deep(**inputs).logits, base(**inputs).logits, rtol=0, atol=1e-5)


def test_layers_are_copied_in_order_and_the_copies_start_silent(deepened):
    out = deepened
    base = AutoModelForImageTextToText.from_pretrained(str(BASE)).model.language_model.layers
    deep = AutoModelForImageTextToText.from_pretrained(str(out)).model.language_model.layers
    # new order: 0, 1, copy of 2, copy of 3, 2, 3
    for new, old in enumerate([0, 1, 2, 3, 2, 3]):
        torch.testing.assert_close(deep[new].self_attn.q_proj.weight, base[old].self_attn.q_proj.weight)
        torch.testing.assert_close(deep[new].mlp.up_proj.weight, base[old].mlp.up_proj.weight)
        silent = new in (2, 3)
        assert (deep[new].self_attn.o_proj.weight.abs().sum() == 0) == silent
        assert (deep[new].mlp.down_proj.weight.abs().sum() == 0) == silent
    # the recipe's records travel with it, so make_tiny_base can continue from the deepened base
    for name in ("perception_eval.json", "README.md", "tokenizer.json", "chat_template.jinja"):
        assert (out / name).read_bytes() == (BASE / name).read_bytes()


def test_the_silent_layers_get_gradients(deepened):
    out = deepened
    processor = load_processor(str(BASE))
    inputs = _inputs(processor)
    model = AutoModelForImageTextToText.from_pretrained(str(out))
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    inserted = model.model.language_model.layers[2]
    assert inserted.self_attn.o_proj.weight.grad.abs().sum() > 0
    assert inserted.mlp.down_proj.weight.grad.abs().sum() > 0


def test_the_recipe_card_states_the_deepened_architecture(deepened):
    from launch.make_tiny_base import ARCHITECTURE, architecture

    assert architecture(BASE) == ARCHITECTURE  # the shipped base is what the recipe builds
    assert architecture(deepened) == ARCHITECTURE | {"num_layers": ARCHITECTURE["num_layers"] + 2}


@pytest.mark.parametrize("flags", [["--after", "4", "--copy", "2"], ["--after", "1", "--copy", "7"]])
def test_out_of_range_layers_are_refused_by_name(tmp_path, flags):
    with pytest.raises(SystemExit, match="--after|--copy"):
        deepen_base.main(["--model", str(BASE), "--output_dir", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_a_folder_without_weights_or_the_model_itself_as_output_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--model .*model.safetensors"):
        deepen_base.main(
            ["--model", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--after", "0", "--copy", "0"]
        )
    with pytest.raises(SystemExit, match="--output_dir .*is --model"):
        deepen_base.main(["--model", str(BASE), "--output_dir", str(BASE), "--after", "0", "--copy", "0"])
    assert not (tmp_path / "out").exists()
