"""The tiny model builder: every family builds, loads like a Hub checkpoint and generates from an image."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from vlm import FAMILIES, build_tiny_vlm, load_processor
from vlm.build_tiny import main
from vlm.chat_templates import QWEN_DEFAULT_SYSTEM_PROMPT

# Merged image tokens of a 168x168 image: 6x6 for 14-px patches (2x2 merge), 5x5 for Qwen3-VL's 16-px patches,
# 8x8 CLIP patches for LLaVA's 112x112 input.
IMAGE_TOKENS = {"qwen2_5_vl": 36, "qwen2_vl": 36, "qwen3_vl": 25, "llava": 64}
VISION_TOKENS = {
    "qwen2_5_vl": [
        "<|vision_start|>",
        "<|image_pad|>",
        "<|vision_end|>",
        "<|video_pad|>",
        "<|im_start|>",
        "<|im_end|>",
    ],
    "llava": ["<image>", "<s>", "</s>"],
}
TEXTS = [
    "What color is the circle?",
    "<think>The circle is at the top left. It is red.</think>red",
    "How many shapes are in the left half?",
    "<think>The square is at the bottom right. It is blue.</think>square",
]


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny_vlm(root / family, family=family, texts=TEXTS) for family in FAMILIES}


def _messages(system: bool = True) -> list[dict]:
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is the circle?"}]}
    return ([{"role": "system", "content": [{"type": "text", "text": "Reason first."}]}] if system else []) + [user]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_loads_through_auto_classes_and_generates(tiny_models, family):
    model = AutoModelForImageTextToText.from_pretrained(tiny_models[family])
    processor = load_processor(str(tiny_models[family]))
    assert model.config.model_type == family
    assert sum(p.numel() for p in model.parameters()) < 3_000_000

    text = processor.apply_chat_template(_messages(), add_generation_prompt=True)
    inputs = processor(images=[Image.new("RGB", (168, 168), "red")], text=[text], return_tensors="pt")
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == IMAGE_TOKENS[family]
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    new_tokens = out[0, inputs["input_ids"].shape[1] :]
    assert 1 <= len(new_tokens) <= 5
    assert isinstance(processor.decode(new_tokens), str)


def test_saved_files_name_the_hub_processor_class(tiny_models):
    saved = json.loads((tiny_models["qwen2_5_vl"] / "processor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5_VLProcessor"
    assert saved["image_processor"]["size"] == {"shortest_edge": 56 * 56, "longest_edge": 168 * 168}
    # LLaVA's processor has no video processor, so the stock AutoProcessor loads it even without torchvision.
    processor = AutoProcessor.from_pretrained(tiny_models["llava"])
    assert type(processor).__name__ == "LlavaProcessor"


def test_qwen_processor_refuses_videos(tiny_models):
    processor = load_processor(str(tiny_models["qwen2_5_vl"]))
    if hasattr(processor, "video_processor"):
        pytest.skip("torchvision is installed: the processor handles videos")
    text = "<|vision_start|><|video_pad|><|vision_end|>"
    with pytest.raises(ImportError, match="videos only with torchvision"):
        processor(videos=[[Image.new("RGB", (56, 56))] * 2], text=[text])


@pytest.mark.parametrize("family", ["qwen2_5_vl", "llava"])
def test_tokenizer_special_tokens_are_single_ids(tiny_models, family):
    tokenizer = load_processor(str(tiny_models[family])).tokenizer
    for token in ["<think>", "</think>", *VISION_TOKENS[family]]:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token, token
    # The think tags survive decoding without special tokens (the reward functions read them); the others do not.
    ids = tokenizer.encode(f"{VISION_TOKENS[family][0]}<think>left</think>red", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>left</think>red"


@pytest.mark.parametrize(
    "text", ["What color is the circle?", "  two\nlines\ttab ", "Ünïcödé ✓ 形", "<think>x</think> y"]
)
def test_tokenizer_round_trips_text(tiny_models, text):
    tokenizer = load_processor(str(tiny_models["qwen2_5_vl"])).tokenizer
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_qwen_chat_template_renders_like_qwen2_5_vl(tiny_models):
    processor = load_processor(str(tiny_models["qwen2_5_vl"]))
    answer = {"role": "assistant", "content": [{"type": "text", "text": "<think>top left</think>red"}]}
    conversation = [*_messages(), answer]
    assert processor.apply_chat_template(conversation) == (
        "<|im_start|>system\nReason first.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What color is the circle?<|im_end|>\n"
        "<|im_start|>assistant\n<think>top left</think>red<|im_end|>\n"
    )
    assert processor.apply_chat_template(_messages(system=False), add_generation_prompt=True, add_vision_id=True) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM_PROMPT}<|im_end|>\n"
        "<|im_start|>user\nPicture 1: <|vision_start|><|image_pad|><|vision_end|>What color is the circle?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    string_content = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert processor.apply_chat_template(string_content).endswith(
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"
    )

    encoded = processor.tokenizer.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = torch.tensor(encoded["assistant_masks"], dtype=torch.bool)
    ids = torch.tensor(encoded["input_ids"])
    assert processor.tokenizer.decode(ids[mask]) == "<think>top left</think>red<|im_end|>"


def test_llava_chat_template(tiny_models):
    processor = load_processor(str(tiny_models["llava"]))
    answer = {"role": "assistant", "content": [{"type": "text", "text": "<think>top left</think>red"}]}
    assert processor.apply_chat_template([*_messages(), answer]) == (
        "<s>Reason first.\n\nUSER: <image>\nWhat color is the circle?\nASSISTANT: <think>top left</think>red</s>\n"
    )
    assert processor.apply_chat_template(_messages(system=False), add_generation_prompt=True) == (
        "<s>USER: <image>\nWhat color is the circle?\nASSISTANT: "
    )


def test_builder_is_deterministic_and_keeps_the_global_rng(tmp_path):
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = build_tiny_vlm(tmp_path / "a", seed=7, texts=TEXTS)
    assert torch.equal(torch.rand(3), expected_next)
    b = build_tiny_vlm(tmp_path / "b", seed=7, texts=TEXTS)
    c = build_tiny_vlm(tmp_path / "c", seed=8, texts=TEXTS)
    weights_a, weights_b, weights_c = (load_file(path / "model.safetensors") for path in (a, b, c))
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert any(not torch.equal(weights_a[k], weights_c[k]) for k in weights_a)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_size_overrides_reach_the_config(tmp_path):
    path = build_tiny_vlm(tmp_path / "m", texts=TEXTS, hidden_size=64, num_layers=2)
    config = json.loads((path / "config.json").read_text())["text_config"]
    assert (config["hidden_size"], config["num_hidden_layers"]) == (64, 2)


def test_weights_start_at_the_hub_std_or_one_over_sqrt_width(tmp_path):
    def stds(path):
        weights = load_file(str(path / "model.safetensors"))
        return (
            weights["model.layers.0.self_attn.q_proj.weight"].std().item(),
            weights["visual.blocks.0.attn.qkv.weight"].std().item(),
        )

    text, vision = stds(build_tiny_vlm(tmp_path / "default", texts=TEXTS))
    assert text == pytest.approx(0.02, rel=0.05) and vision == pytest.approx(0.02, rel=0.05)
    text, vision = stds(main(["--output_dir", str(tmp_path / "width"), "--initializer_range", "width"]))
    assert text == pytest.approx(128**-0.5, rel=0.05) and vision == pytest.approx(64**-0.5, rel=0.05)
    text, vision = stds(main(["--output_dir", str(tmp_path / "std"), "--initializer_range", "0.05"]))
    assert text == pytest.approx(0.05, rel=0.05) and vision == pytest.approx(0.05, rel=0.05)
    for bad in (0.0, "wide"):
        with pytest.raises(ValueError, match="initializer_range must be a std > 0 or 'width'"):
            build_tiny_vlm(tmp_path / "bad", texts=TEXTS, initializer_range=bad)


def test_default_corpus_comes_from_data_tools(tmp_path):
    data_tools = pytest.importorskip("data_tools")
    tokenizer = load_processor(str(build_tiny_vlm(tmp_path / "m"))).tokenizer
    question = next(t for t in data_tools.corpus_texts() if t.endswith("?"))
    # Every word of the corpus became a single token: the question tokenizes to about one id per word.
    assert len(tokenizer.encode(question, add_special_tokens=False)) <= 2 * len(question.split())


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="--family 'gemma'"):
        build_tiny_vlm(tmp_path / "x", family="gemma", texts=TEXTS)
    with pytest.raises(ValueError, match="texts holds no text"):
        build_tiny_vlm(tmp_path / "x", texts=["", "  "])
    with pytest.raises(TypeError, match=r"texts\[1\] is a int"):
        build_tiny_vlm(tmp_path / "x", texts=["ok", 3])


def test_cli_builds_and_documents_its_flags(tmp_path, capsys):
    path = main(["--family", "llava", "--output_dir", str(tmp_path / "cli"), "--seed", "1"])
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--family", "--output_dir", "--seed", "qwen3_vl"))
