"""The tracer on a saved tiny checkpoint, fed by its real processor and tokenizer."""

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from saliency import SaliencyTracer, SpecialTokens


@pytest.mark.slow
def test_processor_inputs_give_maps_at_the_original_image_size(tmp_path):
    from vlm import build_tiny_vlm
    from vlm.loading import load_processor

    path = build_tiny_vlm(tmp_path / "tiny", "qwen2_5_vl")
    processor = load_processor(str(path))
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tokens = SpecialTokens.from_tokenizer(processor)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the square?"}]}
    ]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[text], images=[Image.new("RGB", (120, 90), "red")], return_tensors="pt")
    prompt_ids, prompt_mask = inputs.pop("input_ids"), inputs.pop("attention_mask")
    completion = processor.tokenizer(
        "<think>the square is red</think>red<|im_end|>", add_special_tokens=False, return_tensors="pt"
    ).input_ids
    tracer = SaliencyTracer(model, tokens)

    scored = tracer.score(prompt_ids, completion, prompt_mask, image_sizes=[[(90, 120)]], **inputs)[0]
    assert scored.has_map, scored.reason
    merge = model.config.vision_config.spatial_merge_size
    _, rows, cols = inputs["image_grid_thw"][0].tolist()
    assert scored.images[0].grid == (rows // merge, cols // merge)
    heatmap = scored.answer_map("flow")[0].upsampled()
    assert heatmap.shape == (90, 120) and (heatmap >= 0).all()

    generated = tracer.generate(prompt_ids, attention_mask=prompt_mask, max_new_tokens=4, do_sample=False, **inputs)
    assert generated.sequences.shape[0] == 1 and len(generated.maps) == 1
    assert torch.equal(generated.sequences[0, : prompt_ids.shape[1]], prompt_ids[0])
