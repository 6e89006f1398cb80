"""The synthetic ``multi`` and ``clip`` splits, saved to disk, read back through the GRPO and evaluation loaders."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
from PIL import Image

from data_tools import BadRowsError, validate_rows
from data_tools.loaders import saliency_r1_rows
from data_tools.synthetic import CLIP_FRAMES, COLORS, SyntheticConfig, generate_multi_split
from data_tools.synthetic import main as synthetic_main
from evaluation.eval_config import InferenceArguments
from evaluation.evaluate import load_rows
from rl.grpo_data import load_grpo_dataset

SIZE = 64


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Two single-image rl rows, five rows of several images and three clips, saved as the CLI saves them."""
    out = tmp_path_factory.mktemp("multi_data") / "synthetic"
    synthetic_main(
        [
            *("--output_dir", str(out), "--num_sft", "0", "--num_rl", "2", "--num_eval", "2"),
            *("--num_multi_image", "5", "--num_clip", "3", "--image_size", str(SIZE)),
        ]
    )
    return str(out)


def _pixels(image: dict | Image.Image) -> np.ndarray:
    if isinstance(image, dict):
        image = Image.open(io.BytesIO(image["bytes"]))
    return np.asarray(image.convert("RGB"))


def _box_centre(pixels: np.ndarray, box: list[float]) -> tuple[int, int, int]:
    height, width = pixels.shape[:2]
    x = int((box[0] + box[2]) / 2 * width)
    y = int((box[1] + box[3]) / 2 * height)
    return tuple(int(v) for v in pixels[y, x])


def _generated(split: str, count: int) -> datasets.Dataset:
    return generate_multi_split(split, count, seed=0, config=SyntheticConfig(width=SIZE, height=SIZE))


def test_grpo_loader_reads_rows_of_several_images_with_each_box_on_the_image_that_holds_the_shape(saved):
    rows = load_grpo_dataset(saved, split="multi")
    reference = _generated("multi", 5)
    assert len(rows) == 5
    assert rows["question_id"] == reference["question_id"]
    red = COLORS[SyntheticConfig().colors[0]]
    for row, expected in zip(rows, reference):
        assert len(row["images"]) == len(expected["images"]) in (2, 3)
        assert row["bbox_image"] == expected["bbox_image"] == [int(row["solution"]) - 1]
        assert row["bbox_frame"] is None
        np.testing.assert_allclose(row["bbox"], expected["bbox"])
        target = row["bbox_image"][0]
        for index, image in enumerate(row["images"]):
            colour = _box_centre(_pixels(image), row["bbox"][0])
            assert (colour == red) == (index == target), (row["question_id"], index)
        user = row["prompt"][-1]["content"]
        assert [block["type"] for block in user].count("image") == len(row["images"])


def test_grpo_loader_reads_clips_as_frames_with_each_box_on_its_frame(saved):
    rows = load_grpo_dataset(saved, split="clip")
    assert len(rows) == 3
    for row in rows:
        assert len(row["images"]) == CLIP_FRAMES
        assert row["bbox_frame"] == list(range(CLIP_FRAMES))
        assert row["bbox_image"] is None
        colour = COLORS[row["solution"]]
        assert len({tuple(box) for box in row["bbox"]}) == CLIP_FRAMES  # the shape moves: a box per frame
        for frame, box in zip(row["images"], row["bbox"]):
            assert _box_centre(_pixels(frame), box) == colour
        # The mover is not where frame 0's box puts it on the last frame.
        assert _box_centre(_pixels(row["images"][-1]), row["bbox"][0]) != colour


def test_evaluation_loader_reads_the_same_rows(saved):
    for split in ("multi", "clip"):
        rows, report = load_rows(InferenceArguments(dataset_name=saved, dataset_test_split=split, max_eval_samples=2))
        grpo = load_grpo_dataset(saved, split=split).select(range(2))
        assert report.num_kept == report.num_rows == (5 if split == "multi" else 3)
        for name in ("question_id", "bbox", "bbox_image", "bbox_frame"):
            assert rows[name] == grpo[name], (split, name)


def test_single_image_splits_load_as_before(saved):
    rows = load_grpo_dataset(saved, split="rl")
    assert "image" in rows.column_names and "images" not in rows.column_names
    assert len(rows) == 2


def test_a_clip_whose_boxes_name_both_images_and_frames_is_rejected_by_field(saved):
    record = dict(datasets.load_from_disk(saved)["clip"].cast_column("images", datasets.List(datasets.Image(False)))[0])
    record["bbox_image"] = [0] * CLIP_FRAMES
    with pytest.raises(BadRowsError, match="bbox_frame"):
        validate_rows(saliency_r1_rows([record]), "rl")
