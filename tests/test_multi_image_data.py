"""Rows of several images and short clips: validation with named outcomes, the mixed layout, synthetic rows."""

import hashlib
import io

import numpy as np
import pytest
from datasets import load_from_disk
from PIL import Image

from data_tools import validate_rows
from data_tools.schema import MULTI_EVAL_FEATURES, MULTI_RL_FEATURES, MULTI_SFT_FEATURES, RL_FEATURES
from data_tools.synthetic import (
    CLIP_FRAMES,
    COLORS,
    SyntheticConfig,
    generate_multi_split,
    main,
    make_clip_example,
    make_multi_image_example,
)
from data_tools.validation import rows_to_dataset


def _png(size, colour=(10, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def _row(**overrides):
    row = {
        "images": [_png((40, 20)), _png((30, 30))],
        "problem": "Which image shows it?",
        "solution": "2",
        "bbox": [[4, 4, 20, 12], [3, 3, 15, 30]],
        "bbox_format": "xyxy_px",
        "bbox_image": [0, 1],
        "dataset": "toy",
        "question_id": "q0",
    }
    row.update(overrides)
    return row


def _rejected(row, field, match):
    kept, report = validate_rows([row], "rl", on_bad_row="skip")
    assert kept == []
    assert [(i.field, i.row_id) for i in report.rejected] == [(field, "q0")], report.rejected
    assert match in report.rejected[0].reason, report.rejected[0].reason


def test_pixel_boxes_are_normalised_by_the_size_of_the_image_they_lie_on():
    (kept,), report = validate_rows([_row()], "rl")
    assert not report.issues
    assert kept["bbox"] == [[0.1, 0.2, 0.5, 0.6], [0.1, 0.1, 0.5, 1.0]]
    assert kept["bbox_image"] == [0, 1] and kept["bbox_frame"] is None
    assert len(kept["images"]) == 2 and "image" not in kept


def test_a_clip_places_its_boxes_on_frames_of_one_size():
    frames = [_png((32, 32), (i, i, i)) for i in range(3)]
    row = _row(images=None, video=frames, bbox=[[0, 0, 16, 16]] * 3, bbox_image=None, bbox_frame=[0, 1, 2])
    (kept,), _ = validate_rows([row], "rl")
    assert kept["bbox_frame"] == [0, 1, 2] and kept["bbox_image"] is None
    assert [f["bytes"] for f in kept["images"]] == frames
    assert kept["bbox"] == [[0.0, 0.0, 0.5, 0.5]] * 3


@pytest.mark.parametrize(
    "overrides, field, match",
    [
        (
            {"bbox_image": None},
            "bbox_image",
            "missing field: a row of several images says which image each box lies on",
        ),
        ({"bbox_image": [0]}, "bbox_image", "has 1 entries for 2 boxes"),
        ({"bbox_image": [0, 2]}, "bbox_image", "indices [2] lie outside the row's 2 images"),
        ({"bbox_image": [0, "1"]}, "bbox_image", "must be a list of integers"),
        ({"bbox_frame": [0, 1]}, "bbox_frame", "a row of images places its boxes with bbox_image, not bbox_frame"),
        ({"images": [_png((40, 20)), b"not an image"]}, "images[1]", "unreadable image bytes"),
        ({"images": [_png((40, 20)), _png((30, 8))]}, "images[1]", "a side under 14 px"),
        ({"bbox": [[4, 4, 20, 12], [3, 3, 15, 31]]}, "bbox", "lies outside the 30x30 image"),
        (
            {
                "images": None,
                "video": [_png((20, 20)), _png((24, 20))],
                "bbox": [[4, 4, 20, 12], [3, 3, 15, 20]],
                "bbox_image": None,
                "bbox_frame": [0, 1],
            },
            "video",
            "the frames differ in size",
        ),
        ({"video": [_png((20, 20))]}, "video", "a row holds either images or a video (its frames), not both"),
        ({"images": []}, "images", "expected a non-empty list of images"),
    ],
)
def test_bad_rows_of_several_images_are_named(overrides, field, match):
    _rejected(_row(**overrides), field, match)


def test_a_one_image_list_is_a_single_image_row_as_before():
    row = _row(images=[_png((40, 20))], bbox=[[4, 4, 20, 12]], bbox_image=None)
    (kept,), _ = validate_rows([row], "rl")
    assert set(kept) == set(RL_FEATURES) and kept["bbox"] == [[0.1, 0.2, 0.5, 0.6]]
    assert rows_to_dataset([kept], "rl").features == RL_FEATURES


def test_a_split_with_several_images_lays_single_rows_out_as_one_image_lists():
    single = _row(images=[_png((40, 20))], bbox=[[4, 4, 20, 12], [0, 0, 40, 20]], bbox_image=None, question_id="q1")
    kept, _ = validate_rows([_row(reasoning="r"), {**single, "reasoning": "r"}], "eval")
    dataset = rows_to_dataset(kept, "eval")
    assert dataset.features == MULTI_EVAL_FEATURES
    assert [len(row["images"]) for row in dataset] == [2, 1]
    assert dataset[1]["bbox_image"] == [0, 0] and dataset[1]["bbox_frame"] is None


def _colour_mask(image: bytes | np.ndarray, colour: str) -> np.ndarray:
    pixels = np.asarray(Image.open(io.BytesIO(image))) if isinstance(image, bytes) else image
    return (pixels == COLORS[colour]).all(-1)


def _box_px(box, config):
    return [round(box[0] * config.width), round(box[1] * config.height), round(box[2] * config.width),
            round(box[3] * config.height)]  # fmt: skip


@pytest.mark.parametrize("index", range(12))
def test_the_asked_shape_is_in_the_answered_image_only_and_its_box_is_exact(index):
    config = SyntheticConfig()
    row = make_multi_image_example(5, index, config)
    target = int(row["solution"]) - 1
    assert row["bbox_image"] == [target] and len(row["images"]) == 2 + index % 2
    assert f"the {config.colors[0]} {config.shapes[0]}" in row["problem"]
    x1, y1, x2, y2 = _box_px(row["bbox"][0], config)
    drawn = _colour_mask(row["images"][target]["bytes"], config.colors[0])
    inside = drawn[y1:y2, x1:x2]
    # The box is tight around the target's pixels: every edge row and column of it holds one.
    assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
    (kept,), report = validate_rows([dict(row)], "rl")
    assert not report.issues and kept["bbox"] == row["bbox"] and kept["bbox_image"] == [target]


@pytest.mark.parametrize("index", range(12))
def test_the_moving_shape_has_an_exact_box_on_every_frame_and_the_rest_stays(index):
    config = SyntheticConfig()
    row = make_clip_example(5, index, config)
    assert len(row["images"]) == CLIP_FRAMES and row["bbox_frame"] == list(range(CLIP_FRAMES))
    frames = [np.asarray(Image.open(io.BytesIO(f["bytes"]))) for f in row["images"]]
    boxes = [_box_px(b, config) for b in row["bbox"]]
    assert len({tuple(b) for b in boxes}) == CLIP_FRAMES  # it moves every frame
    for frame, (x1, y1, x2, y2) in zip(frames, boxes):
        mover = _colour_mask(frame, row["solution"])
        assert mover[y1:y2, x1:x2].any() and not mover.sum() - mover[y1:y2, x1:x2].sum()
    # Outside the mover's boxes, the frames are the same picture.
    outside = np.ones(frames[0].shape[:2], dtype=bool)
    for x1, y1, x2, y2 in boxes:
        outside[y1:y2, x1:x2] = False
    assert all((frame[outside] == frames[0][outside]).all() for frame in frames)
    (kept,), report = validate_rows([{**row, "video": row["images"], "images": None}], "rl")
    assert not report.issues and kept["bbox"] == row["bbox"]


def test_multi_and_clip_splits_come_only_when_asked_and_leave_the_others_byte_identical(tmp_path):
    base = ["--num_sft", "3", "--num_rl", "3", "--num_eval", "2", "--seed", "4"]
    main(["--output_dir", str(tmp_path / "plain"), *base])
    main(
        ["--output_dir", str(tmp_path / "mixed"), *base, "--num_multi_image", "3", "--num_clip", "2",
         "--num_multi_image_sft", "2", "--num_clip_sft", "2"]
    )  # fmt: skip
    plain, mixed = load_from_disk(str(tmp_path / "plain")), load_from_disk(str(tmp_path / "mixed"))
    assert set(plain) == {"sft", "rl", "eval"}
    assert set(mixed) == {"sft", "rl", "eval", "multi", "clip", "multi_sft", "clip_sft"}
    for name in plain:
        digests = [
            hashlib.sha256((tmp_path / d / name / "data-00000-of-00001.arrow").read_bytes()).digest()
            for d in ("plain", "mixed")
        ]
        assert digests[0] == digests[1]
    assert mixed["multi"].features == MULTI_RL_FEATURES and len(mixed["clip"]) == 2
    again = generate_multi_split("clip", 2, seed=4)
    assert again.data.table.equals(mixed["clip"].data.table)


@pytest.mark.parametrize("split", ["multi_sft", "clip_sft"])
def test_sft_rows_of_several_images_reason_about_the_image_their_boxes_lie_on(split):
    sft = generate_multi_split(split, 6, seed=4)
    rl = generate_multi_split(split.removesuffix("_sft"), 6, seed=4)
    assert sft.features == MULTI_SFT_FEATURES
    for row, other in zip(sft, rl):
        _, user, assistant = row["messages"]
        assert [block["type"] for block in user["content"]] == ["image"] * len(row["images"]) + ["text"]
        reasoning, answer = assistant["content"][0]["text"].removeprefix("<think>").split("</think>")
        assert len(row["bbox"]) == len(row["bbox_image"]) and set(row["bbox_image"]) <= set(range(len(row["images"])))
        if split == "multi_sft":
            (on,) = row["bbox_image"]
            assert answer == str(on + 1) and f"in image {answer}," in reasoning
        else:
            assert row["bbox_image"] == list(range(CLIP_FRAMES)) and reasoning.endswith(f"It is {answer}.")
        assert row["images"] != other["images"]  # its own random stream: other scenes than the GRPO split
