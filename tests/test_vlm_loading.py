"""Model and processor loading: dtype, LoRA targets, QLoRA on CPU, pixel budgets, merging, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModelForImageTextToText, LlamaConfig, LlamaForCausalLM
from trl import ModelConfig

from vlm import build_tiny_vlm, load_model_and_processor, load_processor, merge_lora_adapter, vision_module_names

TEXTS = ["What color is the circle?", "<think>The circle is at the top left. It is red.</think>red"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {
        family: str(build_tiny_vlm(root / family, family=family, texts=TEXTS)) for family in ("qwen2_5_vl", "llava")
    }


def _lora_args(path: str, targets, **kwargs) -> ModelConfig:
    return ModelConfig(model_name_or_path=path, use_peft=True, lora_r=4, lora_target_modules=targets, **kwargs)


def _adapted(model) -> set[str]:
    return {
        name.removeprefix("base_model.model.") for name, module in model.named_modules() if hasattr(module, "lora_A")
    }


def _batch(processor, answer: str = "<think>top left</think>red"):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    text = processor.apply_chat_template(messages)
    inputs = processor(images=[Image.new("RGB", (168, 168), "red")], text=[text], return_tensors="pt")
    inputs["labels"] = inputs["input_ids"].clone()
    return inputs


@pytest.mark.parametrize(
    ("dtype", "expected"), [("float32", torch.float32), ("bfloat16", torch.bfloat16), ("auto", torch.float32)]
)
def test_dtype(tiny, dtype, expected):
    model, _ = load_model_and_processor(ModelConfig(model_name_or_path=tiny["qwen2_5_vl"], dtype=dtype))
    assert model.dtype == expected
    assert not model.training


def test_attention_implementation_is_passed_on(tiny):
    model, _ = load_model_and_processor(ModelConfig(model_name_or_path=tiny["llava"], attn_implementation="eager"))
    assert model.config._attn_implementation == "eager"


def test_inference_load_adds_no_adapters(tiny):
    model, _ = load_model_and_processor(_lora_args(tiny["qwen2_5_vl"], "all-linear"))
    assert not _adapted(model) and not model.training


def test_all_linear_lora_adapts_only_the_language_model(tiny):
    model, processor = load_model_and_processor(_lora_args(tiny["qwen2_5_vl"], "all-linear"), for_training=True)
    projections = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                   "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]  # fmt: skip
    expected = {f"model.language_model.layers.{i}.{p}" for i in range(4) for p in projections}
    assert _adapted(model) == expected
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    model(**_batch(processor)).loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_all_linear_with_vision_tower_adapts_vision_but_never_lm_head(tiny):
    model, _ = load_model_and_processor(
        _lora_args(tiny["qwen2_5_vl"], "all-linear"), for_training=True, adapt_vision_tower=True
    )
    adapted = _adapted(model)
    assert any(name.startswith("model.visual.blocks.") for name in adapted)
    assert any(name.startswith("model.visual.merger.") for name in adapted)
    assert "lm_head" not in adapted


def test_explicit_targets_skip_the_clip_vision_tower(tiny):
    # CLIP's attention also has q_proj / v_proj: PEFT's suffix match alone would adapt the vision tower.
    model, _ = load_model_and_processor(_lora_args(tiny["llava"], ["q_proj", "v_proj"]), for_training=True)
    expected = {f"model.language_model.layers.{i}.self_attn.{p}" for i in range(4) for p in ("q_proj", "v_proj")}
    assert _adapted(model) == expected
    model, _ = load_model_and_processor(
        _lora_args(tiny["llava"], ["q_proj", "v_proj"]), for_training=True, adapt_vision_tower=True
    )
    assert {n for n in _adapted(model) if n.startswith("model.vision_tower.")}
    assert vision_module_names(model.base_model.model) == ["model.vision_tower", "model.multi_modal_projector"]


def test_lm_head_is_adapted_when_named(tiny):
    model, _ = load_model_and_processor(_lora_args(tiny["qwen2_5_vl"], ["lm_head", "q_proj"]), for_training=True)
    assert "lm_head" in _adapted(model)


def test_qlora_4bit_loads_and_trains_on_cpu(tiny):
    args = _lora_args(tiny["qwen2_5_vl"], "all-linear", load_in_4bit=True, dtype="float32")
    model, processor = load_model_and_processor(args, for_training=True)
    linear4bit = [n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"]
    assert any("language_model.layers.0.self_attn.q_proj" in n for n in linear4bit)
    assert getattr(model, "is_loaded_in_4bit", False)
    loss = model(**_batch(processor)).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None for g in grads)
    # lora_B starts at zero, so only lora_B receives a gradient on the first step; it must not vanish.
    assert sum(g.abs().sum() for g in grads) > 0


def test_pixel_budget_changes_the_image_grid(tiny):
    processor = load_processor(tiny["qwen2_5_vl"], max_pixels=(4 * 28) ** 2)
    grid = processor(images=[Image.new("RGB", (168, 168))], text=["<|vision_start|><|image_pad|><|vision_end|>"])
    assert grid["image_grid_thw"].tolist() == [[1, 8, 8]]
    with pytest.raises(ValueError, match="min_pixels=50000 and max_pixels=12544"):
        load_processor(tiny["qwen2_5_vl"], min_pixels=50_000, max_pixels=(4 * 28) ** 2)
    with pytest.raises(ValueError, match="fixed size"):
        load_processor(tiny["llava"], max_pixels=1000)


def test_merge_lora_adapter_matches_the_adapted_model(tiny, tmp_path):
    model, processor = load_model_and_processor(
        _lora_args(tiny["qwen2_5_vl"], ["q_proj", "down_proj"]), for_training=True
    )
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    model.save_pretrained(tmp_path / "adapter")
    processor.save_pretrained(tmp_path / "adapter")
    merged_dir = merge_lora_adapter(tmp_path / "adapter", tmp_path / "merged")

    merged = AutoModelForImageTextToText.from_pretrained(merged_dir).eval()
    assert not _adapted(merged)
    model.eval()
    batch = _batch(load_processor(str(merged_dir)))
    with torch.no_grad():
        expected, got = model(**batch).logits, merged(**batch).logits
    base, _ = load_model_and_processor(ModelConfig(model_name_or_path=tiny["qwen2_5_vl"]))
    with torch.no_grad():
        assert not torch.allclose(base(**batch).logits, got, atol=1e-4)  # the adapter changed something
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_trust_remote_code_is_off_unless_asked(tiny, tmp_path):
    path = tmp_path / "remote"
    shutil.copytree(tiny["qwen2_5_vl"], path)
    marker = tmp_path / "remote_code_ran"
    (path / "configuration_marked.py").write_text(
        "from pathlib import Path\n"
        "from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration\n"
        f"Path({str(marker)!r}).touch()\n"
        "class MarkedConfig(Qwen2_5_VLConfig):\n    pass\n"
        "class MarkedModel(Qwen2_5_VLForConditionalGeneration):\n    config_class = MarkedConfig\n"
    )
    config = json.loads((path / "config.json").read_text())
    module = "configuration_marked"
    config["auto_map"] = {
        "AutoConfig": f"{module}.MarkedConfig",
        "AutoModelForImageTextToText": f"{module}.MarkedModel",
    }
    (path / "config.json").write_text(json.dumps(config))

    model, _ = load_model_and_processor(ModelConfig(model_name_or_path=str(path)))
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and not marker.exists()
    model, _ = load_model_and_processor(ModelConfig(model_name_or_path=str(path)), trust_remote_code=True)
    assert type(model).__name__ == "MarkedModel" and marker.exists()


def test_clear_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="--model_name_or_path is required"):
        load_model_and_processor(ModelConfig())
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_model_and_processor(ModelConfig(model_name_or_path=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_model_and_processor(ModelConfig(model_name_or_path=str(tmp_path / "empty")))

    text_only = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(text_only)  # fmt: skip
    with pytest.raises(ValueError, match="'llama' model, which AutoModelForImageTextToText does not support"):
        load_model_and_processor(ModelConfig(model_name_or_path=str(text_only)))

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="names no base_model_name_or_path"):
        load_model_and_processor(ModelConfig(model_name_or_path=str(adapter)))
    # an adapter loads for inference (tests/test_eval_launcher.py), never as a model to train
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tiny["qwen2_5_vl"])}))
    with pytest.raises(ValueError, match="holds a LoRA adapter, not a model to train"):
        load_model_and_processor(ModelConfig(model_name_or_path=str(adapter)), for_training=True)
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json"):
        merge_lora_adapter(tmp_path / "empty", tmp_path / "out")

    path = tiny["qwen2_5_vl"]
    with pytest.raises(ValueError, match="--dtype 'float64'"):
        load_model_and_processor(ModelConfig(model_name_or_path=path, dtype="float64"))
    with pytest.raises(ValueError, match="also pass --use_peft"):
        load_model_and_processor(ModelConfig(model_name_or_path=path, load_in_4bit=True), for_training=True)
    with pytest.raises(ValueError, match="--load_in_4bit computes in --dtype"):
        load_model_and_processor(ModelConfig(model_name_or_path=path, load_in_4bit=True, dtype="auto"))
    with pytest.raises(ValueError, match="--lora_target_modules is required"):
        load_model_and_processor(ModelConfig(model_name_or_path=path, use_peft=True), for_training=True)


def test_a_truncation_saved_by_training_does_not_cut_later_prompts(tiny_model_dir, tmp_path):
    """TRL's collator calls the processor with truncation=True, max_length=--max_length; the saved tokenizer.json keeps
    that, transformers makes it the tokenizer's default max_length and the processor passes it on every call (prompts
    silently cut, a warning on each padded batch)."""
    import warnings

    processor = load_processor(str(tiny_model_dir))
    long_text = "red circle " * 300
    full = len(processor(text=[long_text])["input_ids"][0])
    processor(text=[long_text], truncation=True, max_length=32)  # the state a training run leaves behind
    processor.save_pretrained(str(tmp_path))
    assert json.loads((tmp_path / "tokenizer.json").read_text())["truncation"]["max_length"] == 32
    reloaded = load_processor(str(tmp_path), config=AutoConfig.from_pretrained(str(tiny_model_dir)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        batch = reloaded(text=[long_text, "red"], padding=True)
    assert len(batch["input_ids"][0]) == full > 32
    reloaded.save_pretrained(str(tmp_path / "again"))
    assert json.loads((tmp_path / "again" / "tokenizer.json").read_text())["truncation"] is None
    assert len(reloaded(text=[long_text], truncation=True, max_length=16)["input_ids"][0]) == 16  # still on request
