"""The trace of several images: a map per image at its own size, one strip of overlays per kind, named errors."""

import json

import numpy as np
import pytest
from PIL import Image
from trl import ModelConfig

from saliency.explain import TraceArguments, trace_image


@pytest.fixture
def image_paths(tmp_path):
    paths = []
    for i, size in enumerate([(120, 90), (60, 80), (100, 100)]):
        image = Image.new("RGB", size, (30, 30, 150))
        image.paste((220, 30, 30), (10, 10, 40, 40))
        paths.append(tmp_path / f"image{i}.png")
        image.save(paths[-1])
    return [str(p) for p in paths]


def test_several_images_get_a_map_each_and_a_strip_per_kind(tiny_model_dir, image_paths, tmp_path):
    out = tmp_path / "out"
    args = TraceArguments(
        images=image_paths,
        question="In which image is the red square?",
        output_dir=str(out),
        completion="<think>it is in the second image</think>2<|im_end|>",
        baselines=["attention"],
        boxes=["[0.1, 0.1, 0.5, 0.5]"],
        box_images=[1],
    )
    summary = trace_image(args, ModelConfig(model_name_or_path=str(tiny_model_dir)))
    assert json.loads((out / "trace.json").read_text()) == summary
    assert summary["has_map"] and summary["images"] == image_paths and summary["box_images"] == [1]
    assert list(summary["maps"]) == ["flow", "attention"]
    for kind, files in summary["maps"].items():
        maps = [np.load(out / name) for name in files["npy"]]
        assert [m.shape for m in maps] == [(90, 120), (80, 60), (100, 100)], kind
        assert all(m.dtype == np.float32 and (m >= 0).all() for m in maps)
        assert files["empty"] == (not any((m > 0).any() for m in maps))
        strip = Image.open(out / files["png"])
        assert strip.width > 3 * 100 and strip.height > 100  # three overlays scaled to one height, titled
    assert (out / summary["panels"]).is_file()


@pytest.mark.parametrize(
    "fields, match",
    [
        ({}, "give the image to ask about as --image, or several as --images"),
        ({"image": "a.png", "images": ["b.png"]}, "not both"),
        ({"images": ["a.png", "b.png"], "boxes": ["[0, 0, 1, 1]"]}, "--box_images: with --images, give the image"),
        ({"images": ["a.png", "b.png"], "boxes": ["[0, 0, 1, 1]"], "box_images": [2]}, r"--box_images \[2\]"),
        ({"image": "a.png", "boxes": ["[0, 0, 1, 1]"], "box_images": [0]}, "with --image, leave it out"),
    ],
)
def test_bad_image_flags_are_named(fields, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        TraceArguments(question="q", output_dir=str(tmp_path), **fields)
