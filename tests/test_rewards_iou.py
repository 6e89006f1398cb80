"""Boxes: the `bbox` column, boxes stated in answers, IoU and the IoU reward."""

import functools

import pytest
from PIL import Image

from rewards import as_boxes, box_iou, find_answer_box, iou_reward


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


def test_iou_reward_reads_the_size_from_images_and_accepts_a_coordinate_range():
    images = [[Image.new("RGB", (200, 100))]]
    # [0, 0, 100, 50] px on a 200 x 100 image = [0, 0, 0.5, 0.5]
    assert iou_reward(None, ["<think>x</think>[0, 0, 100, 50]"], bbox=[[0, 0, 0.5, 0.5]], images=images) == [1.0]
    qwen_text = functools.partial(iou_reward, coordinate_range=1000)
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
