"""Boxes: the `bbox` column, boxes stated in answers, IoU and the IoU reward."""

import pytest
from PIL import Image

from rewards import (
    as_boxes,
    box_iou,
    coordinate_frame_for,
    find_answer_box,
    get_reward_funcs,
    iou_reward,
    iou_reward_for,
)


def test_bbox_column_forms():
    assert as_boxes("[0.1, 0.2, 0.3, 0.4]") == [(0.1, 0.2, 0.3, 0.4)]  # the public data's string
    assert as_boxes([0.1, 0.2, 0.3, 0.4]) == [(0.1, 0.2, 0.3, 0.4)]
    assert as_boxes([[0, 0, 1, 1], [0.5, 0.5, 0.6, 0.6]]) == [(0, 0, 1, 1), (0.5, 0.5, 0.6, 0.6)]
    assert as_boxes("[[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]]") == [(0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("[0.1, 0.2, 0.3]", "4 coordinates"),
        ([0.5, 0.1, 0.2, 0.4], "swapped corners"),  # x2 < x1
        ([0.1, 0.2, 0.3, 0.2], "zero area"),
        ([0, 0, 1.5, 1], "outside"),  # pixel coordinates where normalised ones are expected
        ([0, 0, float("nan"), 1], "NaN"),
        ([], "non-empty"),
        ("no box", "not a JSON list"),
        ([["a", "b", "c", "d"]], "not a list of numbers"),
    ],
)
def test_bad_bbox_values_name_the_row_and_field(value, reason):
    with pytest.raises(ValueError, match=reason) as error:
        as_boxes(value, row=7, field="bbox")
    assert "row 7, field 'bbox'" in str(error.value)


def test_box_iou_by_hand():
    # [0, 0, 0.5, 0.5] vs [0.25, 0.25, 0.75, 0.75]: intersection 0.25^2 = 1/16, union 1/4 + 1/4 - 1/16 = 7/16.
    assert box_iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == pytest.approx(1 / 7)
    assert box_iou((0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)) == 1.0
    assert box_iou((0, 0, 0.5, 0.5), (0.5, 0.5, 1, 1)) == 0.0  # touching corners only
    assert box_iou((0.2, 0.2, 0.2, 0.2), (0.2, 0.2, 0.2, 0.2)) == 0.0  # no area, no NaN


@pytest.mark.parametrize(
    ("text", "image_size", "expected"),
    [
        # Qwen2-VL grounding tokens: a 0-1000 grid
        ("<|box_start|>(100,200),(500,600)<|box_end|>", None, (0.1, 0.2, 0.5, 0.6)),
        ("<box>0.1, 0.2, 0.5, 0.6</box>", None, (0.1, 0.2, 0.5, 0.6)),
        ("<box>[10, 20, 50, 60]</box>", (100, 100), (0.1, 0.2, 0.5, 0.6)),
        ("The square is at [0.1, 0.2, 0.5, 0.6].", None, (0.1, 0.2, 0.5, 0.6)),
        ('{"bbox_2d": [20, 40, 100, 120]}', (200, 400), (0.1, 0.1, 0.5, 0.3)),  # pixels: x / width, y / height
        ("from (0.1, 0.2), (0.5, 0.6)", None, (0.1, 0.2, 0.5, 0.6)),
        ("(0.1,0.2) to (0.5,0.6)", None, (0.1, 0.2, 0.5, 0.6)),
        ("(0.1, 0.2, 0.5, 0.6)", None, (0.1, 0.2, 0.5, 0.6)),
        ("[0.5, 0.6, 0.1, 0.2]", None, (0.1, 0.2, 0.5, 0.6)),  # corners put in order
        ("[-10, 0, 50, 300]", (100, 200), (0.0, 0.0, 0.5, 1.0)),  # clipped to the image
        ("first (0.1, 0.1, 0.2, 0.2) then [0.3, 0.3, 0.4, 0.4]", None, (0.1, 0.1, 0.2, 0.2)),  # the earliest
        ("[10, 20, 50, 60]", None, None),  # pixels but no image size
        ("[0.1, 0.2, 0.5]", None, None),  # three numbers
        ("no box here", None, None),
    ],
)
def test_find_answer_box_notations(text, image_size, expected):
    found = find_answer_box(text, image_size)
    if expected is None:
        assert found is None
    else:
        assert found == pytest.approx(expected)


def test_coordinate_range_reads_qwen_boxes_whose_tokens_were_stripped():
    # Decoding with skip_special_tokens=True removes <|box_start|> / <|box_end|>, leaving "(100,200),(500,600)".
    assert find_answer_box("(100,200),(500,600)", coordinate_range=1000) == pytest.approx((0.1, 0.2, 0.5, 0.6))


def test_iou_reward():
    completions = [
        "<think>the square</think>[0.0, 0.0, 0.5, 0.5]",  # exact: 1
        "<think>the square</think>[0.25, 0.25, 0.75, 0.75]",  # 1/7, see test_box_iou_by_hand
        "<think>[0, 0, 0.5, 0.5]</think>I do not know",  # a box in the reasoning only: 0
        "<think>the square</think>[0, 0, 50, 50]",  # pixels of a 100 x 100 image: exact
        [{"role": "assistant", "content": "<think>x</think><box>0.5, 0.5, 1, 1</box>"}],  # matches the second box
    ]
    bbox = ["[0.0, 0.0, 0.5, 0.5]"] * 4 + [[[0, 0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0]]]
    image = [Image.new("RGB", (100, 100))] * 5
    rewards = iou_reward(None, completions, bbox=bbox, image=image)
    assert rewards == pytest.approx([1.0, 1 / 7, 0.0, 1.0, 1.0])


def test_iou_reward_reads_the_size_from_images_and_a_named_frame():
    images = [[Image.new("RGB", (200, 100))]]
    # [0, 0, 100, 50] px on a 200 x 100 image = [0, 0, 0.5, 0.5]
    assert iou_reward(None, ["<think>x</think>[0, 0, 100, 50]"], bbox=[[0, 0, 0.5, 0.5]], images=images) == [1.0]
    qwen_text = iou_reward_for("grid_1000")  # Qwen text decoded without its box tokens
    assert qwen_text(None, ["<think>x</think>(0,0),(500,500)"], bbox=[[0, 0, 0.5, 0.5]]) == [1.0]


def test_iou_reward_errors_name_the_column():
    with pytest.raises(ValueError, match="'bbox'"):
        iou_reward(None, ["<think>x</think>[0, 0, 1, 1]"])
    with pytest.raises(ValueError, match="row 1, field 'bbox'"):
        iou_reward(None, ["a", "b"], bbox=[[0, 0, 1, 1], [1, 1, 0, 0]])


def test_iou_of_a_box_far_smaller_than_a_pixel_with_itself_is_one():
    # Its area (1e-308 squared) underflows to 0 in absolute units; IoU is computed in the boxes' own scale.
    tiny = (0.0, 0.0, 1.1125369292536007e-308, 1.1125369292536007e-308)
    assert box_iou(tiny, tiny) == 1.0
    assert box_iou(tiny, (0.0, 0.0, 1.0, 1.0)) == 0.0


def _answer(box: str) -> list[str]:
    return [f"<think>x</think>{box}"]


@pytest.mark.parametrize(
    ("frame", "stated", "extra"),
    [
        ("normalized", "[0.25, 0.5, 0.5, 1.0]", {}),
        ("grid_1000", "[250, 500, 500, 1000]", {}),
        ("original_pixels", "[250, 250, 500, 500]", {}),  # pixels of the 1000 x 500 file
        ("input_pixels", "[112, 112, 224, 224]", {"image_input_size": [(448, 224)]}),  # of the 448 x 224 input
        ("auto", "[250, 250, 500, 500]", {}),  # more than 1: pixels of the file
        ("auto", "[0.25, 0.5, 0.5, 1.0]", {}),  # all in [0, 1]: normalised
    ],
)
def test_each_coordinate_frame_reads_its_numbers(frame, stated, extra):
    image = [Image.new("RGB", (1000, 500))]
    bbox = [[0.25, 0.5, 0.5, 1.0]]
    assert iou_reward(None, _answer(stated), bbox=bbox, image=image, coordinate_frame=frame, **extra) == [1.0]
    assert iou_reward_for(frame)(None, _answer(stated), bbox=bbox, image=image, **extra) == [1.0]


def test_explicit_frames_do_not_guess_from_the_numbers():
    image = [Image.new("RGB", (100, 100))]
    # "[0, 0, 1, 1]" in pixels is a 1-px box in the corner, not the whole image
    assert iou_reward(None, _answer("[0, 0, 1, 1]"), bbox=[[0, 0, 1, 1]], image=image) == [1.0]
    pixels = iou_reward(
        None, _answer("[0, 0, 1, 1]"), bbox=[[0, 0, 1, 1]], image=image, coordinate_frame="original_pixels"
    )
    assert pixels == [pytest.approx(1e-4)]
    # Qwen2-VL's box tokens are on the 0-1000 grid whatever the frame
    tokens = "<|box_start|>(0,0),(500,500)<|box_end|>"
    assert iou_reward_for("input_pixels")(
        None, _answer(tokens), bbox=[[0, 0, 0.5, 0.5]], image_input_size=[(28, 28)]
    ) == [1.0]


def test_the_pixel_frame_of_the_resized_input_is_not_the_file_size(tiny_model_dir):
    """The near-zero-IoU trap: Qwen2.5-VL answers in pixels of the image it was given, which the processor resized."""
    from vlm import load_processor, model_input_size

    processor = load_processor(str(tiny_model_dir), min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    picture = Image.new("RGB", (1000, 500))
    width, height = model_input_size(processor, picture)
    grid = processor.image_processor(images=[picture], return_tensors="np")["image_grid_thw"][0]
    assert (width, height) == (grid[2] * 14, grid[1] * 14) and width * height <= 28 * 28 * 64 and width < 1000
    box = f"[{width / 4:.0f}, {height / 2:.0f}, {width / 2:.0f}, {height:.0f}]"  # the true box in the input frame
    bbox = [[0.25, 0.5, 0.5, 1.0]]
    right = iou_reward_for("input_pixels")(
        None, _answer(box), bbox=bbox, image=[picture], image_input_size=[(width, height)]
    )
    wrong = iou_reward_for("original_pixels")(None, _answer(box), bbox=bbox, image=[picture])
    assert right == [pytest.approx(1.0, abs=0.02)] and wrong[0] < 0.1


def test_frames_by_family_and_by_name():
    assert coordinate_frame_for("model_family", "qwen2_5_vl") == "input_pixels"
    assert (
        coordinate_frame_for("model_family", "qwen2_vl")
        == coordinate_frame_for("model_family", "qwen3_vl")
        == "grid_1000"
    )
    assert coordinate_frame_for("model_family", "llava") == "normalized"
    assert coordinate_frame_for("grid_1000", "qwen2_5_vl") == "grid_1000"
    with pytest.raises(
        ValueError, match="--iou_coordinate_frame model_family: no known box frame for model_type 'idefics3'"
    ):
        coordinate_frame_for("model_family", "idefics3")
    with pytest.raises(ValueError, match="--iou_coordinate_frame 'pixels'"):
        coordinate_frame_for("pixels", "qwen2_5_vl")
    with pytest.raises(ValueError, match="needs the column 'image_input_size'"):
        iou_reward_for("input_pixels")(None, _answer("[0, 0, 1, 1]"), bbox=[[0, 0, 1, 1]])
    for frame, extra in (("input_pixels", {"image_input_size": [(28, 28), None]}), ("original_pixels", {})):
        with pytest.raises(ValueError, match="row 1, field 'image': no image"):  # a text-only row
            iou_reward_for(frame)(
                None,
                _answer("[0, 0, 1, 1]") * 2,
                bbox=[[0, 0, 1, 1]] * 2,
                image=[Image.new("RGB", (28, 28)), None],
                **extra,
            )
    with pytest.raises(ValueError, match="coordinate_frame 'pixels'"):
        iou_reward_for("pixels")
    funcs = get_reward_funcs(["format", "iou"], iou_coordinate_frame="input_pixels")
    assert funcs[1].__name__ == "iou_reward" and funcs[1].reads_image_input_size
